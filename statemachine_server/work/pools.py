"""Work that cannot be chunked: thread and process pools, with a cap per server.

A job yields :func:`~.job.in_thread` or :func:`~.job.in_process`; the kernel's
:class:`Pools` runs the call and hands the outcome back to the job as a queued
resumption, so the session stays ``working`` meanwhile and every other session
goes on. The pools are made on first use and shut down with the kernel.

Each server may have at most ``Limits.max_pool_jobs`` calls in the pools at once;
more wait, in order, for a free slot (one job per connection, so the wait is
bounded by ``max_connections``). A call whose job is cancelled is cancelled in
the pool if it has not started; if it has, its result is dropped when it ends
(a thread cannot be killed, and a process pool worker is shared).

Processes start with ``forkserver`` where it exists: forking a process that
runs an event loop and threads copies their state mid-flight, which is unsafe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .host import Host
from .job import Cancelled, Job, Offload

__all__ = ["DEFAULT_MAX_POOL_JOBS", "Pools"]

#: The cap for sessions that are not part of a server (plain sessions).
DEFAULT_MAX_POOL_JOBS = 64


class Pools:
    """The kernel's thread pool and process pool."""

    def __init__(self, kernel: Host, *, threads: int | None = None, processes: int | None = None):
        self.kernel = kernel
        self.threads = threads  # None: the standard library's default
        self.processes = processes or os.cpu_count() or 1
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._process: concurrent.futures.ProcessPoolExecutor | None = None
        self._running: dict[object, int] = {}
        self._waiting: dict[object, deque[tuple[Job, Offload]]] = {}

    def statistics(self) -> tuple[int, int]:
        """(calls running in the pools, calls waiting for a slot)."""
        return sum(self._running.values()), sum(len(w) for w in self._waiting.values())

    def submit(self, job: Job, call: Offload) -> None:
        owner = getattr(job.session, "server", None)
        limits = getattr(owner, "limits", None)
        cap = getattr(limits, "max_pool_jobs", DEFAULT_MAX_POOL_JOBS)
        if self._running.get(owner, 0) >= cap:
            waiting = self._waiting.setdefault(owner, deque())
            entry = (job, call)
            waiting.append(entry)
            job.cancel_pending = lambda: waiting.remove(entry)
            return
        self._start(job, call, owner)

    def _start(self, job: Job, call: Offload, owner: object) -> None:
        self._running[owner] = self._running.get(owner, 0) + 1
        try:
            done = self._executor(call.where).submit(call.fn, *call.args)
        except Exception as exc:  # e.g. the pool was shut down
            self._free(owner)
            job.resume(error=exc)
            return
        future = asyncio.wrap_future(done, loop=self.kernel.running_loop())
        job.cancel_pending = done.cancel
        future.add_done_callback(lambda f: self._done(job, f, owner, call.where))

    def _done(self, job: Job, future: asyncio.Future[Any], owner: object, where: str) -> None:
        self._free(owner)
        if future.cancelled():
            error: BaseException | None = Cancelled("the pool call was cancelled")
        else:
            error = future.exception()
        if isinstance(error, BrokenProcessPool) and where == "process":
            # A worker died (killed, or os._exit in the call): start afresh next time.
            self._process = None
        if job.finished:
            return
        if error is not None:
            job.resume(error=error)
        else:
            job.resume(future.result())

    def _free(self, owner: object) -> None:
        self._running[owner] -= 1
        waiting = self._waiting.get(owner)
        if waiting:
            job, call = waiting.popleft()
            if not waiting:
                del self._waiting[owner]
            self._start(job, call, owner)
        elif not self._running[owner]:
            del self._running[owner]

    def _executor(self, where: str) -> concurrent.futures.Executor:
        if where == "thread":
            if self._thread is None:
                self._thread = concurrent.futures.ThreadPoolExecutor(
                    self.threads, thread_name_prefix="statemachine-server"
                )
            return self._thread
        if where == "process":
            if self._process is None:
                methods = multiprocessing.get_all_start_methods()
                context = multiprocessing.get_context(
                    "forkserver" if "forkserver" in methods else "spawn"
                )
                self._process = concurrent.futures.ProcessPoolExecutor(
                    self.processes, mp_context=context
                )
            return self._process
        raise ValueError(f"unknown pool {where!r}: expected 'thread' or 'process'")

    def close(self, kill: bool = False) -> None:
        """Shut both pools down without waiting; calls not started are cancelled.

        Args:
            kill: also kill the process pool's workers (a call still running in
                one is lost): the kernel is done, and nothing may outlive it. A
                thread cannot be killed: the interpreter waits for it at exit.
        """
        workers = list((getattr(self._process, "_processes", None) or {}).values())
        for pool in (self._thread, self._process):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if kill:
            for worker in workers:  # ProcessPoolExecutor has no public way to do this
                with contextlib.suppress(Exception):
                    worker.kill()
        self._thread = self._process = None
