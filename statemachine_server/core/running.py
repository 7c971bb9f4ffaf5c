"""Running a kernel as a program: which event loop, what the signals do, the watchdog.

:meth:`Kernel.run <.kernel.Kernel.run>` and
:meth:`Kernel.install_signal_handlers <.kernel.Kernel.install_signal_handlers>`
are these functions; they sit below the kernel and see it through
:class:`Runnable`, the few methods a program's main needs.

Signals: the first SIGINT or SIGTERM starts a graceful shutdown, which runs in
the loop between ticks. SIGHUP calls the program's ``on_hangup`` there instead
(``run`` reloads its spec: :mod:`statemachine_server.scale`); a program that
gives none (``Kernel.run``) has SIGHUP drain like SIGTERM, as a terminal hanging
up means "stop". The handlers are plain ``signal.signal`` ones,
not asyncio's: a held loop never runs asyncio's signal callbacks, but Python runs
a plain handler in the main thread at the next bytecode, even in the middle of a
handler that never returns. The second signal raises ``SystemExit`` there; a
third (the held code caught the second) kills the process with that signal's
default action. Every way out kills what the server started
(``Kernel.end_processes``: its children and its pool's workers; the
multiprocessing forkserver and resource tracker then end by themselves, as their
pipes from this process and from the workers close).

The :class:`Watchdog` is a thread that reads a heartbeat the loop writes from a
timer (four times per threshold: nothing on the per-event path). A stale heartbeat
means something holds the loop: it logs the main thread's stack and the session
once per stall, and counts it. It also enforces a job's ``timeout`` on a step
that never yields (see :func:`_interrupt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from time import monotonic, perf_counter
from types import FrameType
from typing import Any, Protocol

from ..work.job import WorkTimeout
from .allocator import tune_malloc

__all__ = [
    "DEFAULT_WATCHDOG", "SIGNALS", "Runnable", "Watchdog",
    "install_signal_handlers", "loop_factory", "run", "running_loop_or_none",
]  # fmt: skip

#: Seconds a handler, call or work step may hold the loop before the watchdog
#: reports it. asyncio's debug mode reports callbacks slower than 0.1 s; a second
#: keeps the log quiet for legitimate slow starts yet names a real stall.
DEFAULT_WATCHDOG = 1.0
#: The signals handled: SIGINT and SIGTERM shut the server down gracefully; SIGHUP
#: too, unless the program reloads on it (``on_hangup``).
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The signal the watchdog sends the main thread to interrupt a step: a real-time
#: signal where there are some (no program uses them by default), else SIGUSR2.
INTERRUPT: int = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2

log = logging.getLogger("statemachine_server")


class Runnable(Protocol):
    """The kernel, as a program's main drives it."""

    @property
    def shutting_down(self) -> bool: ...

    def running_loop(self) -> asyncio.AbstractEventLoop: ...

    async def serve(self) -> None: ...

    async def shutdown(self, deadline: float = 5.0) -> None: ...

    def stop(self) -> None: ...

    def end_processes(self) -> None: ...


