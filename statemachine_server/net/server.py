"""The TCP server component (POE::Component::Server::TCP's role): the thin socket layer.

It listens on TCP (IPv4 or IPv6) or on a Unix domain socket, with TLS when given
an :class:`ssl.SSLContext`. It binds the listening socket at once (so the real
port is known even with port 0, before the kernel runs), serves it when the
kernel starts, and makes one :class:`~statemachine_server.net.connection.Connection`
session per accepted client.

Concurrency limit: at ``max_connections`` admitted clients, a new one is accepted
but *parked* in ``accepting`` with reading paused, and admitted in arrival order as
others leave (POE's ``Concurrency``), instead of being refused with a reset. Parked
clients are bounded too: past ``max_pending`` they are closed. Every limit is in
:class:`~statemachine_server.limits.Limits`.

When accepting fails for want of file descriptors or memory (EMFILE, ENFILE,
ENOBUFS, ENOMEM), the server logs it, stops accepting for a second and tries
again, rather than spinning (trio's rule), and so recovers by itself once clients
leave (``tests/test_hostile.py``). asyncio's accept loop nearly does this, but on
such an error it goes on calling ``accept()`` up to ``backlog`` times, logging a
traceback and scheduling a retry each time: :class:`_Listener` makes the calls
after the first one in a burst report "nothing to accept" instead. (uvloop
accepts in C and handles this itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl as _ssl
import stat
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import msgspec

from .connection import Connection
from ..filters import Filter, LineFilter
from ..core.kernel import Handler, Kernel, Session
from ..core.lifecycle import (
    CLOSED_EVENT,
    CONNECTED,
    ERROR,
    EVENTS,
    FLUSHED,
    INPUT,
    OUTPUT_HIGH,
    OUTPUT_LOW,
    TIMEOUT,
)
from ..limits import Limits

__all__ = ["ServerStatistics", "TCPServer"]

DEFAULT_LIMITS = Limits()

log = logging.getLogger("statemachine_server")


class ServerStatistics(msgspec.Struct, frozen=True):
    """Counters of one server (see :meth:`TCPServer.statistics`).

    Attributes:
        connections: clients served now.
        pending: clients parked, waiting for a slot.
        accepted: clients accepted since the start.
        refused: clients closed at once because too many were parked.
        handler_errors: connections closed because a handler raised.
        protocol_errors: connections closed because the client broke the framing.
        timeouts: connections closed by the first-byte or idle timeout.
        overflows: connections aborted for not reading past ``max_output``.
        aborted: connections whose close did not finish within ``drain_timeout``.
    """

    connections: int
    pending: int
    accepted: int
    refused: int
    handler_errors: int
    protocol_errors: int
    timeouts: int
    overflows: int
    aborted: int


class TCPServer(Session):
    """Listen on a TCP port; each client becomes a :class:`Connection` session.

    Args:
        kernel: the kernel to run in.
        port: the port; 0 picks a free one (read it back from :attr:`port`).
        host: the address to bind. The default, 127.0.0.1, is reachable from this
            machine only: binding elsewhere is a deliberate choice.
        on_input: ``on_input(session, record)`` for each record from the client.
        on_connected: ``on_connected(session)`` once the client is admitted.
        on_disconnected: ``on_disconnected(session)`` once its socket is gone.
        on_error: ``on_error(session, exc)`` when a handler raised or the client broke
            the framing; the connection closes afterwards. By default the error is
            logged with the session id, state and event.
        on_flushed: ``on_flushed(session)`` when every reply put so far has left.
        on_high: ``on_high(session)`` when its unsent output passes the high-water
            mark (reading from it is paused meanwhile; work and children wait).
        on_low: ``on_low(session)`` when it drains below the low-water mark again.
        on_started: ``on_started(server)`` once the port is being served.
        on_timeout: ``on_timeout(session, reason)`` when the first-byte or idle timeout
            closes the client (it may still ``put`` a last reply).
        filter: makes a fresh filter for each connection (default: lines).
        limits: connection counts, buffer marks and timeouts (:class:`Limits`).
        alias: a kernel alias for this server's session.
        handlers: the connections' own named events (POE's ``InlineStates``):
            ``{"tick": handler}`` runs ``handler(session, *args)`` when ``tick`` is
            posted to a connection (``session.post``, ``session.timer``). Like
            input, they are handled in ``reading``, postponed (in order) while the
            connection is ``working`` or ``replying``, and dropped once it closes.
        path: listen on this Unix domain socket path instead of TCP (``host`` and
            ``port`` are then ignored). A stale socket file left there is replaced,
            as asyncio does; the file is removed when the server closes.
        ssl: serve TLS with this context (see
            :func:`~statemachine_server.net.tls.server_ssl_context`).
    """

    __slots__ = (
        "_accepted",
        "_active",
        "_counts",
        "_parked",
        "_refused",
        "_server",
        "_sock",
        "dispatch",
        "filter_factory",
        "handlers",
        "host",
        "limits",
        "on_started",
        "path",
        "port",
        "ssl",
    )

    def __init__(
        self,
        kernel: Kernel,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        on_input: Handler | None = None,
        on_connected: Handler | None = None,
        on_disconnected: Handler | None = None,
        on_error: Handler | None = None,
        on_flushed: Handler | None = None,
        on_high: Handler | None = None,
        on_low: Handler | None = None,
        on_timeout: Handler | None = None,
        on_started: Callable[[TCPServer], Any] | None = None,
        filter: Callable[[], Filter] = LineFilter,
        limits: Limits = DEFAULT_LIMITS,
        alias: str | None = None,
        handlers: dict[str, Handler] | None = None,
        path: str | os.PathLike[str] | None = None,
        ssl: _ssl.SSLContext | None = None,
    ):
        reserved = set(EVENTS) & set(handlers or ())
        if reserved:
            raise ValueError(
                f"handlers: {sorted(reserved)} are lifecycle events; use the on_* arguments"
            )
        given: dict[str, Handler | None] = {
            **(handlers or {}),
            INPUT: on_input,
            CONNECTED: on_connected,
            CLOSED_EVENT: on_disconnected,
            ERROR: on_error,
            FLUSHED: on_flushed,
            OUTPUT_HIGH: on_high,
            OUTPUT_LOW: on_low,
            TIMEOUT: on_timeout,
        }
        self.handlers: dict[str, Handler] = {k: v for k, v in given.items() if v is not None}
        self.dispatch = Connection.dispatch(self.handlers)
        self.filter_factory = filter
        self.limits = limits
        self.on_started = on_started
        self._counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._active = 0
        self._parked: deque[Connection] = deque()
        self._accepted = 0
        self._refused = 0
        self.ssl = ssl
        self.path = None if path is None else os.fspath(path)
        if self.path is None:
            self._sock: socket.socket | None = _bind(host, port, limits.backlog)
            self.host, self.port = self._sock.getsockname()[:2]
        else:
            self._sock = _bind_unix(self.path, limits.backlog)
            self.host, self.port = "", 0
        super().__init__(kernel, {}, alias=alias)
        kernel._on_serve(self._serve)

    def _start(self) -> None:
        self._refs += 1  # the listening socket keeps the server alive
        super()._start()

    async def _serve(self) -> None:
        if self._sock is None:  # closed before it ever served
            return
        loop = asyncio.get_running_loop()
        # asyncio calls listen() again, with its own default backlog of 100 unless
        # told: pass ours, or bursts of connects overflow and wait for SYN retries.
        factory: Callable[[], asyncio.Protocol] = self._connection_factory
        if self.ssl is not None:
            factory = _AfterHandshake.factory(self._connection_factory)
        if self.path is None:
            self._server = await loop.create_server(
                factory, sock=self._sock, backlog=self.limits.backlog, ssl=self.ssl
            )
            log.info("listening on %s:%d", self.host, self.port)
        else:
            self._server = await loop.create_unix_server(
                factory, sock=self._sock, backlog=self.limits.backlog, ssl=self.ssl
            )
            log.info("listening on %s", self.path)
        if self.on_started is not None:
            self.on_started(self)

    def _connection_factory(self) -> Connection:
        # asyncio reports a failure here only in debug mode: say it ourselves.
        try:
            return Connection(self)
        except Exception:
            log.exception("cannot create a connection session")
            raise

    # -- admission (called by Connection) ---------------------------------------------

    def _arrived(self, conn: Connection) -> None:
        self._accepted += 1
        assert conn.transport is not None
        limits = self.limits
        conn.transport.set_write_buffer_limits(limits.high_water, limits.low_water)
        if self._active < limits.max_connections:
            self._active += 1
            conn._admit()
        elif len(self._parked) < limits.max_pending:
            conn._park()
            self._parked.append(conn)
        else:
            self._refused += 1
            log.warning(
                "session %d: %d clients waiting already; closing", conn.id, limits.max_pending
            )
            conn.close()

    def _released(self, conn: Connection) -> None:
        if self._parked:  # (a failed remove() would format repr(conn) for its error)
            try:
                self._parked.remove(conn)  # left while still waiting: O(n), but rare
                return
            except ValueError:
                pass
        self._active -= 1
        while self._parked and self._active < self.limits.max_connections:
            nxt = self._parked.popleft()
            if nxt.transport is not None and not nxt.transport.is_closing():
                self._active += 1
                nxt._admit()

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting; clients already connected are not affected."""
        if self._sock is None:
            return
        if self._server is not None:
            self._server.close()  # closes the socket too
            self._server = None
        else:
            self._sock.close()
        self._sock = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.kernel._release(self)

    def _shutdown(self) -> None:
        self.close()

    def statistics(self) -> ServerStatistics:
        """Counters of clients and of the ways connections ended badly."""
        counts = self._counts
        return ServerStatistics(
            connections=self._active,
            pending=len(self._parked),
            accepted=self._accepted,
            refused=self._refused,
            handler_errors=counts["handler_errors"],
            protocol_errors=counts["protocol_errors"],
            timeouts=counts["timeouts"],
            overflows=counts["overflows"],
            aborted=counts["aborted"],
        )


