"""Switchable framing: pull filters, and Connection.switch_filter mid-read."""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_connection import FakeServer, FakeTransport, _close_loops, drain, new_kernel  # noqa: F401

from statemachine_server import ProtocolError, RecordTooLong
from statemachine_server.filters import LineFilter
from statemachine_server.language.framing import PullBlockFilter, PullLineFilter
from statemachine_server.net.connection import Connection

DATA = b"one\r\ntwo\n\xff\xfe bytes\n\nlast without end"


def chunks(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(len(data))
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 7)
        out.append(data[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_pull_lines_frame_as_the_line_filter_does(how: str) -> None:
    pull, batch = PullLineFilter(64), LineFilter(64)
    got, want = [], []
    for chunk in chunks(DATA, how):
        got += pull.get(chunk)
        want += batch.get(chunk)
    assert got == want == ["one", "two", "\udcff\udcfe bytes", ""]
    assert pull.get_pending() == b"last without end"
    assert pull.put(["a", "b"]) == b"a\nb\n"
    assert PullLineFilter(64, "\r\n").put(["a"]) == b"a\r\n"


def test_pull_lines_are_bounded() -> None:
    f = PullLineFilter(4)
    assert f.get(b"1234\r\n") == ["1234"]
    with pytest.raises(RecordTooLong):
        f.get(b"12345\n")
    g = PullLineFilter(4)
    with pytest.raises(RecordTooLong):
        for byte in chunks(b"x" * 10, "bytes"):
            g.get(byte)


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_blocks_are_exact_and_checked(how: str) -> None:
    f = PullBlockFilter(5, b"\r\n")
    got = []
    for chunk in chunks(b"a\r\nbc\r\n\xff\x00\x01\r\n\r\nrest", how):
        got += f.get(chunk)
    assert [g.encode("utf-8", "surrogateescape") for g in got] == [b"a\r\nbc", b"\xff\x00\x01\r\n"]
    assert f.get_pending() == b"rest"
    with pytest.raises(ProtocolError):
        PullBlockFilter(2, b"\r\n").get(b"abXY")


def connection(**handlers: Any) -> tuple[Connection, FakeTransport, Any]:
    kernel = new_kernel()
    named = handlers.pop("named", {})
    server = FakeServer(kernel, **handlers)
    server.dispatch.update(named)
    server.filter_factory = lambda: PullLineFilter(100)
    conn = Connection(server)  # type: ignore[arg-type]
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    drain(kernel)
    return conn, transport, kernel


def test_switch_filter_mid_read_hands_the_rest_to_the_new_filter() -> None:
    seen: list[str] = []

    def on_input(session: Connection, record: str) -> None:
        seen.append(record)
        if record.startswith("block "):
            session.switch_filter(PullBlockFilter(int(record.split()[1]), b"\r\n"))
        elif isinstance(session._filter, PullBlockFilter):
            session.switch_filter(PullLineFilter(100))

    conn, _, kernel = connection(input=on_input)
    conn.data_received(b"block 4\r\nab\r\n\r\nline\nblock 1\r\n")
    conn.data_received(b"\n\r\nend\n")
    drain(kernel)
    assert seen == ["block 4", "ab\r\n", "line", "block 1", "\n", "end"]


def test_switch_filter_to_a_batch_filter_takes_the_pending_bytes() -> None:
    seen: list[Any] = []

    def on_input(session: Connection, record: Any) -> None:
        seen.append(record)
        if record == "raw":
            session.switch_filter(LineFilter(100))

    conn, _, kernel = connection(input=on_input)
    conn.data_received(b"raw\nnext\npart")
    drain(kernel)
    conn.data_received(b"ial\n")
    drain(kernel)
    assert seen == ["raw", "next", "partial"]


def test_pull_framing_keeps_order_while_working() -> None:
    seen: list[Any] = []

    def on_input(session: Connection, record: str) -> None:
        seen.append(record)
        session.post("ping", record)
        if record == "work":
            session.work(iter([1, 2]), lambda s, r: seen.append("done"))

    conn, transport, kernel = connection(
        input=on_input, named={"ping": lambda s, arg: seen.append(f"ping {arg}")}
    )
    conn.data_received(b"work\nafter\n")
    drain(kernel)
    # Both wait while working, in the order they came: the bytes of "after" were
    # received before "ping work" was posted.
    assert seen == ["work", "done", "after", "ping work", "ping after"]
    conn.eof_received()
    drain(kernel)
    assert transport.shut
