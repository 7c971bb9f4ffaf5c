"""Helpers for testing servers: a virtual clock, and running the kernel by hand.

A kernel made with ``Kernel(clock=VirtualClock())`` takes its time from the clock
and never from the event loop: timers (delays, alarms, periodic timers, idle and
first-byte timeouts, ``sleep`` inside work) fire only when the test moves time on
with :meth:`VirtualClock.advance`. A test of a 5-minute idle timeout then runs in
microseconds and gives the same result every time.

Example::

    clock = VirtualClock()
    kernel = Kernel(clock=clock)
    session = kernel.spawn({"started": lambda s: s.timer("tick", 10), "tick": on_tick})
    clock.advance(9.9)   # nothing yet
    clock.advance(0.1)   # "tick" is queued and, with run_ticks=True, handled
"""

from __future__ import annotations

from .core.kernel import Clock, Kernel

__all__ = ["Clock", "VirtualClock", "drain"]


class VirtualClock(Clock):
    """Time that moves only when told to (a :class:`~.core.kernel.Clock`).

    Args:
        start: the time at creation, in seconds.
    """

    def __init__(self, start: float = 0.0):
        self.now = start
        self._kernels: list[Kernel] = []

    def time(self) -> float:
        return self.now

    def attach(self, kernel: Kernel) -> None:
        self._kernels.append(kernel)

    def advance(self, seconds: float, *, run_ticks: bool = True) -> None:
        """Move time forward by ``seconds``, firing every timer due on the way.

        Timers fire in order, each at its own time (``now`` is set to its due
        time first), so a periodic timer fires once per period passed and what
        a timer's handler sets up fires too if it falls inside the window. With
        ``run_ticks`` the kernel's queue is run after each firing, as the real
        loop would; without it the events are only queued.
        """
        if seconds < 0:
            raise ValueError("time does not go backwards")
        target = self.now + seconds
        while True:
            due = [(d, k) for k in self._kernels if (d := k.next_timer_due()) is not None]
            due = [(d, k) for d, k in due if d <= target]
            if not due:
                break
            when, kernel = min(due, key=lambda item: item[0])
            self.now = max(self.now, when)
            kernel.fire_due(self.now)
            if run_ticks:
                drain(kernel)
        self.now = target
        if run_ticks:
            for kernel in self._kernels:
                drain(kernel)


def drain(kernel: Kernel, max_ticks: int = 100_000) -> int:
    """Run the kernel's ticks until nothing is queued, no work is runnable and no
    output waits to be flushed. Returns the number of ticks run.

    Raises:
        RuntimeError: still busy after ``max_ticks`` (a session posting to itself
            forever, for instance).
    """
    ticks = 0
    while kernel.busy():
        if ticks >= max_ticks:
            raise RuntimeError(f"kernel still busy after {max_ticks} ticks")
        kernel.tick()
        ticks += 1
    return ticks
