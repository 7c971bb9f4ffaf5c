"""A session: a unit of work with its own heap and handlers (POE::Session).

The kernel (:mod:`.kernel`) queues events for sessions and, at each tick, runs
their handlers. This module is the session's side of that contract, and it sits
below the kernel: it names the kernel only through :class:`KernelPort`, the part
of the kernel's component interface a session calls.

Two kinds of member live here:

* what handlers use (``heap``, ``post``, ``timer``, ``work``, ``run_process``...);
* the *component interface*, public so that the kernel, :mod:`statemachine_server.work`
  and :mod:`statemachine_server.net` need no private names, but not for handlers:
  ``handler_table``, ``refcount``, ``start``, ``deliver``, ``handle_error``, ``begin_shutdown``,
  ``abort``, ``on_stopped``, ``work_done``, ``work_failed``, ``adopt``, ``orphan``.
  A connection (:class:`~statemachine_server.net.connection.Connection`) overrides
  several of them with its lifecycle's rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from ..work.child import Child
from ..work.host import Host
from ..work.job import Cancelled, Job, Offload

__all__ = ["SHUTDOWN", "STARTED", "STOPPED", "Handler", "KernelPort", "Session"]

log = logging.getLogger("statemachine_server")

#: A handler: called as ``handler(session, *args)``; what it returns is what
#: :meth:`Kernel.call <.kernel.Kernel.call>` returns.
Handler = Callable[..., Any]

STARTED = "started"
STOPPED = "stopped"
SHUTDOWN = "shutdown"


class KernelPort(Host, Protocol):
    """The kernel as a session calls it (the kernel's component interface)."""

    trace: bool
    current: Session | None

    def register(self, session: Session) -> int: ...

    def alias_set(self, alias: str, session: Session | None = None) -> None: ...

    def deliver_now(
        self, session: Session, event: str | Callable[..., Any], args: tuple[Any, ...]
    ) -> Any: ...

    def handler_failed(self, session: Session, event: str, exc: BaseException) -> None: ...

    def stop_session(self, session: Session) -> None: ...

    def timer_due(self, timer_id: int) -> float | None: ...


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
        handler_table: event name to handler (component interface: the kernel reads it).
        refcount: how many things keep the session alive: queued events, timers,
            aliases, jobs, children, an open socket (POE's reference count; the
            kernel frees the session when it reaches 0).
        direct: True when the kernel may call ``handler_table[event]`` itself, without
            :meth:`deliver` (set by the kernel: the class does not override it).
        timer_ids: ids of the session's pending timers, or None (kernel-owned).
        named_timers: :meth:`timer`'s name to timer id, or None (kernel-owned).
    """

    __slots__ = (
        "__weakref__", "direct", "handler_table", "heap", "id", "kernel", "named_timers",
        "refcount", "state", "timer_ids",
    )  # fmt: skip
    direct: bool  # set by Kernel.register
    kernel: KernelPort

    def __init__(
        self,
        kernel: KernelPort,
        handlers: dict[str, Handler] | None = None,
        *,
        heap: dict[str, Any] | None = None,
        alias: str | None = None,
    ):
        self.kernel = kernel
        self.heap: dict[str, Any] = {} if heap is None else heap
        self.handler_table = handlers or {}
        self.refcount = 0
        self.timer_ids: set[int] | None = None
        self.named_timers: dict[str, int] | None = None
        self.state = "running"
        self.id = kernel.register(self)
        if alias is not None:
            kernel.alias_set(alias, self)
        self.start()

    # -- the component interface: what the kernel calls ----------------------------

    def start(self) -> None:
        """Run ``started``, at creation (POE runs ``_start`` inside ``create()``).
        A subclass that holds a resource (a listening socket) retains the session
        first; with no reference left afterwards the session stops at once."""
        if STARTED in self.handler_table:
            self.kernel.deliver_now(self, STARTED, ())
        if self.refcount == 0:
            self.kernel.stop_session(self)

    def deliver(self, event: Any, args: tuple[Any, ...]) -> Any:
        """Run the handler for ``event`` (a name, or a callable queued by a timer or
        a job); the kernel calls it for each event it dispatches."""
        if event.__class__ is not str:  # a callable queued by a timer or a job
            return event(*args)
        handler = self.handler_table.get(event)
        if handler is None:
            if self.kernel.trace:
                log.debug(
                    "session %d: no handler for %r", self.id, event,
                    extra={"session": self.id, "state": self.state},
                )  # fmt: skip
            return None
        return handler(self, *args)

    def handle_error(self, event: str, exc: BaseException) -> None:
        """A handler for ``event`` raised ``exc``: the ``error`` handler hears of it,
        or it is logged (:meth:`Kernel.handler_failed <.kernel.Kernel.handler_failed>`
        counts it first)."""
        handler = self.handler_table.get("error")
        if handler is not None and event != "error":
            try:
                handler(self, exc)
                return
            except Exception as again:  # the error handler itself is broken
                exc = again
        log.error(
            "session %d: handler for %r raised %s: %s",
            self.id, event, type(exc).__name__, exc, exc_info=exc,
            extra={"session": self.id, "state": self.state, "heap": self.heap},
        )  # fmt: skip

    def begin_shutdown(self) -> None:
        """The kernel begins a graceful shutdown: queue ``shutdown`` if handled."""
        if SHUTDOWN in self.handler_table:
            self.kernel.enqueue(self, SHUTDOWN, ())

    def abort(self) -> None:
        """Cut off at once (a shutdown past its deadline). Plain sessions just stop."""

    def on_stopped(self) -> None:
        """The kernel freed the session: run ``stopped``."""
        self.state = "stopped"
        if STOPPED in self.handler_table:
            self.kernel.deliver_now(self, STOPPED, ())

    def work_done(self, job: Job, result: Any) -> None:
        """A job of this session returned ``result`` (called by the job)."""
        try:
            if job.on_done is not None:
                self.kernel.deliver_now(self, job.on_done, (self, result))
        finally:
            self.kernel.release(self)

    def work_failed(self, job: Job, exc: BaseException) -> None:
        """A job of this session raised, timed out or was cancelled."""
        try:
            if job.on_error is not None:
                self.kernel.deliver_now(self, job.on_error, (self, exc))
            elif not isinstance(exc, Cancelled):
                self.kernel.handler_failed(self, "work", exc)
        finally:
            self.kernel.release(self)

    def adopt(self, child: Child) -> None:
        """A child process started for this session (a connection kills its own when
        it closes; a plain session lets them run)."""

    def orphan(self, child: Child) -> None:
        """That child process has exited and its events are handled."""

    # -- what handlers call ----------------------------------------------------------

    def post(self, event: str, *args: Any) -> None:
        """Queue ``event`` for this session."""
        self.kernel.enqueue(self, event, args)

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
        self.kernel.retain(self)  # a job keeps its session alive until it ends
        if timeout is not None:
            started.set_timeout(timeout)
        self.kernel.schedule_work(started)
        return started

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
        named = self.named_timers
        if named is not None and event in named:
            kernel.cancel(named[event])
        if seconds is None:
            return None
        if named is None:
            named = self.named_timers = {}
        tid = kernel.add_timer(kernel.time() + seconds, self, event, args, every, event)
        named[event] = tid
        return tid

    def timers(self) -> dict[str, float]:
        """This session's named timers: name to due time on the kernel's clock."""
        if not self.named_timers:
            return {}
        found = {name: self.kernel.timer_due(tid) for name, tid in self.named_timers.items()}
        return {name: when for name, when in found.items() if when is not None}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state}>"
