"""Chunked work: a generator run one slice at a time between the kernel's ticks.

A job is a plain generator. Each ``next()`` is one *step*. The kernel runs the
runnable jobs in the last phase of every tick, after the tick's events and after
their replies are flushed, for at most one *slice* in total: a job steps until
the slice is used, then the loop polls sockets and the next tick handles whatever
arrived. So a job never delays a reply that is ready, and a client waits at most
about one slice for its turn. The slice is ``Kernel(slice=...)`` (1 ms) when the
tick had nothing else to do, and a quarter of it when the tick served events:
while clients are active they come first (an interactive boost, as schedulers
give), and the job still advances every tick. Jobs take turns: the one that used
up the slice goes to the back of the line.

Cheap steps do not pay one event each (a slice runs as many as fit) and a step
that is slow only delays others by its own length: chunk accordingly.

What a step may yield:

* ``None``: nothing to report; keep going;
* :func:`sleep` ``(seconds)``: park the job on a kernel timer, without blocking;
* :func:`in_thread` / :func:`in_process` ``(fn, *args)``: run ``fn`` in a pool and
  get its result back as the value of the ``yield`` (or its exception raised there);
* anything else: progress, passed to ``on_progress`` at most once per
  ``progress_every`` seconds (the values in between are dropped).

The job's return value goes to ``on_done``. An exception inside a step, a timeout
or a cancel goes to ``on_error`` if given, else it is the session's error event,
as for a handler. Closing a job (the client left, the server shuts down) closes
the generator, so its ``finally`` blocks run.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from time import perf_counter
from typing import Any

from ..errors import StateMachineServerError
from .child import Child
from .host import Host, Owner

__all__ = [
    "Cancelled",
    "Job",
    "Offload",
    "Sleep",
    "WorkTimeout",
    "in_process",
    "in_thread",
    "sleep",
]

_MAX_STRIDE = 1024

# Why a job is not runnable now; it runs again when no reason is left.
HELD_SLEEP = 1
HELD_POOL = 2
HELD_BACKLOG = 4
HELD_CHILD = 8


class WorkTimeout(StateMachineServerError):
    """A job ran past its ``timeout``; it was closed."""


class Cancelled(StateMachineServerError):
    """A job was closed before it finished (for example, the server shut down)."""


class Sleep:
    """Yielded by a step: resume the job after ``seconds`` (see :func:`sleep`)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        if not seconds >= 0:
            raise ValueError("sleep needs a non-negative number of seconds")
        self.seconds = seconds


class Offload:
    """Yielded by a step: run ``fn(*args)`` in a thread or process pool."""

    __slots__ = ("args", "fn", "where")

    def __init__(self, where: str, fn: Callable[..., Any], args: tuple[Any, ...]):
        self.where = where
        self.fn = fn
        self.args = args


def sleep(seconds: float) -> Sleep:
    """``yield sleep(s)`` inside a job: wait ``s`` seconds on a timer, not the CPU."""
    return Sleep(seconds)


def in_thread(fn: Callable[..., Any], *args: Any) -> Offload:
    """``result = yield in_thread(fn, *args)``: for blocking calls that release the
    GIL (file and DNS I/O, hashing of big buffers, C extensions)."""
    return Offload("thread", fn, args)


def in_process(fn: Callable[..., Any], *args: Any) -> Offload:
    """``result = yield in_process(fn, *args)``: for CPU-bound work that cannot be
    chunked. ``fn`` and its arguments must be picklable (a module-level function)."""
    return Offload("process", fn, args)


def _offloaded(marker: Offload) -> Generator[Any, Any, Any]:
    return (yield marker)


