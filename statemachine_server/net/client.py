"""The TCP client component (POE::Component::Client::TCP's role).

A :class:`TCPClient` is a session that keeps one connection to a server: it
connects when the kernel starts, and each connection it makes is a
:class:`~statemachine_server.net.connection.Connection` session, the same machine a
server's clients get (filter, lifecycle, output batching, postponing, limits).
Handlers are the server's: ``on_input(session, record)`` for what the server
sends, ``session.put(...)`` to send; plus ``on_connect_error(client, exc)`` when
an attempt fails.

Reconnecting: when an attempt fails or the connection ends, the client tries again
after a delay that grows exponentially, is capped, and has random jitter so that
many clients cut off together do not come back in lockstep (gRPC's connection
backoff, whose defaults :class:`Backoff` takes). A connection that was made resets
the delay. :meth:`TCPClient.close` (or a kernel shutdown) stops for good, cancelling
an attempt or a wait in progress. ``reconnect=None`` makes one attempt only.

The heap is the client's, shared by its successive connections (as POE's one
session heap), so state can survive a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl as _ssl
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..core.kernel import Handler, Kernel, Session
from ..core.lifecycle import CLOSED_EVENT, CONNECTED, ERROR, FLUSHED, INPUT, OUTPUT_HIGH, OUTPUT_LOW
from ..filters import Filter, LineFilter
from ..limits import Limits
from .connection import Connection
from .tls import AfterHandshake

__all__ = ["Backoff", "ClientConnection", "TCPClient"]

log = logging.getLogger("statemachine_server")

#: A client waits for its server: no first-byte or idle timeout by default.
CLIENT_LIMITS = Limits(first_byte_timeout=None, idle_timeout=None)

_RETRY = "<retry>"
_CONNECT_ERROR = "<connect error>"


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long to wait before each reconnection attempt.

    Attempt ``n`` (0 for the first after a failure or a disconnect) waits
    ``min(maximum, initial * factor ** n)`` seconds, less a random fraction of up
    to ``jitter`` of it. The defaults are gRPC's connection backoff (1 s, x1.6,
    120 s, 20 %).

    Attributes:
        initial: the first delay, in seconds.
        factor: how much each failed attempt multiplies the delay by.
        maximum: the longest delay, in seconds.
        jitter: the fraction of each delay drawn at random (0: none).
        attempts: failed attempts in a row after which the client gives up (its
            session ends); None: never give up.
    """

    initial: Annotated[float, Meta(gt=0)] = 1.0
    factor: Annotated[float, Meta(ge=1)] = 1.6
    maximum: Annotated[float, Meta(gt=0)] = 120.0
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.2
    attempts: Annotated[int, Meta(ge=1)] | None = None

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt number ``attempt`` (from 0)."""
        # The exponent is capped so that a long outage cannot overflow the float.
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 1000))
        return base * (1 - self.jitter * rand())


DEFAULT_BACKOFF = Backoff()


class ClientConnection(Connection):
    """A client's connection, which remembers how it ended.

    Attributes:
        lost: the error that ended it (a reset by the server...), None after a
            clean end or while it lasts.
    """

    __slots__ = ("lost",)

    def connection_lost(self, exc: Exception | None) -> None:
        # A server may reset the connection mid-record: what it sent of that record
        # is gone, and whoever relays it must hear that it did not simply end.
        self.lost = exc
        super().connection_lost(exc)


class TCPClient(Session):
    """Keep a connection to a server: connect, reconnect with backoff, dispatch.

    Args:
        kernel: the kernel to run in.
        host: the server's address (IPv4, IPv6 or a name).
        port: the server's port.
        path: connect to this Unix domain socket path instead of ``host``/``port``.
        ssl: speak TLS with this client context (``ssl.create_default_context()``
            checks the server's certificate against the system's authorities).
        server_hostname: the name the server's certificate must carry, when it is
            not ``host``.
        on_input: ``on_input(session, record)`` for each record from the server.
        on_connected: ``on_connected(session)`` once connected.
        on_disconnected: ``on_disconnected(session)`` once the connection is gone.
        on_connect_error: ``on_connect_error(client, exc)`` when an attempt fails
            (refused, unreachable, timed out, TLS handshake failed).
        on_error: ``on_error(session, exc)`` as for a server.
        on_flushed: ``on_flushed(session)`` as for a server.
        on_high: ``on_high(session)`` when its unsent output passes the high-water
            mark (reading from it is paused meanwhile; work and children wait).
        on_low: ``on_low(session)`` when it drains below the low-water mark again.
        filter: makes the filter for each connection (default: lines).
        limits: buffer marks and timeouts for the connection (default: those of
            :class:`Limits` without the first-byte and idle timeouts).
        connect_timeout: seconds an attempt may take, TLS handshake included.
        reconnect: the delays between attempts; None: one attempt only.
        alias: a kernel alias for the client's session.
        heap: the heap, shared by the client's successive connections.

    Attributes:
        connection: the current connection, or None between connections.
    """

    kernel: Kernel

    __slots__ = (
        "_attempt",
        "_closed",
        "_retry",
        "_task",
        "connect_timeout",
        "connection",
        "counts",
        "dispatch",
        "filter_factory",
        "handlers",
        "host",
        "limits",
        "on_connect_error",
        "path",
        "port",
        "reconnect",
        "server_hostname",
        "ssl",
    )

    def __init__(
        self,
        kernel: Kernel,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str | os.PathLike[str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        on_input: Handler | None = None,
        on_connected: Handler | None = None,
        on_disconnected: Handler | None = None,
        on_connect_error: Callable[[TCPClient, BaseException], Any] | None = None,
        on_error: Handler | None = None,
        on_flushed: Handler | None = None,
        on_high: Handler | None = None,
        on_low: Handler | None = None,
        filter: Callable[[], Filter] = LineFilter,
        limits: Limits = CLIENT_LIMITS,
        connect_timeout: float = 10.0,
        reconnect: Backoff | None = DEFAULT_BACKOFF,
        alias: str | None = None,
        heap: dict[str, Any] | None = None,
    ):
        if path is None and not 0 < port <= 65535:
            raise ValueError(f"port {port} is out of range 1-65535")
        handlers = {
            INPUT: on_input,
            CONNECTED: on_connected,
            CLOSED_EVENT: on_disconnected,
            ERROR: on_error,
            FLUSHED: on_flushed,
            OUTPUT_HIGH: on_high,
            OUTPUT_LOW: on_low,
        }
        self.handlers: dict[str, Handler] = {k: v for k, v in handlers.items() if v is not None}
        self.dispatch = Connection.dispatch(self.handlers)
        self.filter_factory = filter
        self.limits = limits
        self.host = host
        self.port = port
        self.path = None if path is None else os.fspath(path)
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.on_connect_error = on_connect_error
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.connection: Connection | None = None
        self.counts: Counter[str] = Counter()
        self._attempt = 0  # failed attempts in a row
        self._retry = 0  # the pending retry timer's id, 0 when none
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        own: dict[str, Handler] = {_RETRY: self._retry_now, _CONNECT_ERROR: self._attempt_failed}
        super().__init__(kernel, own, heap=heap, alias=alias)
        kernel.on_serve(self._begin)

    def start(self) -> None:
        self.kernel.retain(self)  # held until close(): the client lives while it may connect
        super().start()

    @property
    def connected(self) -> bool:
        """Whether a connection is up (admitted and not closing)."""
        return self.connection is not None and self.connection.state not in ("closing", "closed")

    def put(self, *records: Any) -> None:
        """Send records on the current connection.

        Raises:
            RuntimeError: there is no connection now (see :attr:`connected`).
        """
        if self.connection is None:
            raise RuntimeError("not connected")
        self.connection.put(*records)

    def close(self) -> None:
        """Stop for good: cancel any attempt or wait, close the connection gracefully."""
        if self._closed:
            return
        self._closed = True
        if self._retry:
            self.kernel.cancel(self._retry)
            self._retry = 0
        if self._task is not None:
            self._task.cancel()
        if self.connection is not None:
            self.connection.close()
        self.kernel.release(self)

    def begin_shutdown(self) -> None:
        self.close()

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- connecting -------------------------------------------------------------------

    async def _begin(self) -> None:
        self._connect()

    def _connect(self) -> None:
        self._retry = 0
        if self._closed:
            return
        loop = self.kernel.running_loop()
        self._task = loop.create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        # The Connection is made only once the transport is ready (TLS included):
        # an attempt that fails leaves no session behind.
        factory = AfterHandshake.factory(self._new_connection)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    await loop.create_unix_connection(
                        factory, self.path, ssl=self.ssl, server_hostname=self.server_hostname
                    )
                else:
                    await loop.create_connection(
                        factory,
                        self.host,
                        self.port,
                        ssl=self.ssl,
                        server_hostname=self.server_hostname,
                    )
        except Exception as exc:  # refused, unreachable, timed out, bad name, TLS...
            # Whatever ended the attempt, the client must hear of it and retry:
            # an exception left in this task would only reach asyncio's log.
            if isinstance(exc, TimeoutError) and not str(exc):  # asyncio.timeout's
                exc = TimeoutError(f"no connection within {self.connect_timeout:g} s")
            self.kernel.enqueue(self, _CONNECT_ERROR, (exc,))
        finally:
            self._task = None

    def _new_connection(self) -> Connection:
        return ClientConnection(self)

    def _retry_now(self, _: Session) -> None:
        self._connect()

    def _attempt_failed(self, _: Session, exc: BaseException) -> None:
        self._attempt += 1
        self.counts["connect_errors"] += 1
        where = self.path or f"{self.host}:{self.port}"
        log.info(
            "client %d: cannot connect to %s: %r", self.id, where, exc,
            extra={"session": self.id, "state": self.state},
        )  # fmt: skip
        try:
            if self.on_connect_error is not None:
                self.on_connect_error(self, exc)
        finally:
            self._schedule()  # even if the handler raised (the kernel logs that)

    def _schedule(self) -> None:
        if self._closed or self.connection is not None:
            return
        backoff = self.reconnect
        if backoff is None or (backoff.attempts is not None and self._attempt >= backoff.attempts):
            log.info(
                "client %d: giving up after %d failed attempt(s)", self.id, self._attempt,
                extra={"session": self.id, "state": self.state},
            )  # fmt: skip
            self.close()
            return
        # After a disconnect too (attempt 0) wait the initial delay: a server that
        # accepts and drops at once must not make us spin.
        delay = backoff.delay(max(self._attempt - 1, 0))
        self._retry = self.kernel.delay(delay, _RETRY, session=self)

    # -- what the connection calls (as it would call its server) -----------------------

    def arrived(self, conn: Connection) -> None:
        assert conn.transport is not None
        if self._closed:
            conn.transport.close()  # closed while this attempt was finishing
            return
        limits = self.limits
        conn.transport.set_write_buffer_limits(limits.high_water, limits.low_water)
        conn.heap = self.heap
        self.connection = conn
        self._attempt = 0
        conn.admit()

    def released(self, conn: Connection) -> None:
        if self.connection is conn:
            self.connection = None
        self._schedule()
