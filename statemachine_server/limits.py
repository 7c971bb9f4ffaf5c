"""Every per-server limit, its safe default, and why that default.

One frozen record, used as is by the Python API (``TCPServer(limits=Limits(...))``)
and by specs (the ``server.limits`` mapping decodes straight into it), and
documented field by field in ``docs/limits.md`` (a test keeps the two in step).

The record size limit belongs to the filter (``LineFilter(max_length=...)``,
``filter: {max_length: ...}`` in a spec), since what a record is depends on it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["Limits"]

_Count = Annotated[int, Meta(ge=1)]
_Bytes = Annotated[int, Meta(ge=0)]
_Seconds = Annotated[float, Meta(gt=0)]


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds on what one server, and each of its clients, may use.

    Attributes:
        max_connections: clients served at once. More are accepted but parked in
            ``accepting`` (reading paused) and admitted in order as others leave:
            POE's ``Concurrency``, Erlang ranch's ``max_connections``.
        max_pending: parked clients at most; a client arriving past it is closed
            at once and counted as refused.
        backlog: the listen queue length passed to ``listen()`` (the kernel caps it
            at ``net.core.somaxconn``).
        high_water: bytes of replies waiting in the transport above which the
            connection stops reading (state ``replying``): asyncio's own default.
        low_water: bytes below which it reads again: asyncio's own default.
        max_output: bytes of replies waiting for a client that does not read, past
            which the connection is aborted (Redis's ``client-output-buffer-limit``).
        max_output_total: bytes of replies waiting, all clients together, for the
            clients that are not keeping up (past ``high_water``); past it the
            largest of those backlogs are aborted first, as past ``max_output``.
            memcached's memory by default (``-m 64``), like the server-wide heap.
        max_handshakes: TLS handshakes in progress at once; a client arriving past
            it is closed at once and counted as refused (each costs about 300 KiB
            until it ends: see ``docs/limits.md``).
        handshake_timeout: seconds a TLS handshake may take before the socket is
            closed: Erlang ranch's ``handshake_timeout`` (5 s).
        first_byte_timeout: seconds a new client may stay silent before it is
            closed (nginx's ``client_header_timeout`` is 60 s); None: no limit.
        idle_timeout: seconds without a byte from the client before it is closed
            (nginx's ``keepalive_timeout`` is 75 s; a line protocol's clients sit
            idle longer); None: no limit. It does not run while the connection is
            ``working`` on the client's behalf.
        max_postponed: events a ``working`` or ``replying`` connection keeps for
            later (gen_statem postpones without a bound); at this many, reading
            pauses until they are handled, so the client waits and nothing is lost.
            Reading goes on below it, so a client that disconnects is noticed.
        drain_timeout: seconds a graceful shutdown waits for clients to be answered,
            and a closing connection waits for its replies to leave, before cutting
            them off.
        max_pool_jobs: calls in the thread and process pools at once for this
            server's clients (``in_thread``/``in_process``); more wait in order for
            a slot. The pools' own sizes bound the parallelism; this bounds how much
            of them one server may hold.
        max_children: child processes running at once for this server's clients
            (``run_process``); starting one more raises ``LimitReached``. Each child
            holds three pipes and a process slot.
    """

    max_connections: _Count = 10_000
    max_pending: _Bytes = 1_024
    backlog: _Count = 1_024
    high_water: _Bytes = 64 * 1024
    low_water: _Bytes = 16 * 1024
    max_output: _Bytes = 16 * 1024 * 1024
    max_output_total: _Bytes = 64 * 1024 * 1024
    max_handshakes: _Count = 256
    handshake_timeout: _Seconds = 5.0
    first_byte_timeout: _Seconds | None = 60.0
    idle_timeout: _Seconds | None = 300.0
    max_postponed: _Count = 1_000
    drain_timeout: _Seconds = 5.0
    max_pool_jobs: _Count = 64
    max_children: _Count = 64

    def __post_init__(self) -> None:
        if not self.low_water <= self.high_water <= self.max_output:
            raise ValueError("need low_water <= high_water <= max_output")
