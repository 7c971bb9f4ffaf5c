"""What chunked work and child processes need from the kernel and the session.

:mod:`.job`, :mod:`.pools` and :mod:`.child` sit below the kernel
(:mod:`statemachine_server.core`): the session's ``work()`` and ``run_process()``
start them, and the kernel steps jobs in its ticks. So they name the kernel and
the session only through these two protocols, which the kernel's public component
interface satisfies: the import graph points one way, and a test can drive a job
with any object that has these few methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Host", "Owner"]


class Host(Protocol):
    """The kernel, as work sees it (see :class:`~statemachine_server.core.kernel.Kernel`)."""

    #: Seconds of chunked work per tick.
    slice: float
    #: Jobs alive: counted by each job, read by the kernel's statistics.
    jobs: int
    #: Child processes running, per owner (a server, or None): ``max_children``.
    children: dict[object, int]

    def time(self) -> float: ...

    def running_loop(self) -> asyncio.AbstractEventLoop: ...

    def enqueue(
        self, session: Any, event: str | Callable[..., Any], args: tuple[Any, ...]
    ) -> None: ...

    def add_timer(
        self,
        when: float,
        target: Any,
        event: str | Callable[..., Any],
        args: tuple[Any, ...] = (),
        every: float | None = None,
        name: str | None = None,
    ) -> int: ...

    def cancel(self, timer_id: int) -> bool: ...

    def retain(self, session: Any) -> None: ...

    def release(self, session: Any) -> None: ...

    def schedule_work(self, job: Any) -> None: ...

    def offload(self, job: Any, call: Any) -> None: ...

    def track_task(self, task: asyncio.Task[Any]) -> None: ...


class Owner(Protocol):
    """The session a job or a child belongs to."""

    id: int
    state: str

    @property
    def kernel(self) -> Host: ...

    def work_done(self, job: Any, result: Any) -> None: ...

    def work_failed(self, job: Any, exc: BaseException) -> None: ...

    def adopt(self, child: Any) -> None: ...

    def orphan(self, child: Any) -> None: ...
