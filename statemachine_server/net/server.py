"""The TCP server component (POE::Component::Server::TCP's role): the thin socket layer.

It listens on TCP (IPv4 or IPv6) or on a Unix domain socket, with TLS when given
an :class:`ssl.SSLContext`. It binds the listening socket at once (so the real
port is known even with port 0, before the kernel runs), serves it when the
kernel starts, and makes one :class:`~statemachine_server.net.connection.Connection`
session per accepted client.

Concurrency limit: at ``max_connections`` admitted clients, a new one is accepted
but *parked* in ``accepting`` with reading paused, and admitted in arrival order as
others leave (POE's ``Concurrency``), instead of being refused with a reset. Parked
clients are bounded too: past ``max_pending`` they are closed. With TLS, clients
still in their handshake are neither admitted nor parked: past ``max_handshakes``
of them a new client is closed as it is accepted, and a handshake is cut after
``handshake_timeout``. Replies waiting for clients that do not keep up are
bounded all together by ``max_output_total`` (:class:`~.output.OutputBudget`).
Every limit is in :class:`~statemachine_server.limits.Limits`.

Listening sockets are made in :mod:`.listen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl as _ssl
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import msgspec

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
from ..filters import Filter, LineFilter
from ..limits import Limits
from .connection import Connection
from .listen import Listener, bind_tcp, bind_unix, inherit
from .metered import MeteredConnection
from .output import OutputBudget
from .tls import AfterHandshake

__all__ = ["ServerStatistics", "TCPServer"]

DEFAULT_LIMITS = Limits()

log = logging.getLogger("statemachine_server")


def _closed(sock: socket.socket | None) -> bool:
    return sock is None or sock.fileno() == -1


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
        handshakes: TLS handshakes in progress now.
        held_output: bytes of replies held for clients that are not keeping up
            (the running total ``max_output_total`` bounds).
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
    handshakes: int = 0
    held_output: int = 0


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
        metered: add each connection's bytes in and out to :attr:`counts`
            (``bytes_in``, ``bytes_out``) when it ends: for served metrics.
    """

    kernel: Kernel

    __slots__ = (
        "_accepted",
        "_active",
        "_handshakes",
        "_parked",
        "_refused",
        "_refusing",
        "_server",
        "_sock",
        "budget",
        "connection_class",
        "counts",
        "dispatch",
        "filter_factory",
        "handlers",
        "host",
        "limits",
        "metrics",
        "on_started",
        "owns_path",
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
        metered: bool = False,
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
        self.counts: Counter[str] = Counter()
        # Bytes are read from the sockets where metrics are served: see metered.py.
        self.connection_class = MeteredConnection if metered else Connection
        #: The endpoint serving this server's metrics, if any (see observe).
        self.metrics: Any = None
        self._server: asyncio.Server | None = None
        self._active = 0
        self._parked: deque[Connection] = deque()
        self._accepted = 0
        self._refused = 0
        # TLS clients accepted and in their handshake, by file descriptor.
        self._handshakes: dict[int, weakref.ref[socket.socket]] = {}
        self._refusing = False  # past max_handshakes, and said so in the log
        self.budget = OutputBudget(limits.max_output_total)
        self.ssl = ssl
        path = None if path is None else os.fspath(path)
        sock = (
            bind_tcp(host, port, limits.backlog)
            if path is None
            else bind_unix(path, limits.backlog)
        )
        self._sock: socket.socket | None = sock
        # An inherited socket (listen.adopting) is what it is, whatever was asked:
        # its family says where it listens, and its Unix socket file is not ours.
        #: Whether :meth:`close` removes the Unix socket file: not an inherited
        #: socket's (a reload moves it from the old server to the new one).
        self.owns_path = not getattr(sock, "inherited", False)
        self.path: str | None = None
        if sock.family == socket.AF_UNIX:
            self.path = path if path is not None and self.owns_path else str(sock.getsockname())
            self.host, self.port = "", 0
        else:
            self.host, self.port = sock.getsockname()[:2]
        super().__init__(kernel, {}, alias=alias)
        kernel.on_serve(self._serve)

    def start(self) -> None:
        self.kernel.retain(self)  # the listening socket keeps the server alive
        super().start()

    async def _serve(self) -> None:
        if self._sock is None:  # closed before it ever served
            return
        loop = asyncio.get_running_loop()
        # asyncio calls listen() again, with its own default backlog of 100 unless
        # told: pass ours, or bursts of connects overflow and wait for SYN retries.
        factory: Callable[[], asyncio.Protocol] = self._connection_factory
        tls: dict[str, Any] = {}
        if self.ssl is not None:
            tls = {"ssl": self.ssl, "ssl_handshake_timeout": self.limits.handshake_timeout}
            factory = AfterHandshake.factory(self._connection_factory, self._handshake_done)
            if isinstance(self._sock, Listener):
                self._sock.admit = self._handshake_begins
        if self.path is None:
            self._server = await loop.create_server(
                factory, sock=self._sock, backlog=self.limits.backlog, **tls
            )
            log.info("listening on %s:%d", self.host, self.port)
        else:
            self._server = await loop.create_unix_server(
                factory, sock=self._sock, backlog=self.limits.backlog, **tls
            )
            log.info("listening on %s", self.path)
        if self.on_started is not None:
            self.on_started(self)

    def _connection_factory(self) -> Connection:
        # asyncio reports a failure here only in debug mode: say it ourselves.
        try:
            return self.connection_class(self)
        except Exception:
            log.exception("cannot create a connection session")
            raise

    # -- TLS handshakes (called by the listening socket and AfterHandshake) ----------

    def _handshake_begins(self, conn: socket.socket) -> bool:
        # Counted from the accept: asyncio makes the TLS object (a 256 KiB read
        # buffer) for each client it accepted in a burst, before any of them runs.
        # A handshake ends in connection_made (_handshake_done) or with its socket
        # closed: asyncio tells no one when one fails or times out, so closed
        # sockets are swept out when the count matters (here, at the limit).
        handshakes = self._handshakes
        limit = self.limits.max_handshakes
        if len(handshakes) >= limit:
            self._sweep_handshakes()
            if len(handshakes) >= limit:
                self._refused += 1
                if not self._refusing:  # once per burst: a flood must not flood the log too
                    self._refusing = True
                    log.warning("%d TLS handshakes in progress already; closing new clients "
                                "until one ends (counted as refused)", limit)  # fmt: skip
                return False
        self._refusing = False
        # Weakly: a socket asyncio drops without closing is closed when freed.
        handshakes[conn.fileno()] = weakref.ref(conn)
        return True

    def _handshake_done(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._handshakes.pop(sock.fileno(), None)

    def _sweep_handshakes(self) -> int:
        handshakes = self._handshakes
        for fd in [fd for fd, ref in handshakes.items() if _closed(ref())]:
            del handshakes[fd]
        return len(handshakes)

    # -- admission (called by Connection) ---------------------------------------------

    def arrived(self, conn: Connection) -> None:
        self._accepted += 1
        assert conn.transport is not None
        limits = self.limits
        conn.transport.set_write_buffer_limits(limits.high_water, limits.low_water)
        if self._active < limits.max_connections:
            self._active += 1
            conn.admit()
        elif len(self._parked) < limits.max_pending:
            conn.park()
            self._parked.append(conn)
        else:
            self._refused += 1
            log.warning(
                "session %d: %d clients waiting already; closing", conn.id, limits.max_pending
            )
            conn.close()

    def released(self, conn: Connection) -> None:
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
                nxt.admit()

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting; clients already connected are not affected."""
        if self._sock is None:
            return
        if self._server is not None:
            # Accepting stops now; asyncio's server closes (the socket with it) a turn
            # of the loop later, once the connections of an accept burst under way
            # are made: asyncio makes each in a task, and one that finds its server
            # closed is dropped, its client left unanswered (3.11's Server._attach
            # asserts). On a socket shared with a new server (a reload), that client
            # would otherwise be lost.
            if not isinstance(self._server, asyncio.base_events.Server):
                # uvloop accepts in C, past Listener.accept, and makes a connection
                # at once (no task): closing now is what stops it accepting.
                self._server.close()
            else:
                if isinstance(self._sock, Listener):
                    self._sock.quiet_until = math.inf
                self.kernel.running_loop().call_soon(self._server.close)  # the socket too
            self._server = None
        else:
            self._sock.close()
        self._sock = None
        if self.path is not None and self.owns_path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.kernel.release(self)

    def handover(self) -> socket.socket:
        """A duplicate of the listening socket, for the server that replaces this
        one on the same address (a reload: see :func:`.listen.adopting`); this one
        still accepts until :meth:`close`. A Unix socket file stays this server's
        to remove until :attr:`owns_path` says otherwise.

        Raises:
            RuntimeError: the server is closed.
        """
        if self._sock is None:
            raise RuntimeError("handover: the server is closed")
        return inherit(os.dup(self._sock.fileno()))

    def begin_shutdown(self) -> None:
        self.close()

    def statistics(self) -> ServerStatistics:
        """Counters of clients and of the ways connections ended badly."""
        counts = self.counts
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
            handshakes=self._sweep_handshakes(),
            held_output=self.budget.total,
        )
