"""Child processes whose output arrives as queued events (POE::Wheel::Run's role).

``session.run_process(argv, on_stdout=..., on_stderr=..., on_exit=...)`` starts a
program (never through a shell: ``argv`` is a list). Each line it writes to
stdout or stderr becomes a queued event for the session, in order, and its exit
becomes one last event with its status (negative: killed by that signal), after
every line. A job may also ``status = yield child`` to wait for the exit.

Promises:

* no zombies: asyncio's child watcher reaps every child, and the session keeps
  a reference to it until its exit event is handled;
* no leaked descriptors: the child gets only stdin, stdout and stderr
  (``close_fds``), and our ends of the pipes close when it exits;
* no orphans: when the session's connection closes (or :meth:`Child.kill` is
  called) the child gets SIGTERM, then SIGKILL after ``kill_grace`` seconds; when
  the kernel stops serving, however it stops, a child still running gets SIGKILL
  with its process group (:func:`kill_children`);
* bounded: a line longer than ``max_line`` bytes kills the child (its output is
  not what was expected), and each server runs at most ``Limits.max_children``
  children at once (starting one more raises :class:`~.errors.LimitReached`);
* backpressure: while the client is not reading its replies, the child's output
  is not read either (the pipe fills and the child blocks), so a chatty child
  cannot grow our buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from ..errors import LimitReached, RecordTooLong
from ..filters.line import LineFilter
from .host import Owner

__all__ = ["DEFAULT_MAX_CHILDREN", "Child", "kill_children"]

log = logging.getLogger("statemachine_server")

#: The cap for sessions that are not part of a server (plain sessions).
DEFAULT_MAX_CHILDREN = 64
_GONE = ("closing", "closed", "stopped")  # the session takes no more output
# Children started and not yet exited, for kill_children (weak: a Child is owned
# by its session, which keeps it until its exit event is handled).
_RUNNING: weakref.WeakSet[Child] = weakref.WeakSet()


def kill_children(kernel: object) -> None:
    """SIGKILL every running child of ``kernel``, with its process group (what it
    started in turn): the kernel stops, and its children must not outlive it."""
    for child in list(_RUNNING):
        if child.kernel is kernel and child.pid is not None and child.status is None:
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGKILL)
            _RUNNING.discard(child)


class Waiter(Protocol):
    """A job waiting for a child's exit (``status = yield child``)."""

    def resume(self, value: Any = None, error: BaseException | None = None) -> None: ...