class Job:
    """One running generator, owned by one session. Made by ``session.work()``."""

    __slots__ = (
        "_last_progress", "_send", "_stride", "_throw", "_timeout", "cancel_pending", "deadline",
        "finished", "gen", "held", "kernel", "on_done", "on_error", "on_progress", "progress_every",
        "queued", "session", "steps", "time_limit",
    )  # fmt: skip

    def __init__(
        self,
        session: Owner,
        job: Iterator[Any] | Offload,
        on_done: Callable[..., Any] | None = None,
        *,
        on_progress: Callable[..., Any] | None = None,
        progress_every: float = 0.5,
        on_error: Callable[..., Any] | None = None,
    ):
        if isinstance(job, Offload):
            job = _offloaded(job)
        if not hasattr(job, "send"):
            job = _steps(job)  # any iterator: steps are its items
        self.session = session
        self.kernel: Host = session.kernel
        self.gen: Generator[Any, Any, Any] = job  # type: ignore[assignment]
        self.on_done = on_done
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.on_error = on_error
        self.held = 0
        self.queued = False
        self.finished = False
        self.cancel_pending: Callable[[], object] | None = None  # undoes what holds the job
        self.steps = 0
        self._send: Any = None
        self._throw: BaseException | None = None
        self._last_progress = float("-inf")
        self._timeout = 0
        #: The ``timeout`` in seconds, and when it ends on the perf_counter clock:
        #: the watchdog interrupts a step still running then (see core.running).
        self.time_limit = 0.0
        self.deadline = float("inf")
        self._stride = 1  # steps between clock reads; adapted in run()
        self.kernel.jobs += 1

    def __repr__(self) -> str:
        state = "finished" if self.finished else f"held={self.held}" if self.held else "runnable"
        return f"<Job of session {self.session.id}: {self.steps} steps, {state}>"

    # -- driven by the kernel -----------------------------------------------------

    def run(self, deadline: float) -> bool:
        """Step until ``deadline`` (a perf_counter time), the end, or a hold.

        Returns:
            True if the job is still runnable (it used up the slice).
        """
        if self.finished or self.held:
            return False
        send = self.gen.send
        # Reading the clock after every step would cost tiny steps ~10%: read it
        # every ``stride`` steps, a stride sized (below) from the steps' measured
        # length so that a slice overruns by at most about a tenth.
        stride = self._stride
        countdown = stride
        steps = 1
        started = perf_counter()
        try:
            # The first step gets what the job waited for: a value, or an exception.
            if self._throw is not None:
                exc, self._throw = self._throw, None
                value = self.gen.throw(exc)
            else:
                value, self._send = send(self._send), None
            while True:
                if value is not None and self._yielded(value):
                    return False
                countdown -= 1
                if not countdown:
                    if self.held or perf_counter() >= deadline:
                        return not self.held
                    countdown = stride
                value = send(None)
                steps += 1
        except StopIteration as stop:
            self._finish(stop.value)
            return False
        except Exception as exc:
            self._fail(exc)
            return False
        finally:
            self.steps += steps
            per_step = max((perf_counter() - started) / steps, 1e-9)
            self._stride = max(1, min(_MAX_STRIDE, int(self.kernel.slice * 0.1 / per_step)))

    def _yielded(self, value: Any) -> bool:
        """Act on a yielded value; True if the job must stop for now (held)."""
        kind = type(value)
        if kind is Sleep:
            self.hold(HELD_SLEEP)
            tid = self.kernel.add_timer(
                self.kernel.time() + value.seconds, self.session, self._woken
            )
            self.cancel_pending = lambda: self.kernel.cancel(tid)
            return True
        if kind is Offload:
            self.hold(HELD_POOL)
            self.kernel.offload(self, value)
            return True
        if kind is Child:
            self.hold(HELD_CHILD)
            if value.status is not None:  # it has exited already: resume next tick
                self.kernel.enqueue(self.session, self.resume, (value.status,))
            else:
                value.add_waiter(self)
            return True
        if self.on_progress is not None:
            now = self.kernel.time()
            if now - self._last_progress >= self.progress_every:
                self._last_progress = now
                self.on_progress(self.session, value)
        return False

    def _woken(self) -> None:
        self.cancel_pending = None
        self.release(HELD_SLEEP)

    def resume(self, value: Any = None, error: BaseException | None = None) -> None:
        """Give the job the value (or exception) of what it waited for, and run it."""
        self.cancel_pending = None
        self._send, self._throw = value, error
        self.release(self.held & (HELD_POOL | HELD_CHILD))

    # -- holds ----------------------------------------------------------------

    def hold(self, reason: int) -> None:
        self.held |= reason

    def release(self, reason: int) -> None:
        self.held &= ~reason
        if not self.held and not self.finished:
            self.kernel.schedule_work(self)

    # -- the end --------------------------------------------------------------

    def _finish(self, result: Any) -> None:
        self._end()
        self.session.work_done(self, result)

    def _fail(self, exc: BaseException) -> None:
        self._end()
        if getattr(self.gen, "gi_frame", None) is not None:  # interrupted between steps
            self.gen.close()
        self.session.work_failed(self, exc)

    def _end(self) -> None:
        self.finished = True
        self.kernel.jobs -= 1
        if self._timeout:
            self.kernel.cancel(self._timeout)
            self._timeout = 0
        if self.cancel_pending is not None:
            pending, self.cancel_pending = self.cancel_pending, None
            pending()

    def set_timeout(self, seconds: float) -> None:
        self.time_limit = seconds
        self.deadline = perf_counter() + seconds
        self._timeout = self.kernel.add_timer(
            self.kernel.time() + seconds, self.session, self._timed_out, (seconds,)
        )

    def _timed_out(self, seconds: float) -> None:
        self._timeout = 0
        if not self.finished:
            self.cancel(WorkTimeout(f"work timed out after {seconds:g} s"))

    def cancel(self, reason: BaseException | None = None) -> None:
        """Stop the job: close the generator (its ``finally`` blocks run).

        With a ``reason`` the session hears of it as a failure (``on_error`` or its
        error event); without one the job just ends (the session is going away).
        """
        if self.finished:
            return
        self._end()
        try:
            self.gen.close()
        except Exception as exc:  # a finally block that raises: report it instead
            reason = exc
        if reason is not None:
            self.session.work_failed(self, reason)


def _steps(items: Iterator[Any]) -> Generator[Any, Any, Any]:
    # A plain iterator as a job: one item per step, no return value.
    yield from items
    return None
