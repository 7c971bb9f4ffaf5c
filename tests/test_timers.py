"""Timers: the heap (sans-I/O), the kernel's use of it, and the virtual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import FakeServer, FakeTransport
from hypothesis import given
from hypothesis import strategies as st

from statemachine_server import Connection, Kernel, Limits
from statemachine_server.core.timers import TimerQueue
from statemachine_server.testing import VirtualClock, drain


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=50))
def test_due_timers_come_out_in_time_then_creation_order(plan: list[tuple[float, bool]]) -> None:
    queue = TimerQueue()
    timers = [(queue.add(when, None, "e"), cancel) for when, cancel in plan]
    for timer, cancel in timers:
        if cancel:
            assert queue.cancel(timer.id) is timer
    fired = []
    while (timer := queue.pop_due(100.0)) is not None:
        fired.append(timer)
    expected = sorted((t for t, cancel in timers if not cancel), key=lambda t: (t.when, t.id))
    assert fired == expected
    assert len(queue) == 0 and queue.next_due() is None


def test_periodic_timer_skips_missed_periods() -> None:
    queue = TimerQueue()
    timer = queue.add(1.0, None, "tick", every=2.0)
    assert queue.pop_due(0.5) is None
    assert queue.pop_due(7.5) is timer  # due at 1, 3, 5, 7: fires once...
    assert timer.when == 9.0  # ...and the next is the first period after now
    assert len(queue) == 1
    with pytest.raises(ValueError):
        queue.add(0, None, "e", every=0)


def test_heap_stays_bounded_by_live_timers_under_rearming() -> None:
    queue = TimerQueue()
    tid = queue.add(1.0, None, "e").id
    for i in range(10_000):  # the idle-timeout pattern: cancel and set again
        queue.cancel(tid)
        tid = queue.add(1.0 + i, None, "e").id
    assert len(queue) == 1
    assert len(queue._heap) <= 130


def test_idle_timeout_with_a_virtual_clock() -> None:
    clock = VirtualClock()
    kernel = Kernel(clock=clock)
    server = FakeServer(kernel, input=lambda s, line: s.put(line))
    server.limits = Limits(first_byte_timeout=10, idle_timeout=300)
    conn = Connection(server)  # type: ignore[arg-type]
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    drain(kernel)
    clock.advance(5)
    conn.data_received(b"hi\n")
    drain(kernel)
    clock.advance(299.9)
    assert conn.state == "reading"
    clock.advance(0.2)
    assert conn.state == "closing" and transport.shut
    assert server.counts["timeouts"] == 1


async def test_timers_on_a_real_loop_once_periodic_and_cancelled() -> None:
    kernel = Kernel()
    seen: list[str] = []
    done = asyncio.Event()

    def tick(session: Any, name: str) -> None:
        seen.append(name)
        if seen.count("every") == 3:
            kernel.cancel(session.heap["every"])
            kernel.alias_remove("timers")
            done.set()

    def started(session: Any) -> None:
        kernel.alias_set("timers")
        session.heap["every"] = kernel.delay(0.01, "tick", "every", every=0.01)
        kernel.delay(0.001, "tick", "once")
        kernel.cancel(kernel.delay(0.005, "tick", "cancelled"))

    task = asyncio.create_task(kernel.serve())
    kernel.spawn({"started": started, "tick": tick})
    async with asyncio.timeout(5):
        await done.wait()
        await task
    assert seen == ["once", "every", "every", "every"]
    assert kernel.statistics().timers_pending == 0
