"""A connection's chunked work: ``working`` while a job runs, input postponed.

:meth:`Working.work` starts a job through the lifecycle's ``work`` event; the job
calls :meth:`Working.work_done` or :meth:`Working.work_failed` when it ends, and
those are the ``done`` and ``work_failed`` events, which bring the connection
back to ``reading`` (and replay what was postponed). The jobs themselves are
:mod:`statemachine_server.work`'s.

A base class of :class:`~.connection.Connection`, kept apart as one concern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..core.lifecycle import DONE, READING, WORK, WORK_FAILED, WORKING
from ..work.job import HELD_BACKLOG, Cancelled, Job, Offload
from .base import ConnectionBase
from .flow import BACKLOG

__all__ = ["Working"]


class Working(ConnectionBase):
    """One job at a time, run between the kernel's ticks (a base of ``Connection``)."""

    __slots__ = ()

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
        """Run a generator as chunked work (:mod:`statemachine_server.work`).

        The connection is ``working`` until the generator returns; input that
        arrives meanwhile is postponed and handled afterwards, in order.
        ``on_done(session, result)`` gets the generator's return value and
        ``on_progress(session, value)`` what it yields (at most once per
        ``progress_every`` seconds). ``on_error(session, exc)`` gets an exception
        raised by a step, :class:`~.work.WorkTimeout` after ``timeout`` seconds,
        or :class:`~.work.Cancelled` at shutdown, and the connection goes on
        reading; without ``on_error`` an exception is the connection's error (it
        is logged and the connection closed, as for a handler). If the client
        leaves, the generator is closed (its ``finally`` blocks run).

        ``job`` may also be :func:`~.work.in_thread` or :func:`~.work.in_process`
        ``(fn, *args)``, for a blocking call that cannot be chunked.

        Raises:
            RuntimeError: the connection is working already.
        """
        if self.state is WORKING:
            raise RuntimeError(f"session {self.id} is working already: one job at a time")
        started = Job(
            self, job, on_done,
            on_progress=on_progress, progress_every=progress_every, on_error=on_error,
        )  # fmt: skip
        if self.state is READING:
            self.deliver(WORK, (started, timeout))
        else:  # closing or closed: nothing more is done for this client
            started.cancel()
        return started

    def _on_work(self, job: Job, timeout: float | None) -> None:
        self._job = job
        if timeout is not None:
            job.set_timeout(timeout)
        if self.flow.reasons & BACKLOG:
            job.hold(HELD_BACKLOG)
        else:
            self.kernel.schedule_work(job)

    # The job calls these when it ends (see work.Job).
    def work_done(self, job: Job, result: Any) -> None:
        self.deliver(DONE, (job, result))

    def work_failed(self, job: Job, exc: BaseException) -> None:
        if job.on_error is None and not isinstance(exc, Cancelled):
            # The connection's error: logged, then closed.
            self.kernel.handler_failed(self, WORK, exc)
        else:
            self.deliver(WORK_FAILED, (job, exc))

    def _on_done(self, job: Job, result: Any) -> None:
        self._job = None
        if job.on_done is not None:
            job.on_done(self, result)

    def _on_work_failed(self, job: Job, exc: BaseException) -> None:
        self._job = None
        if job.on_error is not None:
            job.on_error(self, exc)

    def _close_job(self) -> None:
        # Runs the job's ``finally`` blocks; its failure must not stop the close.
        if self._job is not None:
            job, self._job = self._job, None
            job.cancel()
