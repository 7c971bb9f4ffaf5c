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
``error`` (:meth:`Kernel.handler_failed`, the one place every layer reports one).
Connections log it with their id, state and event, then close; the kernel and
every other session go on.

The component interface
-----------------------
The layers above (sessions in :mod:`.session`, connections and servers in
:mod:`statemachine_server.net`, jobs and children in :mod:`statemachine_server.work`,
a spec's generated code) use only the kernel's public methods: :meth:`Kernel.enqueue`,
:meth:`Kernel.deliver_now`, :meth:`Kernel.handler_failed`, :meth:`Kernel.retain` /
:meth:`Kernel.release`, :meth:`Kernel.add_timer`, :meth:`Kernel.mark_dirty`,
:meth:`Kernel.wake`, :meth:`Kernel.schedule_work`, :meth:`Kernel.offload`,
:meth:`Kernel.on_serve`, :meth:`Kernel.track_task`... (trio's ``lowlevel``).

The timers (the clock, ``delay``, ``alarm``, the one loop wake-up for the earliest)
are a part of their own, :mod:`.kernel_timers`, a base class of the kernel; the
queue and the run loop stay here together, as they share the tick's state
(``_scheduled``, the loop, the dirty list).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from itertools import count
from time import monotonic, perf_counter
from typing import Any, cast

from ..work.child import kill_children
from ..work.job import Job, Offload
from ..work.pools import Pools
from .kernel_timers import NEVER as _NEVER
from .kernel_timers import KernelTimers
from .running import DEFAULT_WATCHDOG, Watchdog, install_signal_handlers, run
from .session import SHUTDOWN, STARTED, STOPPED, Handler, Session
from .statistics import KernelStatistics
from .timers import Clock, TimerQueue

__all__ = [
    "SHUTDOWN", "STARTED", "STOPPED", "Clock", "Handler", "Kernel", "KernelStatistics", "Session",
]  # fmt: skip

log = logging.getLogger("statemachine_server")

# The standard loop's time(): monotonic() behind one more call (see Kernel.read_clock).
_BASE_TIME = asyncio.BaseEventLoop.time

#: The default work slice: short enough that a client waiting behind chunked work
#: waits about a millisecond, long enough that a tick's fixed cost (a socket poll,
#: tens of microseconds) stays a few percent of the work.
DEFAULT_SLICE = 0.001
#: The share of the slice that work gets in a tick that also dispatched events.
_BUSY_SHARE = 0.25
#: How long the kernel may run tick after tick before the loop polls sockets.
_TICKS_BUDGET = 0.00025


class Kernel(KernelTimers):
    """The event queue, the timers and the session registry.

    Args:
        trace: log every dispatch and every lifecycle transition (``--trace``).
        clock: where timers get the time; the event loop's clock by default. A
            :class:`~.testing.VirtualClock` makes time-based tests instant.
        slice: seconds of chunked work per tick.
        watchdog: seconds a handler, call or work step may hold the loop before a
            thread logs its stack and session (once per stall) and counts it in
            ``statistics().stalls``; that thread also interrupts a work step still
            running past its ``timeout``. 0: no thread, neither is done.
        session_ids: the first session id and the step between ids (``(1, 1)``:
            1, 2, 3...). Kernels in several processes serving one port take
            ``(lane + 1, lanes)``, so that their ids never meet (``run --workers``).

    A kernel can be driven by :meth:`run` (for scripts: it owns the loop and the
    signals) or awaited with :meth:`serve` inside an existing asyncio program.
    """

    def __init__(
        self,
        *,
        trace: bool = False,
        clock: Clock | None = None,
        slice: float = DEFAULT_SLICE,
        watchdog: float = DEFAULT_WATCHDOG,
        session_ids: tuple[int, int] = (1, 1),
    ):
        if not slice > 0:
            raise ValueError("slice must be a positive number of seconds")
        if not watchdog >= 0:
            raise ValueError("watchdog must be 0 (off) or a positive number of seconds")
        first_id, id_step = session_ids
        if first_id < 1 or id_step < 1:
            raise ValueError("session_ids: the first id and the step must be 1 or more")
        self._watchdog = Watchdog(self, watchdog) if watchdog else None
        #: The job whose steps are running now (the watchdog reads it), or None.
        self.stepping: Job | None = None
        self.trace = trace
        #: Seconds of chunked work per tick, shared by the runnable jobs.
        self.slice = slice
        # Jobs that can run a step now, in turn order (see statemachine_server.work).
        self._runnable: deque[Job] = deque()
        self._pool: Pools | None = None
        self.jobs = 0  # jobs alive
        # (session, event name or a callable, args): see Session.deliver.
        self._queue: deque[tuple[Session, Any, tuple[Any, ...]]] = deque()
        self._sessions: dict[int, Session] = {}
        self._aliases: dict[str, Session] = {}
        self._ids: Iterator[int] = count(first_id, id_step)
        self._clock = clock
        # What Connection reads at every read (the idle timeout's "last heard"):
        # the monotonic clock the standard loop's time() returns, called directly.
        # Another loop's own clock replaces it when the kernel starts serving.
        self.read_clock: Callable[[], float] = monotonic if clock is None else clock.time
        self._timers = TimerQueue()
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_due = _NEVER  # when the loop wakes us for timers next
        if clock is not None:
            clock.attach(self)
        # Objects with a ``flush()`` method, flushed once at the end of the tick.
        self._dirty: list[Any] = []
        # Called at the end of every tick (e.g. the console log's flush).
        self._tick_hooks: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._starters: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._stopping: list[Callable[[], None]] = []
        self._finishing: list[Callable[[], None]] = []
        self._finished: asyncio.Future[None] | None = None
        self._shutting_down = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The session whose handler is running, or None between handlers.
        self.current: Session | None = None
        #: Events dispatched (statistics): the tick counts its queue entries, and a
        #: connection adds the records of one read that shared an entry.
        self.dispatched = 0
        #: Child processes running, per owner (see statemachine_server.work.child).
        self.children: dict[object, int] = {}
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

    # -- the component interface (see the module docstring) -----------------------

    def register(self, session: Session) -> int:
        """Give ``session`` its id and list it as live (every session calls this
        once, at creation)."""
        # Whether tick() may call the session's handlers without deliver(): not
        # where its class has its own (Connection). A slot, read per event, set
        # here since every session registers, Session.__init__ or not.
        session.direct = type(session).deliver is Session.deliver
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
        session.refcount += 1

    def alias_remove(self, alias: str) -> None:
        """Drop an alias; the session ends if nothing else keeps it alive."""
        session = self._aliases.pop(alias)
        self.release(session)

    def retain(self, session: Session) -> None:
        """One more thing keeps ``session`` alive (a job, a child, a socket...)."""
        session.refcount += 1

    def release(self, session: Session) -> None:
        """One thing less keeps ``session`` alive; at none left it is freed."""
        session.refcount -= 1
        if session.refcount == 0:
            self.stop_session(session)

    def stop_session(self, session: Session) -> None:
        """Free ``session`` now: cancel its timers and aliases, run ``stopped``."""
        if self._sessions.pop(session.id, None) is None:
            return
        for alias in [a for a, s in self._aliases.items() if s is session]:
            del self._aliases[alias]
        if session.timer_ids:
            for tid in session.timer_ids:
                self._timers.cancel(tid)
            session.timer_ids = None
        session.named_timers = None
        try:
            session.on_stopped()
        except Exception as exc:
            self._errors += 1
            log.error(
                "session %d: stopped handler raised %r", session.id, exc, exc_info=exc,
                extra={"session": session.id, "state": session.state, "heap": session.heap},
            )  # fmt: skip
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
        self.enqueue(session, event, args)
        return True

    def yield_(self, event: str, *args: Any) -> None:
        """Queue ``event`` for the current session (POE's ``yield``)."""
        session = self.current
        if session is None:
            raise RuntimeError("no current session: call this from inside a handler")
        # enqueue(), inlined: a session yielding to itself is POE's way to chunk work.
        session.refcount += 1
        self._queue.append((session, event, args))
        if not self._scheduled:
            self.wake()

    def call(self, target: Session | int | str, event: str, *args: Any) -> Any:
        """Run the handler for ``event`` now, synchronously, and return its value.

        Raises:
            LookupError: there is no such live session.
        """
        session = self.session(target)
        if session is None:
            raise LookupError(f"no session {target!r}")
        return self.deliver_now(session, event, args)

    def deliver_now(
        self, session: Session, event: str | Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """Run ``session``'s handler for ``event`` (a name or a callable) now, as
        the current session; an exception becomes its error (:meth:`handler_failed`)."""
        previous, self.current = self.current, session
        try:
            return session.deliver(event, args)
        except Exception as exc:
            self.handler_failed(session, event if isinstance(event, str) else "work", exc)
            return None
        finally:
            self.current = previous

    def handler_failed(self, session: Session, event: str, exc: BaseException) -> None:
        """A handler of ``session`` for ``event`` raised ``exc``: count it, and let
        the session handle it (its ``error`` handler; a connection then closes).
        The one place every layer reports a handler's exception."""
        self._errors += 1
        session.handle_error(event, exc)

    def enqueue(
        self, session: Session, event: str | Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        """Queue ``event`` (a name, or a callable run as that session's event) for a
        live ``session`` object, with ``args`` as a tuple: :meth:`post` without
        the look-up."""
        session.refcount += 1
        self._queue.append((session, event, args))
        if not self._scheduled:
            self.wake()

    def mark_dirty(self, item: Any) -> None:
        """Have ``item.flush()`` called once at the end of this tick (its output is
        written in one go); sets ``item.dirty``, which the caller tests first."""
        item.dirty = True
        self._dirty.append(item)
        if self.current is None:  # not from a handler: no tick will flush it
            self.wake()

    def wake(self) -> None:
        """Make sure a tick runs soon: the one place that schedules ticks."""
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
        self.tick()
        if queue and not self._runnable:
            deadline = perf_counter() + _TICKS_BUDGET
            while True:
                self.tick()
                if not queue or self._runnable or perf_counter() >= deadline:
                    break
        if (queue or self._runnable) and self._loop is not None:
            self._loop.call_soon(self._run_ticks)
        else:
            self._scheduled = False

    def tick(self) -> None:
        """Run one tick (the loop's callback runs them; :func:`~statemachine_server.testing.drain`
        runs them by hand)."""
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
                # A callable (a read's records, a timer's or a job's bookkeeping)
                # runs in any state: what every session's deliver() does with one,
                # a call fewer. Session.deliver is inlined for plain sessions'
                # named events too; connections run their lifecycle table.
                if event.__class__ is not str:
                    event(*args)
                elif session.direct and (handler := session.handler_table.get(event)) is not None:
                    handler(session, *args)
                else:
                    session.deliver(event, args)
            except Exception as exc:
                self.handler_failed(session, event, exc)
            refs = session.refcount - 1
            session.refcount = refs
            if not refs:
                self.stop_session(session)
        self.current = None
        self.dispatched += n
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
                          item.id, exc, exc_info=exc, extra={"session": item.id})  # fmt: skip
                item.abort()

    def busy(self) -> bool:
        """Anything to do at the next tick: events, runnable work, or output."""
        return bool(self._queue or self._runnable or self._dirty)

    # -- chunked work -----------------------------------------------------------

    def schedule_work(self, job: Job) -> None:
        """Make ``job`` runnable: it steps in the work phase of the next ticks."""
        if not job.queued:
            job.queued = True
            self._runnable.append(job)
            self.wake()

    def _run_work(self, budget: float) -> None:
        # Round robin within one slice: the job at the head steps until the slice
        # is used (then it goes to the back, so the next tick starts with the
        # next job) or until it ends or waits (then the next job gets the rest).
        runnable = self._runnable
        deadline = perf_counter() + budget
        for _ in range(len(runnable)):
            job = runnable[0]
            session = self.current = cast(Session, job.session)
            self.stepping = job
            try:
                more = job.run(deadline)
            except Exception as exc:  # raised by on_done / on_error: the session's error
                self.handler_failed(session, "work", exc)
                more = False
            finally:
                self.current = self.stepping = None
            if more:
                runnable.rotate(-1)
                break
            job.queued = False
            runnable.popleft()  # nothing goes in at the front, so it is still there
            if perf_counter() >= deadline:
                break

    def offload(self, job: Job, call: Offload) -> None:
        """Run a job's :func:`~statemachine_server.work.in_thread` or
        :func:`~statemachine_server.work.in_process` call in the kernel's pools
        (made on first use, shut down when the kernel stops serving)."""
        if self._pool is None:
            self._pool = Pools(self)
        self._pool.submit(job, call)

    # -- running --------------------------------------------------------------

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the kernel serves on (the running one, once known)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def on_serve(self, starter: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``starter`` when the kernel starts serving (now, if it already is)."""
        if self._finished is not None:
            self.track_task(self.running_loop().create_task(starter()))
        else:
            self._starters.append(starter)

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when a graceful shutdown begins (a server stops accepting)."""
        self._stopping.append(hook)

    def on_finish(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when :meth:`serve` returns, however it ends (what serves
        beside the sessions, such as the metrics endpoint, closes then)."""
        self._finishing.append(hook)

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` at the end of every tick (the console log's one write)."""
        self._tick_hooks.append(hook)

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to ``task`` until it is done (asyncio keeps only a weak
        one: an untracked task can be collected mid-flight)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        """Dispatch events until no session is left or :meth:`stop` is called."""
        self._loop = asyncio.get_running_loop()
        # Any loop whose time() is not the standard one (uvloop's, or a loop whose
        # time was replaced on the instance): read its clock, not monotonic().
        loop_time = self._loop.time
        if self._clock is None:
            standard = getattr(loop_time, "__func__", None) is _BASE_TIME
            self.read_clock = monotonic if standard else loop_time
        self._finished = self._loop.create_future()
        starters, self._starters = self._starters, []
        for starter in starters:
            await starter()
        if self.busy():
            self.wake()
        if self._timers and self._timer_handle is None:
            self._arm()  # timers set before the loop ran
        if self._watchdog is not None:
            self._watchdog.start(self._loop)
        try:
            if self._sessions:
                await self._finished
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
            self.end_processes()
            hooks, self._finishing = self._finishing, []
            for hook in hooks:
                hook()

    def end_processes(self) -> None:
        """Kill what this kernel started that is still running: child processes
        (SIGKILL to their process groups) and the process pool's workers. Called
        when :meth:`serve` ends, however it ends; calling it again does nothing."""
        kill_children(self)
        if self._pool is not None:
            self._pool.close(kill=True)
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
            session.begin_shutdown()
        if self._finished is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._finished), deadline)
        except TimeoutError:
            log.warning(
                "shutdown: %d sessions still busy after %.1fs", len(self._sessions), deadline
            )
            for session in list(self._sessions.values()):
                session.abort()
            self.stop()

    def run(
        self, *, loop: str = "auto", handle_signals: bool = True, drain_timeout: float = 5.0
    ) -> None:
        """Run until no session is left: the entry point for scripts.

        Args:
            loop: ``"auto"`` (uvloop where the ``fast`` extra installed it, else the
                standard loop), ``"asyncio"`` (the standard loop) or ``"uvloop"``.
            handle_signals: the first SIGINT, SIGTERM or SIGHUP shuts down
                gracefully, a second one stops at once, even while the loop is held.
            drain_timeout: how long that graceful shutdown may take.

        It also sets glibc's allocator for a server's large buffers, unless the
        environment does (:mod:`.allocator`): it owns the process, as ``run`` does.
        """
        run(self, loop=loop, handle_signals=handle_signals, drain_timeout=drain_timeout)

    def install_signal_handlers(self, drain_timeout: float = 5.0) -> None:
        """First SIGINT/SIGTERM/SIGHUP: graceful :meth:`shutdown`; the second: stop at once."""
        install_signal_handlers(self, drain_timeout)

    @property
    def shutting_down(self) -> bool:
        """Whether a graceful :meth:`shutdown` has begun."""
        return self._shutting_down

    def statistics(self) -> KernelStatistics:
        """Counters for monitoring and tests."""
        pool = self._pool.statistics() if self._pool else (0, 0)
        return KernelStatistics(
            sessions=len(self._sessions),
            queue_depth=len(self._queue),
            events_dispatched=self.dispatched,
            timers_pending=len(self._timers),
            ticks=self._ticks,
            handler_errors=self._errors,
            jobs=self.jobs,
            jobs_runnable=sum(1 for job in self._runnable if not job.held and not job.finished),
            pool_calls=pool[0],
            pool_waiting=pool[1],
            stalls=self._watchdog.stalls if self._watchdog else 0,
        )

    def sessions(self) -> list[Session]:
        """The live sessions, oldest first."""
        return list(self._sessions.values())
