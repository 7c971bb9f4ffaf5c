"""Stand-ins for a socket transport and a server, for driving connections by hand."""

from __future__ import annotations

from collections import Counter
from typing import Any

from statemachine_server import Connection, Kernel, LineFilter
from statemachine_server.limits import Limits


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.eof = False
        self.reading = True
        self.buffered = 0  # what get_write_buffer_size reports

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    @property
    def shut(self) -> bool:
        """Our side is done: output shut (lingering close) or socket closed."""
        return self.closed or self.eof

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else None

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeServer:
    """What a Connection needs from its server."""

    def __init__(self, kernel: Kernel, **handlers: Any) -> None:
        self.kernel = kernel
        self.handlers = handlers
        self.dispatch = Connection.dispatch(handlers)
        self.filter_factory = lambda: LineFilter(max_length=16)
        self.gone: list[int] = []
        self.limits = Limits()
        self.counts: Counter[str] = Counter()

    def arrived(self, conn: Connection) -> None:
        conn.admit()

    def released(self, conn: Connection) -> None:
        self.gone.append(conn.id)
