"""Kernel micro-benchmark: events and timers per second through our Kernel's queue.

``python -m benchmarks.micro.kernel [--quick]`` prints one JSON object: for each
case, ``{"count": N, "seconds": T, "rate": N / T}``. Cases, each measured once in
this process (the harness runs the process several times and takes medians):

* ``kernel_yield_1``: one session yields to itself N times (``kernel.yield_``): a
  no-op handler apart from the yield. By the fairness rule each tick dispatches
  the one event queued when it began, so every event also costs a trip through
  the asyncio loop.
* ``kernel_yield_many``: 1,000 sessions do the same: each tick dispatches 1,000.
* ``kernel_post_many``: 1,000 sessions each post a no-op event to one sink session
  (by alias, ``kernel.post``) and yield to themselves: two events per step.
* ``kernel_timers_1`` / ``kernel_timers_many``: one / 1,000 sessions re-arm
  ``kernel.delay(0, ...)`` each time it fires: timers per second.
* ``deque_1`` / ``deque_many``: the bare loop the kernel is built around:
  ``append((fn, args))``, ``popleft()``, ``fn(*args)``, with one / 1,000 chains.
* ``asyncio_call_soon_1``: a ``loop.call_soon`` chain: the loop's own cost per
  callback, the floor under ``kernel_yield_1``.
* ``work_direct`` / ``work_chunked``: a CPU job (trial division, one candidate per
  generator step) run straight through, and run as ``session.work()`` with the
  default 1 ms slice: steps per CPU second. Their ratio is the cost of chunking.
* ``work_twisted``: the same generator under Twisted's ``cooperate`` (10 ms
  slices), when Twisted is installed: the peer to beat on that cost.

Event counts come from ``Kernel.statistics().events_dispatched``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from statemachine_server import Kernel, Session

MANY = 1_000

Case = Callable[[int], tuple[int, float]]


def kernel_yield(sessions: int) -> Case:
    def case(n: int) -> tuple[int, float]:
        kernel = Kernel()
        per = max(1, n // sessions)

        def started(session: Session) -> None:
            kernel.yield_("tick", per)

        def tick(session: Session, left: int) -> None:
            if left > 1:
                kernel.yield_("tick", left - 1)

        return _serve(kernel, sessions, {"started": started, "tick": tick})

    return case


def kernel_post_many(n: int) -> tuple[int, float]:
    kernel = Kernel()
    per = max(1, n // (2 * MANY))
    kernel.spawn({"noop": lambda session: None}, alias="sink")
    posting = [MANY]  # posters still at work

    def started(session: Session) -> None:
        kernel.yield_("tick", per)

    def tick(session: Session, left: int) -> None:
        kernel.post("sink", "noop")
        if left > 1:
            kernel.yield_("tick", left - 1)
            return
        posting[0] -= 1
        if not posting[0]:
            kernel.alias_remove("sink")  # the sink lives by its alias: let it go

    return _serve(kernel, MANY, {"started": started, "tick": tick})


def kernel_timers(sessions: int) -> Case:
    def case(n: int) -> tuple[int, float]:
        kernel = Kernel()
        per = max(1, n // sessions)

        def started(session: Session) -> None:
            kernel.delay(0, "tick", per)

        def tick(session: Session, left: int) -> None:
            if left > 1:
                kernel.delay(0, "tick", left - 1)

        return _serve(kernel, sessions, {"started": started, "tick": tick}, count=per * sessions)

    return case


def _serve(
    kernel: Kernel, sessions: int, handlers: dict[str, Any], count: int | None = None
) -> tuple[int, float]:
    """Spawn ``sessions`` sessions inside a fresh loop and time ``kernel.serve()``."""

    async def main() -> float:
        for _ in range(sessions):
            kernel.spawn(handlers)
        started = time.perf_counter()
        await kernel.serve()
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    events = kernel.statistics().events_dispatched
    return (events if count is None else count), elapsed


def bare_deque(chains: int) -> Case:
    def case(n: int) -> tuple[int, float]:
        queue: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        append, popleft = queue.append, queue.popleft
        per = max(1, n // chains)

        def tick(left: int) -> None:
            if left > 1:
                append((tick, (left - 1,)))

        for _ in range(chains):
            append((tick, (per,)))
        started = time.perf_counter()
        while queue:
            fn, args = popleft()
            fn(*args)
        return per * chains, time.perf_counter() - started

    return case


def asyncio_call_soon(n: int) -> tuple[int, float]:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def tick(left: int) -> None:
            if left > 1:
                loop.call_soon(tick, left - 1)
            else:
                done.set_result(None)

        started = time.perf_counter()
        loop.call_soon(tick, n)
        await done
        return time.perf_counter() - started

    return n, asyncio.run(main())


def _prime_steps(limit: int) -> Generator[None, None, int]:
    """A CPU job as a generator: one trial division of one candidate per step."""
    found = 0
    for n in range(2, limit):
        found += all(n % d for d in range(2, int(n**0.5) + 1))
        yield
    return found


def work_direct(n: int) -> tuple[int, float]:
    """The job's generator run straight through: the cost of the work alone."""
    started = time.process_time()
    for _ in _prime_steps(n):
        pass
    return n, time.process_time() - started


def work_chunked(n: int) -> tuple[int, float]:
    """The same generator as ``session.work()`` with the default slice: CPU time of
    the whole process, so every tick, slice and loop iteration is counted."""
    kernel = Kernel()
    kernel.spawn({"started": lambda session: session.work(_prime_steps(n))})

    async def main() -> float:
        started = time.process_time()
        await kernel.serve()
        return time.process_time() - started

    return n, asyncio.run(main())


def work_twisted(n: int) -> tuple[int, float]:
    """The same generator under Twisted's ``cooperate`` (its default 10 ms slices),
    driven by a bare scheduler rather than a reactor: Twisted's share alone."""
    from twisted.internet.task import Cooperator

    class _Call:
        def cancel(self) -> None:
            pass

    pending: list[Callable[[], None]] = []
    cooperator = Cooperator(scheduler=lambda f: (pending.append(f), _Call())[1], started=True)
    cooperator.cooperate(_prime_steps(n))
    started = time.process_time()
    while pending:
        pending.pop()()
    return n, time.process_time() - started


#: Case name -> (function, events at full size).
CASES: dict[str, tuple[Case, int]] = {
    "kernel_yield_1": (kernel_yield(1), 200_000),
    "kernel_yield_many": (kernel_yield(MANY), 400_000),
    "kernel_post_many": (kernel_post_many, 400_000),
    "kernel_timers_1": (kernel_timers(1), 100_000),
    "kernel_timers_many": (kernel_timers(MANY), 200_000),
    "deque_1": (bare_deque(1), 2_000_000),
    "deque_many": (bare_deque(MANY), 2_000_000),
    "asyncio_call_soon_1": (asyncio_call_soon, 400_000),
    "work_direct": (work_direct, 200_000),
    "work_chunked": (work_chunked, 200_000),
}
if importlib.util.find_spec("twisted") is not None:
    CASES["work_twisted"] = (work_twisted, 200_000)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.kernel")
    parser.add_argument("--quick", action="store_true", help="a tenth of the events")
    parser.add_argument("--rotate", type=int, default=0, help="start with the Nth case")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    names = list(CASES)
    shift = args.rotate % len(names)
    results: dict[str, dict[str, float]] = {}
    for name in names[shift:] + names[:shift]:
        case, size = CASES[name]
        case(max(MANY, size // 100))  # warm-up: imports, caches, allocator
        count, seconds = case(size // scale)
        results[name] = {"count": count, "seconds": seconds, "rate": count / seconds}
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
