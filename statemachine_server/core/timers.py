"""Pending timers, in one heap owned by the kernel (sans-I/O: no loop), and the
:class:`Clock` a kernel may take its time from instead of its loop.

The kernel keeps every timer here and asks its event loop for a single wake-up, at
the earliest due time; when it comes, :meth:`TimerQueue.pop_due` hands back the
timers that are due, in order, and the kernel queues their events. Owning the
heap, instead of one loop handle per timer, is what lets a virtual clock
(:mod:`statemachine_server.testing`) drive every timer deterministically: time is
just a number passed to :meth:`pop_due`.

Order: by due time, then by creation (timer ids grow), so two timers due at the
same moment fire in the order they were set, as POE and Twisted promise.

Cancelling is lazy: the entry leaves the index at once and its heap slot is
skipped when it reaches the top, so cancel is O(1) and the common pattern "re-arm
a timeout on every message" costs no heap surgery. The heap is rebuilt when
cancelled slots outnumber live ones, which keeps memory bounded by the live count.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count
from typing import Any, Protocol

__all__ = ["Clock", "Timer", "TimerQueue"]


class Clock(Protocol):
    """A source of time for a kernel's timers, instead of the event loop's
    (:class:`~statemachine_server.testing.VirtualClock` is one)."""

    def time(self) -> float: ...

    def attach(self, kernel: Any) -> None:
        """The kernel made with this clock: from now on the clock fires that
        kernel's timers itself (``kernel.next_timer_due()``, ``kernel.fire_due(now)``)."""


class Timer:
    """One pending timer. ``target`` receives ``event`` with ``args``; a timer
    without a target calls ``event`` (a callable) with ``args`` instead."""

    __slots__ = ("args", "event", "every", "id", "name", "target", "when")

    def __init__(
        self,
        tid: int,
        when: float,
        target: Any,
        event: str | Callable[..., Any],
        args: tuple[Any, ...],
        every: float | None,
        name: str | None,
    ):
        self.id = tid
        self.when = when
        self.target = target
        self.event = event
        self.args = args
        self.every = every
        self.name = name

    def __repr__(self) -> str:
        return f"<Timer {self.id} {self.event!r} at {self.when:.3f}>"


class TimerQueue:
    """The timers of one kernel, earliest first."""

    __slots__ = ("_entries", "_heap", "_ids")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._entries: dict[int, Timer] = {}
        self._ids = count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tid: object) -> bool:
        return tid in self._entries

    def get(self, tid: int) -> Timer | None:
        return self._entries.get(tid)

    def add(
        self,
        when: float,
        target: Any,
        event: str | Callable[..., Any],
        args: tuple[Any, ...] = (),
        *,
        every: float | None = None,
        name: str | None = None,
    ) -> Timer:
        if every is not None and not every > 0:
            raise ValueError("a periodic timer's interval must be positive")
        timer = Timer(next(self._ids), when, target, event, args, every, name)
        self._entries[timer.id] = timer
        heapq.heappush(self._heap, (when, timer.id))
        return timer

    def cancel(self, tid: int) -> Timer | None:
        """Remove a timer; returns it, or None if it is not pending."""
        timer = self._entries.pop(tid, None)
        if timer is not None and len(self._heap) > 64 and len(self._heap) > 2 * len(self._entries):
            self._heap = [(t.when, t.id) for t in self._entries.values()]
            heapq.heapify(self._heap)
        return timer

    def next_due(self) -> float | None:
        """The earliest due time, or None when no timer is pending."""
        heap, entries = self._heap, self._entries
        while heap:
            when, tid = heap[0]
            timer = entries.get(tid)
            if timer is not None and timer.when == when:
                return when
            heapq.heappop(heap)  # cancelled (or a periodic timer's old slot)
        return None

    def pop_due(self, now: float) -> Timer | None:
        """The next timer due at or before ``now``, or None.

        A one-shot timer leaves the queue. A periodic one stays, re-armed for its
        next period after ``now`` (periods missed while the process was busy are
        skipped, not fired in a burst: Twisted's LoopingCall does the same).
        """
        when = self.next_due()
        if when is None or when > now:
            return None
        _, tid = heapq.heappop(self._heap)
        timer = self._entries[tid]
        if timer.every is None:
            del self._entries[tid]
        else:
            missed = int((now - when) // timer.every)
            timer.when = when + (missed + 1) * timer.every
            heapq.heappush(self._heap, (timer.when, tid))
        return timer