def running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``--loop NAME``: ``auto`` is uvloop where it is
    installed (the ``fast`` extra), else the standard loop, as uvicorn chooses.

    Raises:
        ValueError: an unknown name, or uvloop is not installed.
    """
    if name == "asyncio":
        return None
    if name not in ("auto", "uvloop"):
        raise ValueError(f"unknown loop {name!r}: expected 'auto', 'asyncio' or 'uvloop'")
    try:
        import uvloop
    except ImportError:
        if name == "auto":
            return None
        raise ValueError(
            "--loop uvloop needs uvloop: pip install 'statemachine-server[fast]'"
        ) from None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(
    kernel: Runnable,
    *,
    loop: str,
    handle_signals: bool,
    drain_timeout: float,
    on_hangup: Callable[[], None] | None = None,
) -> None:
    """Serve ``kernel`` on a new loop until no session is left (see ``Kernel.run``);
    ``on_hangup``: what SIGHUP does instead of draining (see the module docstring)."""
    # A program's process: its allocator may be set for a server's buffers.
    log.debug("malloc: %s", tune_malloc())
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS} if handle_signals else {}

    async def main() -> None:
        if handle_signals:
            install_signal_handlers(kernel, drain_timeout, on_hangup)
        await kernel.serve()

    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            runner.run(main())
    finally:  # a normal stop, a second signal, an exception: nothing outlives us
        kernel.end_processes()
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def install_signal_handlers(
    kernel: Runnable, drain_timeout: float, on_hangup: Callable[[], None] | None = None
) -> None:
    """First SIGINT/SIGTERM: a graceful shutdown; the second: stop at once, even
    while a handler holds the loop (see the module docstring). SIGHUP: call
    ``on_hangup`` in the loop, between ticks (never while shutting down); without
    one, it counts as SIGTERM. Call it in the main thread, from the loop the
    kernel serves on."""
    loop = kernel.running_loop()
    tasks: set[asyncio.Task[None]] = set()
    heard = 0

    def begin(signum: int) -> None:  # in the loop, between ticks
        task = loop.create_task(kernel.shutdown(drain_timeout))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # A plain handler, not loop.add_signal_handler's: Python runs it in the main
        # thread at the next bytecode, even in a handler that holds the loop. The
        # graceful part goes to the loop (call_soon_threadsafe is safe here: it
        # appends and writes a byte); what must not wait is done here.
        nonlocal heard
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP and on_hangup is not None:
            if kernel.shutting_down:
                log.info("SIGHUP: shutting down already; ignored")
            else:  # not now: the loop may be held, and a reload needs it
                loop.call_soon_threadsafe(on_hangup)
            return
        heard += 1
        if heard == 1:
            # Counted by signals alone: a drain the program began (a worker's
            # supervisor ordered it) goes on, as a service manager that signals
            # every process of the service means it to; the next signal stops.
            log.info("%s: shutting down", name)  # now: the loop may be held
            loop.call_soon_threadsafe(begin, signum)
            return
        if heard <= 2:
            log.warning("second %s: stopping now", name)
            raise SystemExit(0)  # unwinds the held code (its finally blocks run)
        log.warning("%s again: the loop is still held; exiting", name)
        kernel.end_processes()
        signal.signal(signum, signal.SIG_DFL)  # its default action ends the process
        os.kill(os.getpid(), signum)

    for signum in SIGNALS:
        signal.signal(signum, on_signal)


class Watchdog:
    """Reports a loop held past ``threshold`` seconds; interrupts overdue steps.

    Args:
        kernel: what to report: its ``current`` session and ``stepping`` job.
        threshold: seconds; the thread polls four times per threshold.
    """

    def __init__(self, kernel: Any, threshold: float):
        self.kernel = kernel
        self.threshold = threshold
        self.interval = threshold / 4
        #: Stalls seen (each counted once, however long it lasts).
        self.stalls = 0
        self.beat = monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread().ident
        self._can_interrupt = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.beat = monotonic()
        self._handle = loop.call_later(self.interval, self._beat)
        # Python runs signal handlers in the main thread only: a loop in another
        # thread is reported but its steps cannot be interrupted.
        self._can_interrupt = threading.current_thread() is threading.main_thread()
        if self._can_interrupt:
            _install_interrupt()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name="statemachine-server-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _beat(self) -> None:
        # The heartbeat: a loop timer, so an idle loop beats too, and a busy one
        # pays one callback per interval, never anything per event.
        self.beat = monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(self.interval, self._beat)

    def _watch(self) -> None:
        reported = None
        while not self._stop.wait(self.interval):
            beat = self.beat
            # The loop is late by its age less the beat's own interval.
            if monotonic() - beat > self.threshold + self.interval and beat != reported:
                reported = beat
                self.stalls += 1
                self._report(monotonic() - beat - self.interval)
            job = self.kernel.stepping
            if job is not None and self._can_interrupt and perf_counter() > job.deadline:
                _interrupt(job, self._main)

    def _report(self, late: float) -> None:
        # CPython's documented way to read another thread's stack (faulthandler's
        # writes to a file descriptor, not to the log).
        frames = getattr(sys, "_current_frames")()  # noqa: B009
        frame = frames.get(self._main or 0)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        session = self.kernel.current
        who = "no session (the loop itself, or a callback)"
        if session is not None:
            who = f"session {session.id} ({getattr(session, 'state', '?')})"
            if self.kernel.stepping is not None:
                who += ", a work step"
        log.warning(
            "watchdog: the event loop has been held for %.1f s by %s; the main "
            "thread's stack:\n%s", late, who, stack.rstrip(),
            extra={
                "session": getattr(session, "id", None),
                "state": getattr(session, "protocol_state", None)
                or getattr(session, "state", None),
            },
        )  # fmt: skip


# -- interrupting a step ----------------------------------------------------------
# The watchdog thread cannot raise in the main thread directly. It sends INTERRUPT
# to the main thread (signal.pthread_kill); Python runs _on_interrupt there at the
# next bytecode, and a blocking system call (sleep, a read) returns EINTR first. The
# handler raises WorkTimeout only if the overdue job's generator is on the stack,
# so the exception starts inside the step: the step's ``finally`` blocks and
# ``except`` clauses run as for any exception, and Job.run reports it like a step
# that raised. PyThreadState_SetAsyncExc was the other choice: it also waits for a
# bytecode, but it does not break a blocking system call, and it needs ctypes.

_target: Any = None  # the job to interrupt, set by the watchdog thread
_installed = False


def _install_interrupt() -> None:
    # Once per process, never removed: it acts only while _target is set, so
    # kernels that come and go (tests) never see each other's handler restored.
    global _installed
    if not _installed:
        signal.signal(INTERRUPT, _on_interrupt)
        _installed = True


def _interrupt(job: Any, main: int | None) -> None:
    global _target
    _target = job
    if main is not None:
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_kill(main, INTERRUPT)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    global _target
    job, _target = _target, None
    if job is None or job.finished:
        return
    mine = getattr(job.gen, "gi_frame", None)
    while frame is not None and frame is not mine:
        frame = frame.f_back
    if frame is not None:  # else the step returned meanwhile: its timer does the rest
        raise WorkTimeout(f"work timed out after {job.time_limit:g} s (interrupted)")
