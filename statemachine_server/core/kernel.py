"""The kernel: one FIFO queue of events, dispatched to sessions (POE::Kernel's role).

Fairness rule
-------------
The kernel runs on an asyncio loop. Each *tick* dispatches a snapshot of the queue:
exactly the events that were queued when the tick began, oldest first. Events posted
during a tick (by handlers, timers or sockets) wait for the next tick. So a session
that keeps posting to itself gets one step per tick and cannot starve the others.
This is trio's run-queue rule, and POE's FIFO made explicit. Sockets are polled
between ticks, at the latest every 0.25 ms: while handlers keep posting, the kernel
runs tick after tick for up to that long before it lets the loop poll, because a
loop iteration costs more than a small tick. (The records of one
socket read share one queue entry and are dispatched in order, one ``input`` event
each: they would sit side by side in the queue anyway.)

At the end of each tick the kernel flushes what the tick produced: every
connection's replies go to its transport in one write, and log lines in one write.
Batching per tick instead of per line is where most of the speed comes from.

Session lifetime
----------------
A session stays alive while something can still reach it: queued events, pending
timers, aliases, or a resource such as an open connection (POE's rule). When the
last of these goes, its ``stopped`` handler runs and it is freed. When no session
is left, :meth:`Kernel.serve` returns.

Isolation
---------
An exception in a handler never leaves the tick: it becomes that session's
``error`` (:meth:`Session._failed`). Connections log it with their id, state and
event, then close; the kernel and every other session go on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from itertools import count
from time import monotonic, perf_counter
from typing import Any, Protocol

import msgspec

from .timers import TimerQueue
from ..work.child import Child
from ..work.job import Cancelled, Job, Offload
from ..work.pools import Pools

__all__ = ["Handler", "Kernel", "KernelStatistics", "Session"]

log = logging.getLogger("statemachine_server")

#: A handler: called as ``handler(session, *args)``; what it returns is what
#: :meth:`Kernel.call` returns.
Handler = Callable[..., Any]

_NEVER = float("inf")
# The standard loop's time(): monotonic() behind one more call (see Kernel._now).
_BASE_TIME = asyncio.BaseEventLoop.time

#: The default work slice: short enough that a client waiting behind chunked work
#: waits about a millisecond, long enough that a tick's fixed cost (a socket poll,
#: tens of microseconds) stays a few percent of the work.
DEFAULT_SLICE = 0.001
#: The share of the slice that work gets in a tick that also dispatched events.
_BUSY_SHARE = 0.25
#: How long the kernel may run tick after tick before the loop polls sockets.
_TICKS_BUDGET = 0.00025

STARTED = "started"
STOPPED = "stopped"
SHUTDOWN = "shutdown"


class Clock(Protocol):
    """A source of time for the kernel's timers (see :class:`~.testing.VirtualClock`)."""

    def time(self) -> float: ...

    def _attach(self, kernel: Kernel) -> None: ...


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


