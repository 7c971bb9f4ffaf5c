"""The kernel's timers: its clock, and posting events at a time (POE's ``delay`` and ``alarm``).

A part of :class:`~.kernel.Kernel` (a base class of it, as a connection's parts
are of the connection), kept apart because it is one concern with its own
state: the queue of pending timers (:mod:`.timers`) and the one loop wake-up
armed for the earliest. What it shares with the rest of the kernel is declared
here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from .running import running_loop_or_none
from .session import Session
from .timers import Clock, Timer, TimerQueue

__all__ = ["NEVER", "KernelTimers"]

#: No timer pending: the time the loop is never woken at.
NEVER = float("inf")


class KernelTimers:
    """Timers, for the kernel (see the module docstring)."""

    _clock: Clock | None
    _loop: asyncio.AbstractEventLoop | None
    _timers: TimerQueue
    _timer_handle: asyncio.TimerHandle | None
    _timer_due: float

    if TYPE_CHECKING:  # defined by the Kernel, called here

        def _current(self) -> Session: ...

        def release(self, session: Session) -> None: ...

        def enqueue(self, session: Session, event: Any, args: tuple[Any, ...]) -> None: ...

        def running_loop(self) -> asyncio.AbstractEventLoop: ...

    def time(self) -> float:
        """The kernel's clock, for :meth:`alarm`: the loop's monotonic clock, or the
        virtual clock the kernel was made with."""
        if self._clock is not None:
            return self._clock.time()
        loop = self._loop or running_loop_or_none()
        # Before the loop runs: the same monotonic clock the standard loop reads.
        return loop.time() if loop is not None else monotonic()

    def delay(
        self,
        seconds: float,
        event: str,
        *args: Any,
        session: Session | None = None,
        every: float | None = None,
    ) -> int:
        """Post ``event`` to a session (the current one by default) after ``seconds``.

        Args:
            every: make it periodic: after the first firing, once every ``every``
                seconds until cancelled (periods missed while busy are skipped).

        Returns:
            A timer id for :meth:`cancel`.
        """
        return self.alarm(self.time() + seconds, event, *args, session=session, every=every)

    def alarm(
        self,
        when: float,
        event: str,
        *args: Any,
        session: Session | None = None,
        every: float | None = None,
    ) -> int:
        """Post ``event`` at the absolute time ``when`` on :meth:`time`'s clock."""
        return self.add_timer(when, session or self._current(), event, args, every, None)

    def add_timer(
        self,
        when: float,
        target: Session,
        event: str | Callable[..., Any],
        args: tuple[Any, ...] = (),
        every: float | None = None,
        name: str | None = None,
    ) -> int:
        """Post ``event`` (a name, or a callable run as the session's event) to
        ``target`` at ``when``: :meth:`alarm` without its checks. A session's
        :meth:`~.session.Session.timer` passes its ``name``."""
        timer = self._timers.add(when, target, event, args, every=every, name=name)
        if target.timer_ids is None:
            target.timer_ids = set()
        target.timer_ids.add(timer.id)
        target.refcount += 1  # a pending timer keeps its session alive (POE's rule)
        if when < self._timer_due:
            self._arm()
        return timer.id

    def cancel(self, timer_id: int) -> bool:
        """Cancel a pending timer. Returns False if it already fired or is unknown."""
        timer = self._timers.cancel(timer_id)
        if timer is None:
            return False
        self._forget(timer)
        return True

    def timer_due(self, timer_id: int) -> float | None:
        """When a pending timer fires, or None if it is not pending."""
        timer = self._timers.get(timer_id)
        return None if timer is None else timer.when

    def next_timer_due(self) -> float | None:
        """When the earliest pending timer fires, or None (for a virtual clock)."""
        return self._timers.next_due()

    def _forget(self, timer: Timer) -> None:
        # A one-shot timer fired, or a timer was cancelled: its session's books.
        session = timer.target
        session.timer_ids.discard(timer.id)
        if timer.name is not None and session.named_timers is not None:
            session.named_timers.pop(timer.name, None)
        self.release(session)

    def _arm(self) -> None:
        # One loop wake-up, for the earliest timer; re-armed when an earlier one
        # is added or this one fires. A virtual clock fires timers itself.
        due = self._timers.next_due()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        self._timer_due = NEVER if due is None else due
        if due is not None and self._clock is None:
            loop = self._loop or running_loop_or_none()
            if loop is not None:  # else serve() arms it when the loop starts
                self._loop = loop
                self._timer_handle = loop.call_at(due, self._on_timers)

    def _on_timers(self) -> None:
        self._timer_handle = None
        # A loop may wake a little early (uvloop's timers have millisecond grain):
        # timers due within that grain fire now rather than spin the loop.
        loop = self.running_loop()
        self.fire_due(self.time() + getattr(loop, "_clock_resolution", 0.001))

    def fire_due(self, now: float) -> None:
        """Queue the events of every timer due at ``now`` (a virtual clock calls this)."""
        timers = self._timers
        while (timer := timers.pop_due(now)) is not None:
            session = timer.target
            # Timer events go through the queue like any other; post before any
            # release so the session stays alive to receive it.
            self.enqueue(session, timer.event, timer.args)  # type: ignore[arg-type]
            if timer.every is None:
                self._forget(timer)
        self._arm()
