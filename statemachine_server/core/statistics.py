"""The kernel's counters, as one snapshot (:meth:`~.kernel.Kernel.statistics`)."""

from __future__ import annotations

import msgspec

__all__ = ["KernelStatistics"]


class KernelStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the kernel's counters (see :meth:`Kernel.statistics`)."""

    sessions: int
    queue_depth: int
    events_dispatched: int
    timers_pending: int
    ticks: int
    handler_errors: int
    #: Chunked-work jobs alive (running, sleeping, waiting for a pool or a child).
    jobs: int = 0
    #: ... of which ready to step at the next tick.
    jobs_runnable: int = 0
    #: Calls running in the thread and process pools, and calls waiting for a slot.
    pool_calls: int = 0
    pool_waiting: int = 0
    #: Times a handler, call or work step held the loop past the watchdog's threshold.
    stalls: int = 0
