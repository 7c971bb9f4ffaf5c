"""A test client of a served spec: send records, expect records, expect the close.

One client is one connection, over an in-memory transport (:mod:`.transport`)
or a real socket on 127.0.0.1. Records are framed by the spec's own filter
(:mod:`.codec`). What arrives is kept in order; :meth:`AsyncClient.expect`
takes the next record and compares it (:mod:`.expect`), waiting for it at most
``timeout`` seconds. In memory with a virtual clock it does not wait at all
once the server is idle: nothing more can come until the test sends something
or moves the clock, so a wrong expectation fails at once rather than after
the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

from ..core.kernel import Kernel
from ..language import Spec
from ..net.server import TCPServer
from .codec import Codec, show
from .expect import ExpectationFailed, describe, matches
from .observe import Observer, Point
from .transport import MemoryTransport

__all__ = ["AsyncClient", "Expected", "Host"]

#: What :meth:`AsyncClient.expect` takes: text, a compiled regex, or a decoded
#: value (a dict or list for JSON and MessagePack records).
Expected = Any


class Host(Protocol):
    """What a client needs of the served spec (an
    :class:`~.harness.AsyncSpecServer`, which makes its clients)."""

    spec: Spec
    kernel: Kernel
    timeout: float
    observer: Observer | None

    @property
    def transport(self) -> str: ...

    @property
    def server(self) -> TCPServer: ...

    @property
    def can_be_quiet(self) -> bool: ...

    async def quiet(self) -> bool: ...


class AsyncClient:
    """One connection to a served spec, for async tests (see :class:`~.sync.Client`
    for sync ones). Made by :meth:`AsyncSpecServer.connect`.

    Attributes:
        name: the name the test gave it (shown in failures).
        received: every record received so far, in order (taken or not).
    """

    def __init__(self, server: Host, name: str):
        self.server = server
        self.name = name
        self.codec = Codec(server.spec.server.filter)
        self.received: list[Any] = []
        self._inbox: deque[tuple[Any, Point | None]] = deque()
        self._taken: list[tuple[Any, Point | None]] = []
        self._eof = False  # the server shut its output, or closed
        self._closed = False  # this client closed
        self._changed = asyncio.Event()
        self._memory: MemoryTransport | None = None
        self._session: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None

    # -- connecting ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (done by :meth:`AsyncSpecServer.connect`)."""
        server = self.server
        if server.transport == "memory":
            self._memory = MemoryTransport(asyncio.get_running_loop(), self._memory_changed)
            # The server's own connection class, as its listening socket would make it.
            self._session = server.server.connection_class(server.server)
            self._memory.connect(self._session)
        else:
            async with asyncio.timeout(server.timeout):
                reader, self._writer = await asyncio.open_connection(
                    "127.0.0.1", server.server.port, limit=1 << 24
                )
            self._pump = asyncio.get_running_loop().create_task(self._read(reader))

    @property
    def session(self) -> Any:
        """The server's session (a ``Connection``) for this client, if it is known:
        its ``heap``, ``protocol_state``, ``state``."""
        if self._session is None and self._writer is not None:
            port = self._writer.get_extra_info("sockname")[1]
            for session in self.server.kernel.sessions():
                if getattr(session, "remote_port", None) == port:
                    self._session = session
        return self._session

    @property
    def pending_callbacks(self) -> int:
        """Callbacks its in-memory transport has scheduled and the loop not yet run."""
        return 0 if self._memory is None else self._memory.scheduled

    @property
    def hung_up(self) -> bool:
        """Whether this client closed its connection (:meth:`close`)."""
        return self._closed

    async def more(self, seen: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for more than ``seen`` records received
        in all, or the close; whether either came."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) <= seen and not self._eof:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return True

    @property
    def ended(self) -> bool:
        """Whether the server closed the connection (or shut its output), records
        not taken yet or not."""
        return self._eof

    @property
    def closed(self) -> bool:
        """Whether the server closed the connection (or shut its output)."""
        return self._eof and not self._inbox

    # -- what a test does -----------------------------------------------------------------

    async def send(self, *records: Any) -> None:
        """Send records (text, bytes as they are, or a value for JSON and MessagePack)."""
        if self._closed:
            raise RuntimeError(f"{self.name} has closed its connection: it cannot send")
        for record in records:
            data = self.codec.encode(record)
            if self._memory is not None:
                self._memory.feed(data)
            elif self._writer is not None:
                self._writer.write(data)
        if self._writer is not None:
            async with asyncio.timeout(self.server.timeout):
                await self._writer.drain()

    async def expect(
        self, expected: Expected, timeout: float | None = None, *, where: str = ""
    ) -> Any:
        """Take the next record; fail unless it is what ``expected`` describes.

        Args:
            expected: text (the whole record), a compiled regex (searched in it), a
                value a JSON or MessagePack record equals; for a text server a list
                expects several records in turn.
            timeout: seconds to wait for it (the server's default otherwise).
            where: where the test wrote this (``FILE:LINE``), for the failure.

        Returns:
            The record (a list of them for a list).

        Raises:
            ExpectationFailed: another record came, or none did.
        """
        if isinstance(expected, list) and not self.codec.structured:
            return [await self.expect(e, timeout, where=where) for e in expected]
        record, point = await self._next(expected, timeout, where)
        if not matches(expected, record):
            raise self._failure(expected, show(record), point, where, took=True)
        return record

    async def expect_closed(self, timeout: float | None = None, *, where: str = "") -> None:
        """Fail unless the server closes the connection (or shuts its output) next,
        with no record before that."""
        wait = self.server.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + wait
        while not self._inbox and not self._eof:
            if not await self._wait(deadline):
                still = (
                    "still open (the server is idle)"
                    if self._quiet_now
                    else (f"still open after {wait:g} s")
                )
                raise self._failure("the server closing the connection", f"({still})", None, where)
        if self._inbox:
            record, point = self._inbox.popleft()
            self._taken.append((record, point))
            raise self._failure(
                "the server closing the connection", show(record), point, where, took=True
            )

    async def send_eof(self) -> None:
        """Close this client's sending side (the server sees the end of input) and
        go on reading: what the server still sends can be expected."""
        if self._memory is not None:
            self._memory.feed_eof()
        elif self._writer is not None and self._writer.can_write_eof():
            self._writer.write_eof()

    async def close(self) -> None:
        """Hang up: the server sees the end of input; nothing more is read."""
        if self._closed:
            return
        self._closed = True
        if self._memory is not None:
            self._memory.feed_eof()
        elif self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.server.timeout):
                    await self._writer.wait_closed()
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump

    # -- receiving --------------------------------------------------------------------------

    def _memory_changed(self) -> None:
        # Called by the transport as the server writes: during the tick that
        # wrote it, so the observer still knows which rule ran.
        memory = self._memory
        assert memory is not None
        if memory.received:
            data = bytes(memory.received)
            memory.received.clear()
            observer = self.server.observer
            point = None if observer is None else observer.answered(self._session_id())
            self._deliver(data, point)
        if memory.eof:
            self._eof = True
        self._changed.set()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(1 << 16):
                observer = self.server.observer
                sid = self._session_id()
                self._deliver(
                    data, None if observer is None or sid is None else observer.last_rule.get(sid)
                )
                self._changed.set()
        except OSError:
            pass  # a reset: the connection is over, as with an EOF
        self._eof = True
        self._changed.set()

    def _session_id(self) -> int | None:
        session = self.session
        return None if session is None else int(session.id)

    def _deliver(self, data: bytes, point: Point | None) -> None:
        for record in self.codec.decode(data):
            self.received.append(record)
            self._inbox.append((record, point))

    _quiet_now = False

    async def _wait(self, deadline: float) -> bool:
        """Wait for something new; False if nothing came and nothing will (an
        idle server in memory with a virtual clock) or the deadline passed."""
        loop = asyncio.get_running_loop()
        # Cleared before the loop runs: what arrives from now on sets it.
        self._changed.clear()
        self._quiet_now = await self.server.quiet()
        if self._inbox or self._eof:
            return True
        if self._quiet_now:
            return False
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        # Short waits where the server can tell it went idle; one wait otherwise.
        step = min(remaining, 0.05) if self.server.can_be_quiet else remaining
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(step):
                await self._changed.wait()
        return True

    async def _next(
        self, expected: Expected, timeout: float | None, where: str
    ) -> tuple[Any, Point | None]:
        wait = self.server.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + wait
        while not self._inbox:
            if self._eof:
                raise self._failure(expected, "(the server closed the connection)", None, where)
            if self._closed:
                raise self._failure(
                    expected, f"(nothing: {self.name} closed its connection)", None, where
                )
            if not await self._wait(deadline) and not self._inbox:
                if self._quiet_now:
                    raise self._failure(
                        expected,
                        "(nothing: the server is idle)",
                        None,
                        where,
                        hint=self._idle_hint(),
                    )
                if asyncio.get_running_loop().time() >= deadline:
                    raise self._failure(expected, f"(nothing within {wait:g} s)", None, where)
        entry = self._inbox.popleft()
        self._taken.append(entry)
        return entry

    def _idle_hint(self) -> str:
        kernel = self.server.kernel
        due = [
            d
            for s in kernel.sessions()
            for t in s.timer_ids or ()
            if (d := kernel.timer_due(t)) is not None
        ]
        later = f" (the next timer is due in {min(due) - kernel.time():g} s)" if due else ""
        return f"nothing more happens until the test sends something or moves the clock{later}"

    def _failure(
        self,
        expected: Expected,
        received: str,
        point: Point | None,
        where: str,
        hint: str = "",
        took: bool = False,
    ) -> ExpectationFailed:
        shown = expected if isinstance(expected, str) else show(expected)
        session = self.session
        state = None if session is None else getattr(session, "protocol_state", None)
        # The record that failed is the last one taken, unless none came.
        history = self._taken[:-1] if took else self._taken
        message = describe(
            self.name,
            expected=shown,
            received=received,
            history=history,
            answered=point,
            state=state,
            hint=hint,
            where=where,
        )
        waiting = list(self._inbox)[:3]
        if waiting:
            message += "\n  then, not taken yet:\n" + "\n".join(
                f"    {show(record)}" for record, _ in waiting
            )
        return ExpectationFailed(message)