class Child(asyncio.SubprocessProtocol):
    """One child process, owned by one session. Made by ``session.run_process()``.

    Args:
        argv: the program and its arguments.
        stdin: bytes (or text, encoded as UTF-8) written to the child's stdin, which
            is then closed; None: stdin is /dev/null.
        on_stdout, on_stderr: ``handler(session, line)`` for each output line (a
            ``str``, decoded as UTF-8 with surrogateescape, without its newline).
        on_exit: ``handler(session, status)`` once the child has exited and all its
            output was handled; ``status`` is the exit code, or ``-N`` for signal N.
        on_error: ``handler(session, exc)`` if the program cannot be started;
            without it that is the session's error.
        max_line: the longest output line accepted, in bytes.
        kill_grace: seconds between SIGTERM and SIGKILL when the child is killed.
        env, cwd: as for :mod:`subprocess`.
    """

    def __init__(
        self,
        session: Owner,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        on_stdout: Callable[..., Any] | None = None,
        on_stderr: Callable[..., Any] | None = None,
        on_exit: Callable[..., Any] | None = None,
        on_error: Callable[..., Any] | None = None,
        max_line: int = 64 * 1024,
        kill_grace: float = 2.0,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ):
        if not argv:
            raise ValueError("argv is empty: name a program to run")
        self.session = session
        self.kernel = session.kernel
        self.argv = list(argv)
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        self.on_exit, self.on_error = on_exit, on_error
        self.kill_grace = kill_grace
        self.pid: int | None = None
        self.status: int | None = None
        self._stdin = stdin.encode() if isinstance(stdin, str) else stdin
        self._filters = {1: LineFilter(max_line), 2: LineFilter(max_line)}
        self._transport: asyncio.SubprocessTransport | None = None
        self._killing: asyncio.TimerHandle | None = None
        self._killed = False
        self._paused = False
        self._waiters: list[Waiter] = []
        server = getattr(session, "server", None)
        self._owner = server
        cap = getattr(getattr(server, "limits", None), "max_children", DEFAULT_MAX_CHILDREN)
        running = self.kernel.children  # per kernel: every server has its own cap
        if running.get(server, 0) >= cap:
            raise LimitReached(f"{cap} child processes are running already (max_children)")
        running[server] = running.get(server, 0) + 1
        self.kernel.retain(session)  # released once the exit event is handled
        session.adopt(self)  # a connection kills its children when it closes
        self.kernel.track_task(self.kernel.running_loop().create_task(self._start(env, cwd)))

    def __repr__(self) -> str:
        state = "exited" if self.status is not None else "running"
        return f"<Child {self.pid} {self.argv[0]!r} {state}>"

    async def _start(self, env: dict[str, str] | None, cwd: Any) -> None:
        loop = self.kernel.running_loop()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: self,
                *self.argv,
                stdin=subprocess.PIPE if self._stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own process group: signals reach only it
            )
        except Exception as exc:  # no such program, not executable, out of processes
            self._post(self._failed_to_start, (exc,))
            return
        self._transport = transport
        self.pid = transport.get_pid()
        _RUNNING.add(self)
        if self._killed:  # the session ended while the program was starting
            self._killed = False
            self.kill()
        elif self._stdin is not None:
            pipe = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
            pipe.write(self._stdin)
            pipe.close()  # after the data: the child sees end of input
        if self._paused:
            self.pause_output(True)

    # -- control --------------------------------------------------------------

    def kill(self) -> None:
        """SIGTERM now, SIGKILL after ``kill_grace`` seconds if it is still there."""
        if self.status is not None:
            return
        transport = self._transport
        if transport is None:
            self._killed = True  # kill as soon as it has started
            return
        if self._killing is None and transport.get_returncode() is None:
            _signal(transport, signal.SIGTERM)
            self._killing = self.kernel.running_loop().call_later(
                self.kill_grace, _signal, transport, signal.SIGKILL
            )

    def add_waiter(self, job: Waiter) -> None:
        """Resume ``job`` with the exit status when the child exits."""
        self._waiters.append(job)

    def pause_output(self, paused: bool) -> None:
        """Stop (or restart) reading the child's output: its session's client is not
        reading its replies (the pipes fill, and the child blocks on its writes)."""
        self._paused = paused
        if self._transport is None:
            return
        for fd in (1, 2):
            pipe = cast(asyncio.ReadTransport | None, self._transport.get_pipe_transport(fd))
            if pipe is not None and not pipe.is_closing():
                pipe.pause_reading() if paused else pipe.resume_reading()

    # -- what the pipes and the process report -----------------------------------

    def _post(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.kernel.enqueue(self.session, callback, args)

    def _received(self, fd: int, data: bytes) -> None:
        try:
            lines = self._filters[fd].get(data)
        except RecordTooLong as exc:
            lines = exc.records
            session = self.session
            state = getattr(session, "protocol_state", None) or session.state
            log.warning("session %d: child %s: %s; killing it", session.id, self.pid, exc,
                        extra={"session": session.id, "state": state})  # fmt: skip
            self.kill()
        if lines:
            self._post(self._lines, (fd, lines))

    def _pipe_closed(self, fd: int) -> None:
        tail = self._filters[fd].get_pending()
        if tail:  # a last line without its newline is still a line
            self._post(self._lines, (fd, LineFilter().get(tail + b"\n")))

    def _exited(self) -> None:
        assert self._transport is not None
        status = self._transport.get_returncode()
        _RUNNING.discard(self)
        if self._killing is not None:
            self._killing.cancel()
        self._transport.close()
        self._post(self._exit, (-1 if status is None else status,))

    # -- the events, handled in the session -----------------------------------------

    def _lines(self, fd: int, lines: list[str]) -> None:
        handler = self.on_stdout if fd == 1 else self.on_stderr
        if handler is not None and self.session.state not in _GONE:
            for line in lines:
                handler(self.session, line)

    def _exit(self, status: int) -> None:
        self.status = status
        try:
            for job in self._waiters:
                job.resume(status)
            if self.on_exit is not None:
                self.on_exit(self.session, status)
        finally:
            self._release()

    def _failed_to_start(self, exc: BaseException) -> None:
        self.status = -1
        try:
            for job in self._waiters:
                job.resume(error=exc)
            if self.on_error is not None:
                self.on_error(self.session, exc)
            elif not self._waiters:
                raise exc
        finally:
            self._release()

    def _release(self) -> None:
        self._waiters = []
        running = self.kernel.children
        running[self._owner] -= 1
        if not running[self._owner]:
            del running[self._owner]
        self.session.orphan(self)
        self.kernel.release(self.session)

    # -- asyncio.SubprocessProtocol: what the pipes and the process report -------------

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._received(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in (1, 2):
            self._pipe_closed(fd)

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the process has exited and every pipe is closed: all output
        # was posted before this, so the exit event comes after the last line.
        self._exited()


def _signal(transport: asyncio.SubprocessTransport, signum: int) -> None:
    if transport.get_returncode() is None:
        with contextlib.suppress(ProcessLookupError):
            transport.send_signal(signum)
