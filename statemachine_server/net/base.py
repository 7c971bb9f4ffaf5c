"""A connection's fields, in one place, and the parts it is made of.

:class:`~.connection.Connection` is one state machine with three concerns kept in
their own modules: :mod:`.output` (the write side), :mod:`.timeouts` and
:mod:`.working` (chunked work). Each is a base class of the connection, and all
of them derive from :class:`ConnectionBase`, which declares every field (one
``__slots__``, so the parts share one layout, as asyncio's transports share
their flow-control base) and what the parts call on one another.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..core.kernel import Kernel
from ..core.lifecycle import ACCEPTING
from ..core.session import Session
from ..filters import Filter
from ..limits import Limits
from ..work.child import Child
from ..work.job import Job
from .flow import FlowControl

__all__ = ["ConnectionBase", "Endpoint"]


class Endpoint(Protocol):
    """What a connection needs from the component that made it: a
    :class:`~.server.TCPServer` (accepted clients) or a :class:`~.client.TCPClient`."""

    kernel: Any
    limits: Limits
    #: The connection's event-to-callable map (see :meth:`Connection.dispatch`).
    dispatch: dict[str, Any]
    #: The user's handlers (the built-in actions call ``error``, ``closed``...).
    handlers: dict[str, Any]
    #: Counters the connection adds to (``overflows``, ``timeouts``...).
    counts: Counter[str]

    def filter_factory(self) -> Filter: ...

    def arrived(self, conn: Any) -> None: ...

    def released(self, conn: Any) -> None: ...


class ConnectionBase(Session):
    """Every field of a connection (see :class:`~.connection.Connection` for the API)."""

    kernel: Kernel

    __slots__ = (
        "_accepts",
        "_below",
        "_budget",
        "_children",
        "_eof_sent",
        "_filter",
        "_flush_wanted",
        "_half",
        "_heard",
        "_holds",
        "_job",
        "_linger",
        "_peer_eof",
        "_postponed",
        "_pull_mode",
        "_raw",
        "_seen",
        "_watch",
        "dirty",
        "flow",
        "outbox",
        "protocol_state",
        "remote_ip",
        "remote_port",
        "server",
        "transport",
    )

    def __init__(self, server: Endpoint):
        # Not Session.__init__: a connection has no ``started`` handler to run and
        # is kept alive by its socket (one reference, released on ``closed``).
        kernel = server.kernel
        self.kernel = kernel
        self.server = server
        self.handler_table = server.dispatch
        self.heap: dict[str, Any] = {}
        self.refcount = 1
        self.timer_ids = None
        self.state = ACCEPTING
        self.transport: asyncio.Transport | None = None
        self.remote_ip = ""
        self.remote_port = 0
        self._filter: Filter = server.filter_factory()
        self._pull_mode = hasattr(self._filter, "get_one")
        #: What the filter's put() takes, checked at put() (None: anything).
        self._accepts: tuple[type, ...] | None = getattr(self._filter, "records", None)
        self.protocol_state: str | None = None
        self.outbox: list[Any] = []
        self._raw = b""  # bytes from write(), with the records put before them encoded
        self.dirty = False
        self._eof_sent = False  # our side is shut (lingering close under way)
        self._peer_eof = False  # the client's side is shut
        self._linger = False  # the client broke the framing: it may still be sending
        # shutdown_output(): FIN after the replies put before it (how many of _out
        # those are, until written), input goes on; -1: not called.
        self._half = -1
        # hold(): callbacks waiting for the client's end of input (None: no hold).
        self._holds: list[Callable[[Any], Any]] | None = None
        self._postponed: deque[tuple[str, tuple[Any, ...]]] | None = None
        self.flow = FlowControl()
        self._job: Job | None = None
        self._children: set[Child] | None = None  # child processes it started
        self.named_timers = None
        self._flush_wanted = False
        self._seen = 0.0  # loop time of admission, then of the last bytes received
        self._heard = False  # any byte received yet (first-byte vs idle timeout)
        self._watch = 0  # the timeout timer's id, 0 when none
        self._below: Any = None  # over TLS, the transport under it: see connection_made
        # The server's running total of unread replies (a TCPClient keeps none).
        self._budget: Any = getattr(server, "budget", None)
        self.id = kernel.register(self)

    if TYPE_CHECKING:  # defined by Connection, called by its parts

        def close(self) -> None: ...

        def _enter(self, dest: str, event: str) -> None: ...
