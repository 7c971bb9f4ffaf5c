"""The kernel on its own: queue order, fairness, call, timers, lifetimes, isolation."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from statemachine_server import Kernel, Session

TIMEOUT = 10.0


async def serve(kernel: Kernel) -> None:
    async with asyncio.timeout(TIMEOUT):
        await kernel.serve()


async def test_post_is_fifo_and_handlers_get_session_and_args() -> None:
    kernel = Kernel()
    seen: list[Any] = []

    def started(session: Session) -> None:
        for i in range(5):
            kernel.post(session, "item", i, i * i)

    def item(session: Session, a: int, b: int) -> None:
        seen.append((session.id, a, b))

    s = kernel.spawn({"started": started, "item": item})
    await serve(kernel)
    assert seen == [(s.id, i, i * i) for i in range(5)]


async def test_post_by_id_and_alias_and_to_nobody() -> None:
    kernel = Kernel()
    got: list[str] = []
    s = kernel.spawn({"hi": lambda session, who: got.append(who)}, alias="greeter")
    assert kernel.post(s.id, "hi", "by id")
    assert kernel.post("greeter", "hi", "by alias")
    assert kernel.post(s, "hi", "by object")
    assert not kernel.post("nobody", "hi", "lost")
    assert not kernel.post(999, "hi", "lost")
    kernel.alias_remove("greeter")  # queued events still keep it alive
    await serve(kernel)
    assert got == ["by id", "by alias", "by object"]
    assert kernel.statistics().sessions == 0


async def test_events_posted_during_a_tick_wait_for_the_next_tick() -> None:
    kernel = Kernel()
    order: list[str] = []

    def ping(session: Session, n: int) -> None:
        order.append(f"{session.heap['name']}{n}")
        if n < 3:
            kernel.yield_("ping", n + 1)

    handlers = {"started": lambda s: kernel.yield_("ping", 1), "ping": ping}
    kernel.spawn(handlers, heap={"name": "a"})
    kernel.spawn(handlers, heap={"name": "b"})
    await serve(kernel)
    # Round robin: neither session's chain of yields runs ahead of the other's.
    assert order == ["a1", "b1", "a2", "b2", "a3", "b3"]
    assert kernel.statistics().ticks == 3


async def test_socket_io_is_polled_between_ticks() -> None:
    # A session that keeps yielding to itself must not starve other loop work: the
    # loop gets control back every 0.25 ms (about 200 of these ticks), so other
    # work runs long before the spinner would stop by itself.
    kernel = Kernel()
    spins = 0
    other_ran_after: list[int] = []

    def spin(session: Session) -> None:
        nonlocal spins
        spins += 1
        if spins < 200_000 and not other_ran_after:
            kernel.yield_("spin")

    kernel.spawn({"started": lambda s: kernel.yield_("spin"), "spin": spin})

    async def other() -> None:
        await asyncio.sleep(0)
        other_ran_after.append(spins)

    task = asyncio.create_task(other())
    await serve(kernel)
    await task
    assert other_ran_after and other_ran_after[0] < 20_000


async def test_call_runs_now_and_returns_the_value() -> None:
    kernel = Kernel()
    s = kernel.spawn({"double": lambda session, x: 2 * x}, alias="math")
    assert kernel.call("math", "double", 21) == 42
    assert kernel.call(s, "nothing") is None
    with pytest.raises(LookupError):
        kernel.call("nobody", "double", 1)
    kernel.alias_remove("math")
    assert kernel.statistics().sessions == 0


async def test_yield_outside_a_handler_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        Kernel().yield_("x")


async def test_delay_alarm_and_cancel() -> None:
    kernel = Kernel()
    fired: list[str] = []

    def started(session: Session) -> None:
        kernel.delay(0.02, "tick", "second")
        kernel.alarm(kernel.time() + 0.01, "tick", "first")
        doomed = kernel.delay(0.001, "tick", "cancelled")
        assert kernel.cancel(doomed)
        assert not kernel.cancel(doomed)
        assert kernel.statistics().timers_pending == 2

    kernel.spawn({"started": started, "tick": lambda s, what: fired.append(what)})
    await serve(kernel)
    assert fired == ["first", "second"]
    assert kernel.statistics().timers_pending == 0


async def test_session_is_freed_when_nothing_is_left_to_do() -> None:
    kernel = Kernel()
    stopped: list[int] = []

    def started(session: Session) -> None:
        kernel.yield_("work")

    s = kernel.spawn(
        {"started": started, "work": lambda s: None, "stopped": lambda s: stopped.append(s.id)}
    )
    ref = weakref.ref(s)
    sid = s.id
    del s
    await serve(kernel)
    gc.collect()
    assert stopped == [sid]
    assert ref() is None
    assert kernel.statistics().sessions == 0


async def test_session_with_nothing_to_do_stops_at_once() -> None:
    kernel = Kernel()
    stopped: list[int] = []
    s = kernel.spawn({"stopped": lambda s: stopped.append(s.id)})
    assert stopped == [s.id]
    assert s.state == "stopped"
    assert kernel.session(s) is None


async def test_handler_exception_goes_to_error_handler_and_others_go_on() -> None:
    kernel = Kernel()
    errors: list[str] = []
    done: list[int] = []

    def boom(session: Session) -> None:
        raise ValueError("bad")

    def started(session: Session) -> None:
        for n in range(3):
            kernel.yield_("ok", n)

    kernel.spawn(
        {
            "started": lambda s: kernel.yield_("boom"),
            "boom": boom,
            "error": lambda s, exc: errors.append(repr(exc)),
        }
    )
    kernel.spawn({"started": started, "ok": lambda s, n: done.append(n)})
    await serve(kernel)
    assert errors == ["ValueError('bad')"]
    assert done == [0, 1, 2]
    assert kernel.statistics().handler_errors == 1


async def test_unhandled_exception_is_logged_with_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = Kernel()
    s = kernel.spawn({"boom": lambda s: 1 / 0}, alias="x")
    kernel.post(s, "boom")
    kernel.post(s, "boom")
    kernel.delay  # noqa: B018 (the kernel stays usable)
    kernel.spawn({"started": lambda _: kernel.alias_remove("x")})
    await serve(kernel)
    assert caplog.text.count(f"session {s.id}: handler for 'boom' raised ZeroDivisionError") == 2


async def test_a_session_class_with_its_own_deliver_gets_every_event() -> None:
    # The kernel calls a plain session's handlers directly; a class with its own
    # deliver (as Connection has) sees each event first, and a subclass without
    # one is still plain.
    kernel = Kernel()
    seen: list[tuple[str, str]] = []

    class Routed(Session):
        def deliver(self, event: Any, args: tuple[Any, ...]) -> Any:
            seen.append(("routed", event))
            return super().deliver(event, args)

    class Named(Session):
        pass

    handlers = {"started": lambda s: kernel.yield_("go"), "go": lambda s: seen.append(("go", ""))}
    Routed(kernel, handlers)
    Named(kernel, handlers)
    await serve(kernel)
    assert seen == [("routed", "started"), ("routed", "go"), ("go", ""), ("go", "")]


async def test_alias_must_be_unique() -> None:
    kernel = Kernel()
    kernel.spawn({}, alias="one")
    with pytest.raises(ValueError, match="taken"):
        kernel.spawn({}, alias="one")


async def test_stop_returns_from_serve() -> None:
    kernel = Kernel()
    kernel.spawn({}, alias="daemon")  # would live forever
    task = asyncio.create_task(serve(kernel))
    await asyncio.sleep(0)
    kernel.stop()
    await task
    assert kernel.statistics().sessions == 1


async def test_shutdown_event_reaches_sessions_that_want_it() -> None:
    kernel = Kernel()
    kernel.spawn({"shutdown": lambda s: kernel.alias_remove("svc")}, alias="svc")
    task = asyncio.create_task(serve(kernel))
    await asyncio.sleep(0)
    await kernel.shutdown(deadline=TIMEOUT)
    await task
    assert kernel.statistics().sessions == 0


def test_run_drives_its_own_loop() -> None:
    kernel = Kernel()
    out: list[int] = []
    kernel.spawn({"started": lambda s: kernel.yield_("go", 7), "go": lambda s, n: out.append(n)})
    kernel.run(handle_signals=False)
    assert out == [7]


def test_unknown_loop_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown loop"):
        Kernel().run(loop="nope")
