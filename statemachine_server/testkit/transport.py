"""An in-memory connection: a server's connection on a transport made of two buffers.

Twisted's ``StringTransport`` is the precedent: the connection under test is the
real one (its lifecycle, its filter, its flow control), and only the socket is
replaced, so a test needs no port, no system call and no waiting on the network.
:class:`MemoryTransport` is what :class:`~statemachine_server.net.connection.Connection`
uses of an asyncio transport; the client's side of it is two calls, :meth:`feed`
(bytes the client sends) and :meth:`feed_eof` (the client closes its side), and
what the server wrote accumulates in :attr:`MemoryTransport.received`.

asyncio's own order is kept where a connection could tell the difference: the
server's ``close()`` reaches ``connection_lost`` on a later loop turn, never
inside the call, and bytes the client sends while reading is paused wait until
it resumes (as they would in the socket's buffers).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["MemoryTransport"]

# Peer ports for in-memory clients: shown as {remote_port}, never bound.
_PORTS = itertools.count(40000)


class MemoryTransport(asyncio.Transport):
    """The server's side of one in-memory connection.

    Args:
        loop: the loop the server's kernel runs on (``connection_lost`` is called
            on it, a turn after ``close()``, as asyncio's transports do).
        on_change: called whenever the client has something new to look at
            (bytes, end of output, the close): wakes a waiting ``expect``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]):
        super().__init__()
        self.loop = loop
        self.on_change = on_change
        self.protocol: asyncio.Protocol | None = None
        #: What the server wrote, not yet taken by the client.
        self.received = bytearray()
        #: The server shut its output (``write_eof``) or closed.
        self.eof = False
        #: The server closed (or aborted) the connection.
        self.closed = False
        #: Whether the server is reading (flow control pauses it).
        self.reading = True
        #: Bytes the client sent while reading was paused, in order.
        self.held: list[bytes] = []
        self.held_eof = False
        #: Callbacks scheduled and not yet run (the harness waits for none left).
        self.scheduled = 0
        self.peer = ("127.0.0.1", next(_PORTS))

    # -- the client's side ---------------------------------------------------------

    def connect(self, protocol: asyncio.Protocol) -> None:
        """Hand the connection its transport, as a listening socket's accept would."""
        self.protocol = protocol
        protocol.connection_made(self)

    def feed(self, data: bytes) -> None:
        """Bytes from the client: delivered now, or once reading resumes."""
        if self.protocol is None or self.closed or not data:
            return
        if not self.reading or self.held:
            self.held.append(bytes(data))
            return
        self.protocol.data_received(data)

    def feed_eof(self) -> None:
        """The client closed its side (end of input, after what it sent)."""
        if self.protocol is None or self.closed:
            return
        if not self.reading or self.held:
            self.held_eof = True
            return
        self.protocol.eof_received()

    # -- asyncio.Transport: what the connection calls --------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed or self.eof:
            return  # asyncio drops writes after close; the client is gone anyway
        self.received += data
        self.on_change()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True
        self.on_change()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = self.eof = True
        self.on_change()
        self._soon(self._lost)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            return ("127.0.0.1", 0)
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # nothing is ever buffered: the client's buffer is unbounded

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            if self.held or self.held_eof:
                # On a later turn, as a socket's next read would be.
                self._soon(self._release)

    def is_reading(self) -> bool:
        return self.reading

    # -- internals -----------------------------------------------------------------------

    def _soon(self, callback: Callable[[], None]) -> None:
        self.scheduled += 1

        def run() -> None:
            self.scheduled -= 1
            callback()

        self.loop.call_soon(run)

    def _lost(self) -> None:
        if self.protocol is not None:
            self.protocol.connection_lost(None)
        self.on_change()

    def _release(self) -> None:
        held, self.held = self.held, []
        eof, self.held_eof = self.held_eof, False
        for k, data in enumerate(held):
            if not self.reading:  # paused again on the way: keep the rest
                self.held[:0] = held[k:]
                self.held_eof = eof
                return
            self.feed(data)
        if eof:
            self.feed_eof()
