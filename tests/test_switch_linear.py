"""switch_filter costs linear time in the pipeline depth.

A read of N pipelined memcached ``set`` commands switches the filter 2N times
(line -> block -> line per command). Handing the unread rest of the read to the
new filter as a copy at each switch cost time quadratic in N. The counts below
are exact; the timing check compares per-command times of a short and a long
pipeline, interleaved and best of three, with a bound far above noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeTransport
from test_connection import FakeServer, _close_loops, drain, new_kernel  # noqa: F401

from statemachine_server.filters import LineFilter
from statemachine_server.language import build_server, load_spec
from statemachine_server.language.framing import PullBlockFilter, PullLineFilter
from statemachine_server.net.connection import Connection

SPEC = Path(__file__).resolve().parent.parent / "specs" / "memcache-lite.yaml"


def pipeline(n: int) -> bytes:
    return b"".join(b"set key%d 0 0 10\r\n0123456789\r\n" % i for i in range(n))


@pytest.fixture
def run_pipeline() -> Iterator[Callable[[int], float]]:
    """``run_pipeline(n)``: n sets in one read through the memcache-lite spec,
    in process; checks every reply and returns the seconds it took."""
    spec = load_spec(SPEC)
    servers: list[Any] = []

    def run(n: int) -> float:
        kernel = new_kernel()
        server = build_server(spec, kernel, port=0)
        servers.append(server)
        conn = server._connection_factory()
        transport = FakeTransport()
        transport.set_write_buffer_limits = lambda *a: None  # type: ignore[attr-defined]
        conn.connection_made(transport)  # type: ignore[arg-type]
        drain(kernel)
        data = pipeline(n)
        started = time.perf_counter()
        conn.data_received(data)
        drain(kernel)
        elapsed = time.perf_counter() - started
        assert transport.written == b"STORED\r\n" * n
        assert len(server.heap["items"]) == n
        return elapsed

    yield run
    for server in servers:
        server.close()


def test_bytes_handed_to_filters_grow_linearly(
    run_pipeline: Callable[[int], float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every byte a pull filter is given (get_one_start) or gives back
    # (get_pending) is counted: the bytes of the read, plus whatever is copied
    # from filter to filter on each switch.
    handed = [0]
    for cls in (PullLineFilter, PullBlockFilter):
        start, pending = cls.get_one_start, cls.get_pending

        def counted_start(self: Any, data: bytes, _start: Any = start) -> None:
            handed[0] += len(data)
            _start(self, data)

        def counted_pending(self: Any, _pending: Any = pending) -> bytes:
            out: bytes = _pending(self)
            handed[0] += len(out)
            return out

        monkeypatch.setattr(cls, "get_one_start", counted_start)
        monkeypatch.setattr(cls, "get_pending", counted_pending)

    per_byte = []
    for n in (100, 3000):
        handed[0] = 0
        run_pipeline(n)
        per_byte.append(handed[0] / len(pipeline(n)))
    # Each byte of the read reaches the filters once, however deep the pipeline.
    assert per_byte == [1.0, 1.0]


def test_time_per_command_does_not_grow_with_the_pipeline(
    run_pipeline: Callable[[int], float],
) -> None:
    short, long = 500, 16_000
    run_pipeline(200)  # warm up (regexes, templates)
    best = {short: float("inf"), long: float("inf")}
    for _ in range(3):
        for n in (short, long):
            best[n] = min(best[n], run_pipeline(n) / n)
    # Linear: about 1x. Before, about 5x here (each switch copied the rest of the read).
    assert best[long] < 3 * best[short], best


# -- the hand-over itself --------------------------------------------------------------


def test_a_pull_filter_adopts_another_one_unread_bytes() -> None:
    line = PullLineFilter(100)
    line.get_one_start(b"set k 0 0 3\r\nabc\r\nget k\r\n")
    assert line.get_one() == ["set k 0 0 3"]  # then the switch
    block = PullBlockFilter(3, b"\r\n")
    assert block.adopt(line)
    assert line.get_pending() == b"" and line.get(b"") == []  # left empty
    assert block.get_one() == ["abc"]
    back = PullLineFilter(100)
    assert back.adopt(block)
    assert back.get(b"") == ["get k"]
    assert not PullLineFilter(100).adopt(block)  # nothing left to take


def test_a_filter_with_unread_bytes_of_its_own_does_not_adopt() -> None:
    old, new = PullLineFilter(100), PullLineFilter(100)
    old.get_one_start(b"old\n")
    new.get_one_start(b"new")
    assert not new.adopt(old)
    assert old.get_pending() == b"old\n"
    assert not new.adopt(LineFilter(100))  # not a pull filter: handed a copy instead


def test_switching_back_to_a_filter_reads_only_what_came_after() -> None:
    # The Python API may keep two filters and switch between them: the one
    # switched away from gave its bytes away, so none is read twice.
    lines, block = PullLineFilter(100), PullBlockFilter(2, b"\r\n")
    seen: list[str] = []

    def on_input(session: Connection, record: str) -> None:
        seen.append(record)
        session.switch_filter(block if session._filter is lines else lines)

    kernel = new_kernel()
    server = FakeServer(kernel, input=on_input)
    server.filter_factory = lambda: lines
    conn = Connection(server)  # type: ignore[arg-type]
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    drain(kernel)
    conn.data_received(b"a\nbb\r\nc\ndd\r\ne\n")
    drain(kernel)
    assert seen == ["a", "bb", "c", "dd", "e"]
