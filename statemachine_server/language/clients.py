"""A spec's outbound connections (``clients:``): made, fed and ended for the sessions
that use them.

Each is a :class:`~statemachine_server.net.client.TCPClient`. A ``per: connection``
client belongs to one session (a proxy's upstream): it is opened when the session
is admitted, makes one attempt, and is closed when the session ends; by default
the session ends with it. A ``per: server`` client is shared (a gateway's feed): it
is opened when the kernel starts and reconnects with backoff.

Their handlers run *as the session they belong to*: a ``reply`` in the upstream's
``input`` handler answers the downstream client, ``{session.id}`` is that client's.
A shared client's handlers run as its own connection (``broadcast`` reaches groups).

``send`` before the connection is up queues the record, in order, up to
``max_queued``; the queue is written as soon as it connects. Past the bound a
session's own client closes that session (its client outran a connection that is
not there), a shared one drops the record with a warning.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..core.kernel import Kernel
from ..core.lifecycle import CLOSED, ERROR
from ..errors import ProtocolError, SpecError
from ..filters import Filter, InvalidRecord
from ..net.client import CLIENT_LIMITS, Backoff, TCPClient
from .model import BackoffSettings, ClientSettings

__all__ = ["ClientProgram", "Outbound"]

log = logging.getLogger("statemachine_server")


@dataclass
class ClientProgram:
    """One compiled ``clients.NAME``."""

    name: str
    settings: ClientSettings
    filter_factory: Callable[[], Filter]
    #: Renders the host and the port (templates of ``{server.NAME}`` and the session).
    host: Callable[..., Any]
    port: Callable[..., Any]
    path: str | None = None
    #: The TLS context, made when the server is built (it reads files).
    ssl: ssl.SSLContext | None = None
    #: Event name to compiled handler: ``handler(session, record)`` for ``input`` and
    #: ``connect_error``, ``handler(session)`` for the others.
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)


class Outbound:
    """The outbound connections of one spec server."""

    def __init__(self, kernel: Kernel, programs: list[ClientProgram], base_dir: str):
        self.kernel = kernel
        for program in programs:
            tls = program.settings.tls
            if tls is not None:
                program.ssl = _client_context(program.name, tls.ca, base_dir)
        self.per_session = [p for p in programs if p.settings.per == "connection"]
        self.shared_programs = {p.name: p for p in programs if p.settings.per == "server"}
        self.programs = {p.name: p for p in programs}
        # (session id, client name) -> that session's client, and what waits for it.
        self.own: dict[tuple[int, str], TCPClient] = {}
        self.queued: dict[tuple[int, str], list[Any]] = {}
        self.shared: dict[str, TCPClient] = {}
        self.shared_queue: dict[str, list[Any]] = {}
        # Sessions' own clients that hold their session open, and those whose
        # session's client has half-closed before they were connected.
        self.holding: set[tuple[int, str]] = set()
        self.dropped: dict[str, int] = {}  # records a shared client had no room for
        self.half_wanted: set[tuple[int, str]] = set()

    # -- the server's side ------------------------------------------------------------

    def start_shared(self, server: Any) -> None:
        """Create the shared clients (they connect when the kernel is served)."""
        # Their host and port templates can name only the server's heap.
        context = SimpleNamespace(server=server, heap=server.heap, id=0, state="",
                                  protocol_state="", remote_ip="", remote_port=0)  # fmt: skip
        for name, program in self.shared_programs.items():
            self.shared_queue[name] = []
            try:
                self.shared[name] = self._client(program, context, None, server)
            except ValueError as exc:  # a port from the server heap (run --set)
                raise SpecError(str(exc), f"clients.{name}") from None

    def connected(self, session: Any) -> None:
        """A session was admitted: open its own clients."""
        for program in self.per_session:
            key = (session.id, program.name)
            self.queued[key] = []
            try:
                client = self._client(program, session, session, session.server)
            except ValueError as exc:  # a bad port from a template: this session's error
                raise ProtocolError(f"clients.{program.name}: {exc}") from None
            self.own[key] = client
            # The client's end of input waits for the upstream's last replies: it is
            # passed on upstream (half-close), and the session ends when upstream does.
            session.hold(lambda s, c=client, k=key: self._half_close(c, k))
            self.holding.add(key)

    def gone(self, session: Any) -> None:
        """A session ended: close its own clients, drop what they had queued."""
        for program in self.per_session:
            key = (session.id, program.name)
            self.queued.pop(key, None)
            self.holding.discard(key)
            self.half_wanted.discard(key)
            client = self.own.pop(key, None)
            if client is not None:
                client.close()

    def send(self, session: Any, name: str, record: Any) -> None:
        """``send: NAME``: on the session's own client, or the shared one."""
        shared = name in self.shared
        if shared:
            client, queue = self.shared[name], self.shared_queue[name]
        else:
            key = (session.id, name)
            own = self.own.get(key)
            if own is None:  # it failed to start for this session
                raise ProtocolError(f"client {name!r} is not open for this session")
            client, queue = own, self.queued[key]
        if client.connected and not queue:
            client.put(record)
            return
        if len(queue) >= self.programs[name].settings.max_queued:
            if shared:
                self.dropped[name] = dropped = self.dropped.get(name, 0) + 1
                if dropped % 1000 == 1:  # the first, then one line per thousand
                    log.warning("client %r: not connected, %d records queued; %d dropped",
                                name, len(queue), dropped)  # fmt: skip
                return
            raise ProtocolError(f"client {name!r}: more than {len(queue)} records queued "
                                "before it connected")  # fmt: skip
        if not shared:
            # Read no more from this client until its records can go: what waits
            # is then bounded by one read, not by how fast it sends.
            session.pause_input()
        queue.append(record)

    def _half_close(self, client: TCPClient, key: tuple[int, str]) -> None:
        if client.ssl is not None:
            # TLS cannot half-close, and closing would lose the replies to come:
            # the session stays held until upstream closes or its idle timeout.
            return
        if not client.connected:
            self.half_wanted.add(key)  # once connected and the queue is written
            return
        queue = self.queued.get(key)
        if queue:
            client.put(*queue)
            queue.clear()
        assert client.connection is not None
        client.connection.shutdown_output()

    def _release(self, owner: Any, key: tuple[int, str]) -> None:
        if key in self.holding:
            self.holding.discard(key)
            owner.release()

    # -- a client --------------------------------------------------------------------

    def _client(self, program: ClientProgram, context: Any, owner: Any, server: Any) -> TCPClient:
        settings, handlers, name = program.settings, program.handlers, program.name
        own = owner is not None
        queues: dict[Any, list[Any]] = self.queued if own else self.shared_queue  # type: ignore[assignment]
        queue_key: Any = (owner.id, name) if own else name

        def me(up: Any) -> Any:
            # Handlers run as the session the client belongs to (or as the
            # shared client's own connection).
            return owner if own else up

        def on_connected(up: Any) -> None:
            queue = queues.get(queue_key)
            if queue:
                up.put(*queue)
                queue.clear()
            if own and _alive(owner):
                owner.resume_input()  # paused while its records waited (send)
            if own and queue_key in self.half_wanted:
                self.half_wanted.discard(queue_key)
                up.shutdown_output()
            handler = handlers.get("connected")
            if handler is not None and _alive(me(up)):
                handler(me(up))

        def on_input(up: Any, record: Any) -> None:
            if type(record) is InvalidRecord:  # the server broke the client's schema
                log.warning("client %r: dropped a record from the server: %s", name, record.error)
                return
            handler = handlers.get("input")
            if handler is not None and _alive(me(up)):
                handler(me(up), record)

        def on_disconnected(up: Any) -> None:
            handler = handlers.get("disconnected")
            lost = getattr(up, "lost", None)  # reset, not a clean end
            if lost is not None:
                log.warning("%s: client %r: connection lost: %s",
                            _who(owner if own else up), name, _reason(lost))  # fmt: skip
            if own:
                self._release(owner, queue_key)  # its replies are all in
                if not _alive(owner):
                    return
                if lost is not None and handler is None:
                    # Not a clean end: what it was sending may be cut short. The
                    # session's error (its `error` handler may tell the client),
                    # after the input already in; then it closes.
                    reason = f"client {name!r}: the connection was lost"
                    self.kernel.enqueue(owner, ERROR, (ProtocolError(reason), "disconnected"))
                    return
            if handler is not None:
                handler(me(up))  # a shared client's: its closed connection (log, broadcast)
            elif own:
                owner.close()  # a proxy's client goes with its upstream

        def on_high(up: Any) -> None:
            # Upstream does not keep up: stop reading the client that feeds it
            # (TCP flow control end to end), until it drains.
            if own and _alive(owner):
                owner.pause_input()

        def on_low(up: Any) -> None:
            if own and _alive(owner):
                owner.resume_input()

        def on_connect_error(client: TCPClient, exc: BaseException) -> None:
            reason = _reason(exc)
            handler = handlers.get("connect_error")
            # Said here, to the operator, with the address: the handler decides what
            # (if anything) the session's client hears of it.
            where = client.path or f"{client.host}:{client.port}"
            log.warning("%s: client %r cannot connect to %s: %s",
                        _who(owner if own else None), name, where, reason)  # fmt: skip
            # A shared client has no connection then: its handler (log, broadcast,
            # set only) runs with the server's context.
            target = owner if own else context
            if own:
                self._release(owner, queue_key)
            if handler is not None:
                if _alive(target):
                    handler(target, reason)
            elif own and _alive(owner):
                owner.close()

        host = str(program.host(context, None, {}))
        port_text = program.port(context, None, {})
        port = 0
        if program.path is None:
            try:
                port = int(port_text)
            except (TypeError, ValueError):
                port = -1
            if not 0 < port <= 65535:
                raise ValueError(f"port {port_text!r} is not a port number (1 to 65535)")
        return TCPClient(
            self.kernel,
            host=host,
            port=port,
            path=program.path,
            ssl=program.ssl,
            server_hostname=None if settings.tls is None else settings.tls.hostname,
            filter=program.filter_factory,
            limits=CLIENT_LIMITS,
            connect_timeout=settings.connect_timeout,
            reconnect=None if own else _backoff(settings.reconnect),
            heap=None if own else server.heap,  # a shared client's heap is the server's
            on_high=on_high,
            on_low=on_low,
            on_connected=on_connected,
            on_input=on_input,
            on_disconnected=on_disconnected,
            on_connect_error=on_connect_error,
        )


def _client_context(name: str, ca: str | None, base_dir: str) -> ssl.SSLContext:
    """The standard library's safe client defaults: the server's certificate and
    name are checked, TLS 1.2 at least."""
    cafile = None if ca is None else str(Path(base_dir) / ca)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror or str(exc)
        raise SpecError(f"cannot read clients.{name}.tls.ca: {reason}", str(cafile)) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _backoff(settings: BackoffSettings) -> Backoff:
    # The model's copy of Backoff's fields (the model imports no network code).
    return Backoff(
        initial=settings.initial,
        factor=settings.factor,
        maximum=settings.maximum,
        jitter=settings.jitter,
        attempts=settings.attempts,
    )


def _who(session: Any) -> str:
    return "server" if session is None else f"session {session.id}"


def _alive(session: Any) -> bool:
    return getattr(session, "state", None) is not CLOSED


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