class Session:
    """A unit of work with its own heap and handlers (POE::Session).

    Args:
        kernel: the kernel it lives in.
        handlers: event name to handler, each called as ``handler(session, *args)``.
            ``started`` runs at creation, ``stopped`` when the session is freed,
            ``error`` (with the exception) when another handler raised,
            ``shutdown`` when the kernel begins a graceful shutdown.
        heap: the session's private storage; a new dict by default.
        alias: a name other sessions can post to; an alias keeps the session alive.

    Attributes:
        id: unique, positive, never reused within a kernel.
        heap: storage that lives as long as the session.
        state: ``"running"`` or ``"stopped"`` for plain sessions; connections
            report their lifecycle state.
    """

    __slots__ = (
        "__weakref__", "_handlers", "_named", "_plain", "_refs", "_timers", "heap", "id", "kernel",
        "state",
    )  # fmt: skip
    _plain: bool  # set by Kernel._register

    def __init__(
        self,
        kernel: Kernel,
        handlers: dict[str, Handler] | None = None,
        *,
        heap: dict[str, Any] | None = None,
        alias: str | None = None,
    ):
        self.kernel = kernel
        self.heap: dict[str, Any] = {} if heap is None else heap
        self._handlers = handlers or {}
        self._refs = 0
        self._timers: set[int] | None = None
        self._named: dict[str, int] | None = None
        self.state = "running"
        self.id = kernel._register(self)
        if alias is not None:
            kernel.alias_set(alias, self)
        self._start()

    def _start(self) -> None:
        # POE runs _start synchronously, inside create(): so do we.
        handler = self._handlers.get(STARTED)
        if handler is not None:
            self.kernel._call_now(self, STARTED, ())
        if self._refs == 0:
            self.kernel._stop_session(self)

    def _deliver(self, event: Any, args: tuple[Any, ...]) -> Any:
        if event.__class__ is not str:  # a callable queued by a timer or a job
            return event(*args)  # type: ignore[operator]
        handler = self._handlers.get(event)
        if handler is None:
            if self.kernel.trace:
                log.debug("session %d: no handler for %r", self.id, event)
            return None
        return handler(self, *args)

    def _failed(self, event: str, exc: BaseException) -> None:
        handler = self._handlers.get("error")
        if handler is not None and event != "error":
            try:
                handler(self, exc)
                return
            except Exception as again:  # the error handler itself is broken
                exc = again
        log.error(
            "session %d: handler for %r raised %s: %s",
            self.id, event, type(exc).__name__, exc, exc_info=exc,
        )  # fmt: skip

    def _shutdown(self) -> None:
        if SHUTDOWN in self._handlers:
            self.kernel._post(self, SHUTDOWN, ())

    def _abort(self) -> None:
        """Cut off at once (a shutdown past its deadline). Plain sessions just stop."""

    def _stopped(self) -> None:
        self.state = "stopped"
        if STOPPED in self._handlers:
            self.kernel._call_now(self, STOPPED, ())

    def post(self, event: str, *args: Any) -> None:
        """Queue ``event`` for this session."""
        self.kernel._post(self, event, args)

    def work(
        self,
        job: Iterator[Any] | Offload,
        on_done: Callable[..., Any] | None = None,
        *,
        on_progress: Callable[..., Any] | None = None,
        progress_every: float = 0.5,
        on_error: Callable[..., Any] | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Run a generator as chunked work (see :mod:`statemachine_server.work`).

        ``on_done(session, result)`` gets its return value; ``on_progress(session,
        value)`` what it yields (rate-limited); ``on_error(session, exc)`` its
        exception, a :class:`~.work.WorkTimeout` after ``timeout`` seconds, or a
        :class:`~.work.Cancelled`; without ``on_error`` those are the session's
        error event.
        """
        started = Job(
            self, job, on_done,
            on_progress=on_progress, progress_every=progress_every, on_error=on_error,
        )  # fmt: skip
        self._refs += 1  # a job keeps its session alive until it ends
        if timeout is not None:
            started.set_timeout(timeout)
        self.kernel._schedule_work(started)
        return started

    def _work_done(self, job: Job, result: Any) -> None:
        try:
            if job.on_done is not None:
                self.kernel._call_now(self, job.on_done, (self, result))
        finally:
            self.kernel._release(self)

    def _work_failed(self, job: Job, exc: BaseException) -> None:
        try:
            if job.on_error is not None:
                self.kernel._call_now(self, job.on_error, (self, exc))
            elif not isinstance(exc, Cancelled):
                self.kernel._errors += 1
                self._failed("work", exc)
        finally:
            self.kernel._release(self)

    def run_process(self, argv: Sequence[str], **options: Any) -> Child:
        """Start a child process; its output lines and exit come as queued events.

        See :class:`~.work.child.Child` for ``options`` (``stdin``, ``on_stdout``,
        ``on_stderr``, ``on_exit``, ``on_error``, ``max_line``, ``kill_grace``).

        Raises:
            LimitReached: the server runs ``max_children`` children already.
        """
        return Child(self, argv, **options)

    def timer(
        self, event: str, seconds: float | None, *args: Any, every: float | None = None
    ) -> int | None:
        """Set this session's timer named ``event``: post ``event`` in ``seconds``.

        A session has at most one timer per name: setting it again replaces it, and
        ``seconds=None`` clears it (POE's ``delay``). With ``every`` it repeats.

        Returns:
            The timer id, or None when it was cleared.
        """
        kernel = self.kernel
        named = self._named
        if named is not None and event in named:
            kernel.cancel(named[event])
        if seconds is None:
            return None
        if named is None:
            named = self._named = {}
        tid = kernel._add_timer(kernel.time() + seconds, self, event, args, every, event)
        named[event] = tid
        return tid

    def timers(self) -> dict[str, float]:
        """This session's named timers: name to due time on the kernel's clock."""
        if not self._named:
            return {}
        found = {name: self.kernel._timers.get(tid) for name, tid in self._named.items()}
        return {name: timer.when for name, timer in found.items() if timer is not None}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state}>"


class Kernel:
    """The event queue, the timers and the session registry.

    Args:
        trace: log every dispatch and every lifecycle transition (``--trace``).
        clock: where timers get the time; the event loop's clock by default. A
            :class:`~.testing.VirtualClock` makes time-based tests instant.

    A kernel can be driven by :meth:`run` (for scripts: it owns the loop and the
    signals) or awaited with :meth:`serve` inside an existing asyncio program.
    """

    def __init__(
        self, *, trace: bool = False, clock: Clock | None = None, slice: float = DEFAULT_SLICE
    ):
        if not slice > 0:
            raise ValueError("slice must be a positive number of seconds")
        self.trace = trace
        #: Seconds of chunked work per tick, shared by the runnable jobs.
        self.slice = slice
        # Jobs that can run a step now, in turn order (see statemachine_server.work).
        self._runnable: deque[Job] = deque()
        self._pool: Pools | None = None
        self._jobs = 0  # jobs alive
        # (session, event name or a callable, args): see Session._deliver.
        self._queue: deque[tuple[Session, Any, tuple[Any, ...]]] = deque()
        self._sessions: dict[int, Session] = {}
        self._aliases: dict[str, Session] = {}
        self._ids: Iterator[int] = count(1)
        self._clock = clock
        # What Connection reads at every read (the idle timeout's "last heard"):
        # the monotonic clock the standard loop's time() returns, called directly.
        # Another loop's own clock replaces it when the kernel starts serving.
        self._now: Callable[[], float] = monotonic if clock is None else clock.time
        self._timers = TimerQueue()
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_due = _NEVER  # when the loop wakes us for timers next
        if clock is not None:
            clock._attach(self)
        # Objects with a ``flush()`` method, flushed once at the end of the tick.
        self._dirty: list[Any] = []
        # Called at the end of every tick (e.g. the console log's flush).
        self._tick_hooks: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._starters: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._stopping: list[Callable[[], None]] = []
        self._finished: asyncio.Future[None] | None = None
        self._shutting_down = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: The session whose handler is running, or None between handlers.
        self.current: Session | None = None
        self._dispatched = 0
        self._ticks = 0
        self._errors = 0

    # -- sessions -------------------------------------------------------------

    def spawn(
        self,
        handlers: dict[str, Handler],
        *,
        heap: dict[str, Any] | None = None,
        alias: str | None = None,
    ) -> Session:
        """Create a session from a dict of handlers (POE's ``inline_states``)."""
        return Session(self, handlers, heap=heap, alias=alias)

    def _register(self, session: Session) -> int:
        # Whether _tick may call the session's handlers without _deliver: not
        # where its class has its own (Connection). A slot, read per event, set
        # here since every session registers, Session.__init__ or not.
        session._plain = type(session)._deliver is Session._deliver
        sid = next(self._ids)
        self._sessions[sid] = session
        return sid

    def session(self, target: Session | int | str) -> Session | None:
        """Find a live session by object, id or alias; None if there is none."""
        if isinstance(target, Session):
            return target if self._sessions.get(target.id) is target else None
        if isinstance(target, str):
            return self._aliases.get(target)
        return self._sessions.get(target)

    def alias_set(self, alias: str, session: Session | None = None) -> None:
        """Name a session (the current one by default). An alias keeps it alive."""
        session = session or self._current()
        other = self._aliases.get(alias)
        if other is session:
            return
        if other is not None:
            raise ValueError(f"alias {alias!r} is taken by session {other.id}")
        self._aliases[alias] = session
        session._refs += 1

    def alias_remove(self, alias: str) -> None:
        """Drop an alias; the session ends if nothing else keeps it alive."""
        session = self._aliases.pop(alias)
        self._release(session)

    def _release(self, session: Session) -> None:
        session._refs -= 1
        if session._refs == 0:
            self._stop_session(session)

    def _stop_session(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        for alias in [a for a, s in self._aliases.items() if s is session]:
            del self._aliases[alias]
        if session._timers:
            for tid in session._timers:
                self._timers.cancel(tid)
            session._timers = None
        session._named = None
        try:
            session._stopped()
        except Exception as exc:
            self._errors += 1
            log.error("session %d: stopped handler raised %r", session.id, exc, exc_info=exc)
        if not self._sessions and self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    def _current(self) -> Session:
        if self.current is None:
            raise RuntimeError("no current session: call this from inside a handler")
        return self.current

    # -- events ---------------------------------------------------------------

    def post(self, target: Session | int | str, event: str, *args: Any) -> bool:
        """Queue ``event`` for a session, found by object, id or alias.

        Returns:
            False if there is no such live session (the event is dropped).
        """
        session = self.session(target)
        if session is None:
            return False
        self._post(session, event, args)
        return True

    def yield_(self, event: str, *args: Any) -> None:
        """Queue ``event`` for the current session (POE's ``yield``)."""
        session = self.current
        if session is None:
            raise RuntimeError("no current session: call this from inside a handler")
        # _post, inlined: a session yielding to itself is POE's way to chunk work.
        session._refs += 1
        self._queue.append((session, event, args))
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._run_ticks)

    def call(self, target: Session | int | str, event: str, *args: Any) -> Any:
        """Run the handler for ``event`` now, synchronously, and return its value.

        Raises:
            LookupError: there is no such live session.
        """
        session = self.session(target)
        if session is None:
            raise LookupError(f"no session {target!r}")
        return self._call_now(session, event, args)

    def _call_now(
        self, session: Session, event: str | Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        previous, self.current = self.current, session
        try:
            return session._deliver(event, args)
        except Exception as exc:
            self._errors += 1
            session._failed(event if isinstance(event, str) else "work", exc)
            return None
        finally:
            self.current = previous

    def _post(
        self, session: Session, event: str | Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        session._refs += 1
        self._queue.append((session, event, args))
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._run_ticks)

    def mark_dirty(self, item: Any) -> None:
        """Have ``item.flush()`` called once at the end of this tick (its output is
        written in one go); sets ``item.dirty``, which the caller tests first."""
        item.dirty = True
        self._dirty.append(item)
        if self.current is None:  # not from a handler: no tick will flush it
            self._wake()

    def _wake(self) -> None:
        """Make sure a tick runs soon (for output put from outside any handler)."""
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._run_ticks)

    def _run_ticks(self) -> None:
        # The loop's callback. One tick; then, while handlers keep posting (a
        # session yielding to itself, say), more ticks for up to _TICKS_BUDGET
        # before the loop polls sockets again: one loop iteration costs more than
        # a small tick, and a socket waits at most that long for its poll.
        self._scheduled = True  # posts during these ticks need no new callback
        queue = self._queue
        self._tick()
        if queue and not self._runnable:
            deadline = perf_counter() + _TICKS_BUDGET
            while True:
                self._tick()
                if not queue or self._runnable or perf_counter() >= deadline:
                    break
        if (queue or self._runnable) and self._loop is not None:
            self._loop.call_soon(self._run_ticks)
        else:
            self._scheduled = False

    def _tick(self) -> None:
        # Dispatch the snapshot: len() is taken once, so what handlers post now
        # lands behind it and waits for the next tick (see the fairness rule).
        self._ticks += 1
        queue = self._queue
        popleft = queue.popleft
        n = len(queue)
        for _ in range(n):
            session, event, args = popleft()
            self.current = session
            try:
                # Session._deliver inlined for plain sessions' named events (a call
                # fewer per event); connections run their lifecycle table.
                handler = (
                    session._handlers.get(event)
                    if session._plain and event.__class__ is str
                    else None
                )
                if handler is not None:
                    handler(session, *args)
                else:
                    session._deliver(event, args)
            except Exception as exc:
                self._errors += 1
                session._failed(event, exc)
            refs = session._refs - 1
            session._refs = refs
            if not refs:
                self._stop_session(session)
        self.current = None
        self._dispatched += n
        if self._dirty:
            self._flush_dirty()
        if self._runnable:
            # Work runs last, after the replies of this tick's events are written:
            # a slice never holds back an answer that is ready.
            # A tick that served events gives work a shorter slice: clients are
            # waiting, and each of them waits for the slice (an interactive boost).
            self._run_work(self.slice * _BUSY_SHARE if n else self.slice)
            if self._dirty:
                self._flush_dirty()
        for hook in self._tick_hooks:
            try:
                hook()
            except Exception as exc:  # e.g. stdout closed under the console log
                self._errors += 1
                log.error("end-of-tick hook %r raised %r", hook, exc)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for item in dirty:
            try:
                item.flush()
            except Exception as exc:  # a bug below us: cost that session, not the loop
                self._errors += 1
                log.error("session %d: writing its output raised %r; aborting it",
                          item.id, exc, exc_info=exc)  # fmt: skip
                item._abort()

    def _busy(self) -> bool:
        """Anything to do at the next tick: events, runnable work, or output."""
        return bool(self._queue or self._runnable or self._dirty)

    # -- chunked work -----------------------------------------------------------

    def _schedule_work(self, job: Job) -> None:
        if not job.queued:
            job.queued = True
            self._runnable.append(job)
            self._wake()

    def _run_work(self, budget: float) -> None:
        # Round robin within one slice: the job at the head steps until the slice
        # is used (then it goes to the back, so the next tick starts with the
        # next job) or until it ends or waits (then the next job gets the rest).
        runnable = self._runnable
        deadline = perf_counter() + budget
        for _ in range(len(runnable)):
            job = runnable[0]
            session = self.current = job.session
            try:
                more = job.run(deadline)
            except Exception as exc:  # raised by on_done / on_error: the session's error
                self._errors += 1
                session._failed("work", exc)
                more = False
            finally:
                self.current = None
            if more:
                runnable.rotate(-1)
                break
            job.queued = False
            runnable.popleft()  # nothing goes in at the front, so it is still there
            if perf_counter() >= deadline:
                break

    def _pools(self) -> Pools:
        if self._pool is None:
            self._pool = Pools(self)
        return self._pool

    # -- timers ---------------------------------------------------------------

    def time(self) -> float:
        """The kernel's clock, for :meth:`alarm`: the loop's monotonic clock, or the
        virtual clock the kernel was made with."""
        if self._clock is not None:
            return self._clock.time()
        loop = self._loop or _running_loop_or_none()
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
        return self._add_timer(when, session or self._current(), event, args, every, None)

    def _add_timer(
        self,
        when: float,
        target: Session,
        event: str | Callable[..., Any],
        args: tuple[Any, ...],
        every: float | None,
        name: str | None,
    ) -> int:
        timer = self._timers.add(when, target, event, args, every=every, name=name)
        if target._timers is None:
            target._timers = set()
        target._timers.add(timer.id)
        target._refs += 1  # a pending timer keeps its session alive (POE's rule)
        if when < self._timer_due:
            self._arm()
        return timer.id

    def cancel(self, timer_id: int) -> bool:
        """Cancel a pending timer. Returns False if it already fired or is unknown."""
        timer = self._timers.cancel(timer_id)
        if timer is None:
            return False
        session = timer.target
        session._timers.discard(timer_id)
        if timer.name is not None and session._named is not None:
            session._named.pop(timer.name, None)
        self._release(session)
        return True

    def _arm(self) -> None:
        # One loop wake-up, for the earliest timer; re-armed when an earlier one
        # is added or this one fires. A virtual clock fires timers itself.
        due = self._timers.next_due()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        self._timer_due = _NEVER if due is None else due
        if due is not None and self._clock is None:
            loop = self._loop or _running_loop_or_none()
            if loop is not None:  # else serve() arms it when the loop starts
                self._loop = loop
                self._timer_handle = loop.call_at(due, self._on_timers)

    def _on_timers(self) -> None:
        self._timer_handle = None
        # A loop may wake a little early (uvloop's timers have millisecond grain):
        # timers due within that grain fire now rather than spin the loop.
        loop = self._running_loop()
        self._fire_due(self.time() + getattr(loop, "_clock_resolution", 0.001))

    def _fire_due(self, now: float) -> None:
        timers = self._timers
        while (timer := timers.pop_due(now)) is not None:
            session = timer.target
            # Timer events go through the queue like any other; post before any
            # release so the session stays alive to receive it.
            self._post(session, timer.event, timer.args)  # type: ignore[arg-type]
            if timer.every is None:
                session._timers.discard(timer.id)
                if timer.name is not None and session._named is not None:
                    session._named.pop(timer.name, None)
                self._release(session)
        self._arm()

    # -- running --------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _on_serve(self, starter: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``starter`` when the kernel starts serving (now, if it already is)."""
        if self._finished is not None:
            self._running_loop().create_task(starter())
        else:
            self._starters.append(starter)

    def _on_shutdown(self, hook: Callable[[], None]) -> None:
        self._stopping.append(hook)

    async def serve(self) -> None:
        """Dispatch events until no session is left or :meth:`stop` is called."""
        self._loop = asyncio.get_running_loop()
        # Any loop whose time() is not the standard one (uvloop's, or a loop whose
        # time was replaced on the instance): read its clock, not monotonic().
        loop_time = self._loop.time
        if self._clock is None:
            standard = getattr(loop_time, "__func__", None) is _BASE_TIME
            self._now = monotonic if standard else loop_time
        self._finished = self._loop.create_future()
        starters, self._starters = self._starters, []
        for starter in starters:
            await starter()
        if self._busy() and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run_ticks)
        if self._timers and self._timer_handle is None:
            self._arm()  # timers set before the loop ran
        try:
            if self._sessions:
                await self._finished
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def stop(self) -> None:
        """Stop serving at once; :meth:`serve` returns. Nothing is drained."""
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    async def shutdown(self, deadline: float = 5.0) -> None:
        """Stop gracefully: stop accepting, answer input already received, close.

        Every session is asked to finish (connections get a queued ``close``, so the
        input ahead of it is still answered; sessions with a ``shutdown`` handler get
        that event). After ``deadline`` seconds whatever is left is cut off.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        for hook in self._stopping:
            hook()
        for session in list(self._sessions.values()):
            session._shutdown()
        if self._finished is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._finished), deadline)
        except TimeoutError:
            log.warning(
                "shutdown: %d sessions still busy after %.1fs", len(self._sessions), deadline
            )
            for session in list(self._sessions.values()):
                session._abort()
            self.stop()

    def run(
        self, *, loop: str = "asyncio", handle_signals: bool = True, drain_timeout: float = 5.0
    ) -> None:
        """Run until no session is left: the entry point for scripts.

        Args:
            loop: ``"asyncio"`` (the standard loop) or ``"uvloop"`` (needs the
                ``fast`` extra).
            handle_signals: the first SIGINT/SIGTERM shuts down gracefully, a
                second one stops at once.
            drain_timeout: how long that graceful shutdown may take.
        """
        factory = loop_factory(loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self._run_main(handle_signals, drain_timeout))

    async def _run_main(self, handle_signals: bool, drain_timeout: float) -> None:
        if handle_signals:
            self.install_signal_handlers(drain_timeout)
        await self.serve()

    def install_signal_handlers(self, drain_timeout: float = 5.0) -> None:
        """First SIGINT/SIGTERM: graceful :meth:`shutdown`; the second: :meth:`stop`."""
        loop = self._running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def on_signal(signum: int) -> None:
            if self._shutting_down:
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                self.stop()
                return
            log.info("%s: shutting down", signal.Signals(signum).name)
            task = loop.create_task(self.shutdown(drain_timeout))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)

    def statistics(self) -> KernelStatistics:
        """Counters for monitoring and tests."""
        return KernelStatistics(
            sessions=len(self._sessions),
            queue_depth=len(self._queue),
            events_dispatched=self._dispatched,
            timers_pending=len(self._timers),
            ticks=self._ticks,
            handler_errors=self._errors,
            jobs=self._jobs,
            jobs_runnable=sum(1 for job in self._runnable if not job.held and not job.finished),
            pool_calls=self._pool.statistics()[0] if self._pool else 0,
            pool_waiting=self._pool.statistics()[1] if self._pool else 0,
        )

    def sessions(self) -> list[Session]:
        """The live sessions, oldest first."""
        return list(self._sessions.values())


def _running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``--loop NAME``.

    Raises:
        ValueError: an unknown name, or uvloop is not installed.
    """
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ValueError(
                "--loop uvloop needs uvloop: pip install 'statemachine-server[fast]'"
            ) from None
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    raise ValueError(f"unknown loop {name!r}: expected 'asyncio' or 'uvloop'")
