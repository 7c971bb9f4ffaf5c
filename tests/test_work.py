"""Chunked work, driven without sockets: slices, turns, holds, timeouts, cancels.

Time is virtual (VirtualClock): sleeps and timeouts of seconds run instantly.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest
from fakes import FakeServer, FakeTransport

from statemachine_server import Connection, Kernel
from statemachine_server.testing import VirtualClock, drain
from statemachine_server.work import Cancelled, WorkTimeout, sleep


def connect(kernel: Kernel, **handlers: Any) -> tuple[Connection, FakeTransport]:
    conn = Connection(FakeServer(kernel, **handlers))  # type: ignore[arg-type]
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    drain(kernel)
    assert conn.state == "reading"
    return conn, transport


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def kernel(clock: VirtualClock) -> Kernel:
    return Kernel(clock=clock)


def steps(n: int, log: list[Any] | None = None, tag: Any = None) -> Generator[None, None, int]:
    for i in range(n):
        if log is not None:
            log.append((tag, i))
        yield
    return n


def test_a_slice_runs_as_many_steps_as_fit(kernel: Kernel) -> None:
    done: list[int] = []
    conn, _t = connect(
        kernel, input=lambda s, line: s.work(steps(1000), lambda s, r: done.append(r))
    )
    kernel.slice = 0.2  # ample even on a slow machine: 1000 steps take ~0.2 ms
    conn.data_received(b"go\n")
    kernel.tick()  # the input starts the job, and its first slice runs in the same tick
    assert done == [1000]  # 1000 tiny steps fit in one slice
    assert conn.state == "reading"


def test_jobs_of_different_sessions_take_turns(kernel: Kernel) -> None:
    kernel.slice = 1e-9  # one step per slice
    order: list[Any] = []
    a, _ = connect(kernel, input=lambda s, line: s.work(steps(3, order, "a")))
    b, _ = connect(kernel, input=lambda s, line: s.work(steps(3, order, "b")))
    a.data_received(b"go\n")
    b.data_received(b"go\n")
    drain(kernel)
    assert [tag for tag, _ in order] == ["a", "b", "a", "b", "a", "b"]


def test_replies_of_the_tick_are_written_before_a_slice_runs(kernel: Kernel) -> None:
    seen: list[bytes] = []
    conn, t = connect(kernel)

    def job() -> Iterator[None]:
        seen.append(t.written)  # what the client has been sent when work begins
        yield

    def on_input(session: Connection, line: str) -> None:
        if line == "work":
            session.work(job())
        else:
            session.put(line)

    _other, _t2 = connect(kernel, input=on_input)
    conn.server.handlers["input"] = on_input
    conn.handler_table = Connection.dispatch(conn.server.handlers)
    conn.data_received(b"hello\nwork\n")
    kernel.tick()
    assert seen == [b"hello\n"]


def test_input_waits_for_the_job_and_sleep_does_not_block(
    kernel: Kernel, clock: VirtualClock
) -> None:
    def slow() -> Generator[Any, None, str]:
        yield sleep(10)
        return "slept"

    def on_input(session: Connection, line: str) -> None:
        if line == "sleep":
            session.work(slow(), lambda s, result: s.put(result))
        else:
            session.put(line)

    conn, t = connect(kernel, input=on_input)
    other, t2 = connect(kernel, input=on_input)
    conn.data_received(b"sleep\nafter\n")
    drain(kernel)
    assert conn.state == "working"
    other.data_received(b"meanwhile\n")
    drain(kernel)
    assert t2.written == b"meanwhile\n"  # another client is served during the sleep
    clock.advance(9.9)
    assert t.written == b""
    clock.advance(0.1)
    assert t.written == b"slept\nafter\n"  # postponed input handled after, in order
    assert kernel.statistics().jobs == 0


def test_progress_is_rate_limited(kernel: Kernel, clock: VirtualClock) -> None:
    def job() -> Generator[Any, None, None]:
        for i in range(6):
            yield f"{i}"
            yield sleep(1)

    conn, t = connect(
        kernel,
        input=lambda s, line: s.work(
            job(), on_progress=lambda s, v: s.put(f"progress {v}"), progress_every=2
        ),
    )
    conn.data_received(b"go\n")
    drain(kernel)
    clock.advance(10)
    assert t.written == b"progress 0\nprogress 2\nprogress 4\n"


def test_timeout_closes_the_generator_and_tells_the_client(
    kernel: Kernel, clock: VirtualClock
) -> None:
    finished: list[bool] = []

    def forever() -> Generator[Any, None, None]:
        try:
            while True:
                yield sleep(1)
        finally:
            finished.append(True)

    def on_input(session: Connection, line: str) -> None:
        if line == "forever":
            session.work(forever(), timeout=5, on_error=lambda s, exc: s.put(f"error: {exc}"))
        else:
            session.put(line)

    conn, t = connect(kernel, input=on_input)
    conn.data_received(b"forever\nnext\n")
    drain(kernel)
    clock.advance(4.5)
    assert not finished and t.written == b""
    clock.advance(0.5)
    assert finished == [True]
    assert t.written == b"error: work timed out after 5 s\nnext\n"
    assert conn.state == "reading"
    assert kernel.statistics().timers_pending == 1  # only the idle timeout is left


def test_a_failing_step_without_on_error_closes_only_that_connection(kernel: Kernel) -> None:
    def broken() -> Iterator[None]:
        yield
        raise ValueError("boom")

    conn, t = connect(kernel, input=lambda s, line: s.work(broken()))
    other, t2 = connect(kernel, input=lambda s, line: s.put(line))
    conn.data_received(b"go\nlost\n")
    other.data_received(b"fine\n")
    drain(kernel)
    assert conn.state == "closing" and t.shut
    assert conn.server.counts["handler_errors"] == 1
    assert t2.written == b"fine\n" and other.state == "reading"


def test_a_failing_step_with_on_error_keeps_the_connection(kernel: Kernel) -> None:
    def broken() -> Iterator[None]:
        yield
        raise ValueError("boom")

    def on_input(session: Connection, line: str) -> None:
        if line == "go":
            session.work(broken(), on_error=lambda s, exc: s.put(f"error: {exc}"))
        else:
            session.put(line)

    conn, t = connect(kernel, input=on_input)
    conn.data_received(b"go\nstill here\n")
    drain(kernel)
    assert t.written == b"error: boom\nstill here\n"
    assert conn.state == "reading"


def test_disconnect_mid_job_stops_it_within_one_slice(kernel: Kernel) -> None:
    kernel.slice = 1e-9
    ran: list[int] = []
    finished: list[bool] = []

    def long() -> Iterator[None]:
        try:
            for i in range(10**9):
                ran.append(i)
                yield
        finally:
            finished.append(True)

    conn, _t = connect(kernel, input=lambda s, line: s.work(long()))
    conn.data_received(b"go\n")
    kernel.tick()
    kernel.tick()
    before = len(ran)
    conn.connection_lost(None)
    drain(kernel)
    assert finished == [True]
    assert len(ran) <= before + 1  # at most the slice already under way
    assert conn.state == "closed"
    assert kernel.statistics().jobs == 0
    assert kernel.statistics().sessions == 0


def test_backpressure_holds_the_job_until_the_client_reads(kernel: Kernel) -> None:
    kernel.slice = 1e-9
    ran: list[int] = []
    conn, _t = connect(kernel, input=lambda s, line: s.work(steps(100, ran)))
    conn.data_received(b"go\n")
    kernel.tick()
    conn.pause_writing()  # the client stopped reading
    count = len(ran)
    drain(kernel)
    assert len(ran) == count and conn.state == "working"
    conn.resume_writing()
    drain(kernel)
    assert len(ran) == 100 and conn.state == "reading"


def test_shutdown_cancels_the_job_and_the_client_hears_of_it(kernel: Kernel) -> None:
    said: list[str] = []

    def forever() -> Iterator[Any]:
        while True:
            yield sleep(60)

    def on_error(session: Connection, exc: BaseException) -> None:
        said.append(type(exc).__name__)
        session.put(f"error: {exc}")

    conn, t = connect(kernel, input=lambda s, line: s.work(forever(), on_error=on_error))
    conn.data_received(b"go\n")
    drain(kernel)
    conn.begin_shutdown()
    drain(kernel)
    assert said == ["Cancelled"]
    assert t.written == b"error: server shutting down\n" and t.shut


def test_one_job_at_a_time(kernel: Kernel) -> None:
    errors: list[BaseException] = []

    def on_input(session: Connection, line: str) -> None:
        session.work(steps(10**6))
        session.work(steps(1))

    conn, _t = connect(kernel, input=on_input, error=lambda s, exc: errors.append(exc))
    conn.data_received(b"go\n")
    drain(kernel)
    assert isinstance(errors[0], RuntimeError)


def test_named_timers_replace_clear_and_repeat(kernel: Kernel, clock: VirtualClock) -> None:
    ticks: list[float] = []
    conn, _t = connect(kernel, tick=lambda s, *args: ticks.append(clock.time()))
    conn.timer("tick", 5)
    conn.timer("tick", 3)  # replaces the first
    assert list(conn.timers()) == ["tick"]
    clock.advance(10)
    assert ticks == [3.0]
    conn.timer("tick", 1, every=2)
    clock.advance(6)
    assert ticks == [3.0, 11.0, 13.0, 15.0]
    conn.timer("tick", None)  # cleared
    clock.advance(10)
    assert ticks == [3.0, 11.0, 13.0, 15.0]
    assert conn.timers() == {}


def test_plain_sessions_can_work_too(kernel: Kernel, clock: VirtualClock) -> None:
    results: list[Any] = []

    def job() -> Generator[Any, None, str]:
        yield sleep(1)
        return "ok"

    kernel.spawn({"started": lambda s: s.work(job(), lambda s, r: results.append(r))})
    drain(kernel)  # the first step runs, and sleeps
    clock.advance(1)
    assert results == ["ok"]
    assert kernel.statistics().sessions == 0


def test_cancelled_is_quiet_without_on_error(kernel: Kernel) -> None:
    conn, _t = connect(kernel, input=lambda s, line: s.work(steps(10**9)))
    kernel.slice = 1e-9
    conn.data_received(b"go\n")
    kernel.tick()
    assert conn._job is not None
    conn._job.cancel(Cancelled("stop"))
    drain(kernel)
    assert conn.state == "reading"
    assert conn.server.counts["handler_errors"] == 0


def test_work_timeout_is_an_exception_type() -> None:
    assert issubclass(WorkTimeout, Exception)