class _AfterHandshake(asyncio.Protocol):
    """Stands in for a connection until its transport is ready, then steps aside.

    With TLS, asyncio makes the protocol before the handshake, and never tells it
    if the handshake fails: a :class:`Connection` made then would stay registered
    with the kernel forever. This stand-in makes it only in ``connection_made``,
    and hands it the transport (``set_protocol``), so data goes to it directly.
    """

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], asyncio.Protocol]):
        self._make = make

    @classmethod
    def factory(cls, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: cls(make)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        protocol = self._make()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


_OVERLOAD = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Listener(socket.socket):
    """A listening socket that reports an overload once per burst (see above)."""

    __slots__ = ("_quiet_until",)
    _quiet_until: float

    def accept(self) -> tuple[socket.socket, Any]:
        if time.monotonic() < self._quiet_until:
            raise BlockingIOError(errno.EAGAIN, "accepting paused after an overload")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _OVERLOAD:
                # asyncio retries after a second; stay quiet for half of that.
                self._quiet_until = time.monotonic() + 0.5
            raise


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, address = infos[0]
    # The protocol number matters beyond the listener: accepted sockets inherit it, and
    # asyncio sets TCP_NODELAY on a transport only when its socket says IPPROTO_TCP.
    # With 0 there, small replies would wait on Nagle's algorithm for the peer's ACK.
    sock = _Listener(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock._quiet_until = 0.0
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(path: str, backlog: int) -> socket.socket:
    # A socket file left by a server that died is in the way: replace it (asyncio's
    # create_unix_server does the same). Any other kind of file is an error.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = _Listener(socket.AF_UNIX, socket.SOCK_STREAM)
    sock._quiet_until = 0.0
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
