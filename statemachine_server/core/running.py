"""Running a kernel as a program: which event loop, and what the signals do.

:meth:`Kernel.run <.kernel.Kernel.run>` and
:meth:`Kernel.install_signal_handlers <.kernel.Kernel.install_signal_handlers>`
are these functions; they sit below the kernel and see it through
:class:`Runnable`, the few methods a program's main needs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

__all__ = ["Runnable", "install_signal_handlers", "loop_factory", "run", "running_loop_or_none"]

log = logging.getLogger("statemachine_server")


class Runnable(Protocol):
    """The kernel, as a program's main drives it."""

    @property
    def shutting_down(self) -> bool: ...

    def running_loop(self) -> asyncio.AbstractEventLoop: ...

    async def serve(self) -> None: ...

    async def shutdown(self, deadline: float = 5.0) -> None: ...

    def stop(self) -> None: ...


def running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None outside one."""
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


def run(kernel: Runnable, *, loop: str, handle_signals: bool, drain_timeout: float) -> None:
    """Serve ``kernel`` on a new loop until no session is left (see ``Kernel.run``)."""

    async def main() -> None:
        if handle_signals:
            install_signal_handlers(kernel, drain_timeout)
        await kernel.serve()

    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(main())


def install_signal_handlers(kernel: Runnable, drain_timeout: float) -> None:
    """First SIGINT/SIGTERM: a graceful shutdown; the second: stop at once."""
    loop = kernel.running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_signal(signum: int) -> None:
        if kernel.shutting_down:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            kernel.stop()
            return
        log.info("%s: shutting down", signal.Signals(signum).name)
        task = loop.create_task(kernel.shutdown(drain_timeout))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
