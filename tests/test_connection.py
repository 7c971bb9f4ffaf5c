"""The connection machine, driven without sockets: a fake transport, ticks by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from fakes import FakeServer, FakeTransport

from statemachine_server import BlockFilter, Connection, Kernel
from statemachine_server.core.lifecycle import TABLE
from statemachine_server.limits import Limits
from statemachine_server.net.connection import INPUT_BATCH


def drain(kernel: Kernel) -> None:
    while kernel.busy():
        kernel.tick()


def new_kernel(**kwargs: Any) -> Kernel:
    # A loop that never runs: it only keeps time and holds timers, so the tests
    # drive every tick themselves.
    kernel = Kernel(**kwargs)
    kernel._loop = asyncio.new_event_loop()
    LOOPS.append(kernel._loop)
    return kernel


LOOPS: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(autouse=True)
def _close_loops() -> Iterator[None]:
    yield
    while LOOPS:
        LOOPS.pop().close()


def open_connection(**handlers: Any) -> tuple[Kernel, Connection, FakeTransport]:
    kernel = new_kernel()
    conn = Connection(FakeServer(kernel, **handlers))  # type: ignore[arg-type]
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    assert conn.state == "accepting"
    drain(kernel)
    return kernel, conn, transport


def echo(session: Connection, line: str) -> None:
    session.put(line)


def test_echo_and_remote_address() -> None:
    kernel, conn, t = open_connection(input=echo)
    assert conn.state == "reading"
    assert (conn.remote_ip, conn.remote_port) == ("127.0.0.1", 4242)
    assert conn.client is conn
    conn.data_received(b"one\ntwo\n")
    drain(kernel)
    assert t.written == b"one\ntwo\n"


def test_replies_of_one_tick_go_out_in_one_write() -> None:
    kernel, conn, t = open_connection(input=echo)
    writes: list[bytes] = []
    t.write = writes.append  # type: ignore[method-assign]
    conn.data_received(b"a\nb\nc\n")
    drain(kernel)
    assert writes == [b"a\nb\nc\n"]


def test_eof_answers_every_line_before_closing() -> None:
    closed: list[int] = []
    kernel, conn, t = open_connection(input=echo, closed=lambda s: closed.append(s.id))
    conn.data_received(b"".join(b"%d\n" % i for i in range(100)))
    conn.eof_received()
    drain(kernel)
    assert t.written == b"".join(b"%d\n" % i for i in range(100))
    assert t.shut and conn.state == "closing"
    conn.connection_lost(None)
    drain(kernel)
    assert conn.state == "closed" and closed == [conn.id]
    assert kernel.statistics().sessions == 0


def count_to(n: int) -> Generator[int, None, int]:
    yield from range(n)
    return n


def test_input_during_work_is_postponed_in_order_with_eof() -> None:
    def on_input(session: Connection, line: str) -> None:
        if line == "work":
            session.work(count_to(5), lambda s, result: s.put(f"done {result}"))
        else:
            session.put(line)

    kernel, conn, t = open_connection(input=on_input)
    kernel.slice = 1e-9  # one step per tick
    conn.data_received(b"a\nwork\nb\nc\n")
    conn.eof_received()
    kernel.tick()  # a, work (starts), b, c, eof: the last three are postponed
    assert conn.state == "working"
    assert t.reading  # still reading: a client that leaves is noticed
    drain(kernel)
    assert t.written == b"a\ndone 5\nb\nc\n"
    assert t.shut


def test_work_can_start_again_from_postponed_input() -> None:
    def on_input(session: Connection, line: str) -> None:
        session.work(count_to(int(line)), lambda s, r: s.put(f"{line}:{r}"))

    kernel, conn, t = open_connection(input=on_input)
    conn.data_received(b"3\n1\n2\n")
    drain(kernel)
    assert t.written == b"3:3\n1:1\n2:2\n"
    assert conn.state == "reading" and t.reading


def test_backpressure_postpones_input_until_low_water() -> None:
    kernel, conn, t = open_connection(input=echo)
    conn.pause_writing()  # the transport's buffer passed the high-water mark
    assert not t.reading
    conn.data_received(b"x\ny\n")
    drain(kernel)
    assert conn.state == "replying" and t.written == b""
    conn.resume_writing()
    drain(kernel)
    assert conn.state == "reading" and t.reading
    assert t.written == b"x\ny\n"


def test_overlong_line_answers_earlier_lines_then_closes() -> None:
    errors: list[str] = []
    kernel, conn, t = open_connection(input=echo)
    conn.data_received(b"short\n" + b"x" * 40 + b"\n")
    conn.data_received(b"ignored\n")
    drain(kernel)
    assert t.written == b"short\n"
    assert t.shut and not errors


def test_handler_error_closes_after_flushing_and_drops_later_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_input(session: Connection, line: str) -> None:
        if line == "boom":
            raise RuntimeError("handler bug")
        session.put(line)

    kernel, conn, t = open_connection(input=on_input)
    conn.data_received(b"a\nboom\nb\n")
    drain(kernel)
    assert t.written == b"a\n" and t.shut
    assert f"session {conn.id} (state closing, event 'input')" in caplog.text
    assert "RuntimeError: handler bug" in caplog.text


def batch_echo(session: Connection, records: list[str]) -> tuple[int, BaseException] | None:
    # An INPUT_BATCH function as the spec compiler makes them: None when every
    # record was handled, else the records it handled and the exception that
    # stopped it.
    for n, line in enumerate(records):
        if line == "boom":
            return n, RuntimeError("handler bug")
        session.put(line)
    return None


def test_an_input_batch_takes_a_reads_records_in_one_call() -> None:
    one_by_one: list[str] = []
    errors: list[BaseException] = []

    def on_input(session: Connection, line: str) -> None:
        one_by_one.append(line)

    handlers = {"input": on_input, INPUT_BATCH: batch_echo, "error": lambda s, e: errors.append(e)}
    kernel, conn, t = open_connection(**handlers)
    conn.data_received(b"a\nb\n")
    drain(kernel)
    assert t.written == b"a\nb\n" and not one_by_one
    # A failure is the error event of that record, as with a handler per record;
    # the error closes the connection, so what follows is dropped.
    conn.data_received(b"c\nboom\nd\n")
    drain(kernel)
    assert t.written == b"a\nb\nc\n" and t.shut and not one_by_one
    assert [str(e) for e in errors] == ["handler bug"]


def test_no_input_batch_outside_reading() -> None:
    # Only while reading with nothing postponed: otherwise the table decides.
    kernel, conn, t = open_connection(input=echo, **{INPUT_BATCH: batch_echo})
    conn._enter("working", "work")
    conn.data_received(b"held\n")
    drain(kernel)
    assert t.written == b""  # postponed by the table, not echoed by the batch
    conn._enter("reading", "work_done")
    conn._replay()
    drain(kernel)
    assert t.written == b"held\n"


def test_error_handler_can_reply_before_the_close() -> None:
    def on_input(session: Connection, line: str) -> None:
        raise KeyError(line)

    def on_error(session: Connection, exc: BaseException) -> None:
        session.put(f"error: {exc!r}")

    kernel, conn, t = open_connection(input=on_input, error=on_error)
    conn.data_received(b"k\n")
    drain(kernel)
    assert t.written == b"error: KeyError('k')\n" and t.shut


def test_close_inside_a_handler_takes_effect_at_once() -> None:
    def on_input(session: Connection, line: str) -> None:
        session.put(line)
        if line == "quit":
            session.close()

    kernel, conn, t = open_connection(input=on_input)
    conn.data_received(b"a\nquit\nb\n")
    drain(kernel)
    assert t.written == b"a\nquit\n" and t.shut


def test_put_after_close_is_dropped() -> None:
    kernel, conn, t = open_connection(input=echo)
    conn.connection_lost(ConnectionResetError())
    drain(kernel)
    conn.put("late")
    drain(kernel)
    assert t.written == b""


def test_flushed_event() -> None:
    flushed: list[int] = []
    kernel, conn, t = open_connection(input=echo, flushed=lambda s: flushed.append(len(t.written)))
    conn.data_received(b"hi\n")
    drain(kernel)
    assert flushed == [3]


def test_trace_logs_transitions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="statemachine_server")
    kernel = new_kernel(trace=True)
    conn = Connection(FakeServer(kernel, input=echo))  # type: ignore[arg-type]
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    drain(kernel)
    conn.eof_received()
    drain(kernel)
    assert f"session {conn.id}: accepting --connected--> reading" in caplog.text
    assert f"session {conn.id}: reading --eof--> closing" in caplog.text


def test_every_state_but_closed_has_a_way_to_closed() -> None:
    for state, rules in TABLE.items():
        if state != "closed":
            assert rules["closed"].dest == "closed"


def test_postponed_input_is_bounded_by_pausing_reading() -> None:
    def on_input(session: Connection, line: str) -> None:
        if line == "work":
            session.work(count_to(3))
        session.put(line)

    kernel, conn, t = open_connection(input=on_input)
    kernel.slice = 1e-9  # one step per tick
    conn.server.limits = Limits(max_postponed=3)  # type: ignore[misc]
    conn.data_received(b"work\n1\n2\n")
    kernel.tick()
    assert conn.state == "working" and t.reading
    conn.data_received(b"3\n")
    kernel.tick()
    assert not t.reading  # 3 postponed: the client waits, nothing is dropped
    drain(kernel)
    assert t.reading and t.written == b"work\n1\n2\n3\n"


def test_a_timeout_check_already_queued_does_not_abort_a_fresh_close() -> None:
    # The timeout timer fires (its event is queued) in the same tick as a handler
    # closes the connection and re-arms the timer for the drain deadline: the
    # stale check must not mistake itself for that deadline and cut the replies.
    def bye(session: Connection, line: str) -> None:
        session.put("bye")
        session.close()

    kernel, conn, t = open_connection(input=bye)
    aborted: list[bool] = []
    t.abort = lambda: aborted.append(True)  # type: ignore[attr-defined]
    t.buffered = 1 << 20  # the client is slow: the close waits for the drain
    conn.data_received(b"quit\n")
    kernel.fire_due(kernel.time() + 3600)  # the old timer fires: its event queued behind
    drain(kernel)
    assert conn.state == "closing"
    assert t.written == b"bye\n"
    assert not aborted
    assert conn.server.counts["aborted"] == 0
    assert conn._watch in kernel._timers  # the drain deadline still stands


def switch_on_binary(session: Connection, record: Any) -> None:
    # A line protocol that turns to length-prefixed blocks after "BINARY".
    if record == "BINARY":
        session.put("OK")
        session.switch_filter(BlockFilter(codec="u8"))
    else:
        session.put(record)


def test_switch_filter_hands_pending_bytes_to_the_new_filter() -> None:
    kernel, conn, t = open_connection(input=switch_on_binary)
    conn.data_received(b"hello\nBINARY\n\x03ab")  # the block's tail comes later
    drain(kernel)
    assert t.written == b"hello\nOK\n"  # "OK" was put for the line filter
    conn.data_received(b"c\x01z")
    drain(kernel)
    assert t.written == b"hello\nOK\n\x03abc\x01z"


def test_switch_filter_queues_records_of_pending_bytes_in_order() -> None:
    kernel, conn, t = open_connection(input=switch_on_binary)
    conn.data_received(b"BINARY\n\x01x\x02yz\x01")  # whole blocks already pending
    drain(kernel)
    assert t.written == b"OK\n\x01x\x02yz"
    assert conn.state == "reading"


def test_switch_filter_with_broken_pending_bytes_closes_after_the_good_records() -> None:
    def on_input(session: Connection, record: Any) -> None:
        if record == "NET":
            session.switch_filter(BlockFilter(codec="netstring"))
        else:
            session.put(record)

    kernel, conn, t = open_connection(input=on_input)
    conn.data_received(b"NET\n1:a,x:")
    drain(kernel)
    assert t.written == b"1:a,"
    assert t.shut and conn.server.counts["protocol_errors"] == 1


def test_high_and_low_events_reach_handlers() -> None:
    seen: list[str] = []
    kernel, conn, _t = open_connection(
        input=echo,
        output_high=lambda s: seen.append(f"high in {s.state}"),
        output_low=lambda s: seen.append(f"low in {s.state}"),
    )
    conn.pause_writing()
    drain(kernel)
    conn.resume_writing()
    drain(kernel)
    assert seen == ["high in replying", "low in reading"]


def test_pause_input_holds_reading_until_resumed_and_keeps_other_holds() -> None:
    _kernel, conn, t = open_connection(input=echo)
    conn.pause_input()
    assert not t.reading
    conn.pause_writing()  # a second reason to hold reading
    conn.resume_input()
    assert not t.reading  # still held by the backlog
    conn.resume_writing()
    assert t.reading


def test_shutdown_output_sends_fin_after_the_replies_and_keeps_reading() -> None:
    got: list[str] = []

    def handle(session: Connection, line: str) -> None:
        got.append(line)
        if line == "last":
            session.put("bye")
            session.shutdown_output()
            session.put("dropped: after the end of output")

    kernel, conn, t = open_connection(input=handle)
    conn.data_received(b"a\nlast\n")
    drain(kernel)
    assert t.written == b"bye\n" and t.eof and not t.closed
    conn.data_received(b"more\n")  # the client may still send: handled
    drain(kernel)
    assert got == ["a", "last", "more"] and conn.state == "reading"
    conn.eof_received()  # both sides are done
    drain(kernel)
    assert t.closed and t.written == b"bye\n"


def test_hold_keeps_the_connection_past_end_of_input_until_released() -> None:
    heard: list[str] = []
    kernel, conn, t = open_connection(input=echo)
    conn.hold(lambda s: heard.append("eof"))
    conn.data_received(b"a\n")
    conn.eof_received()
    drain(kernel)
    assert heard == ["eof"] and conn.state == "reading" and not t.shut
    conn.put("late reply")  # from elsewhere (a proxy's upstream), after the client's end
    drain(kernel)
    conn.release()
    drain(kernel)
    assert t.written == b"a\nlate reply\n" and t.shut
    assert conn.state in ("closing", "closed")


def test_release_before_end_of_input_leaves_the_usual_close() -> None:
    kernel, conn, t = open_connection(input=echo)
    conn.hold(lambda s: None)
    conn.release()
    conn.data_received(b"a\n")
    conn.eof_received()
    drain(kernel)
    assert t.written == b"a\n" and t.shut


def test_shutdown_output_with_nothing_put_writes_nothing_but_the_end() -> None:
    def handle(session: Connection, line: str) -> None:
        session.shutdown_output()
        session.put("dropped")  # after the end of output: no stray empty record either

    kernel, conn, t = open_connection(input=handle)
    conn.data_received(b"x\n")
    drain(kernel)
    assert t.written == b"" and t.eof


def test_a_record_of_the_wrong_type_fails_at_put_and_names_it() -> None:
    kernel, conn, t = open_connection()
    with pytest.raises(TypeError, match="this connection's line filter sends str, not bytes"):
        conn.put(b"raw")
    conn.put("fine")
    # A block filter takes bytes and text alike (text as UTF-8, any bytes kept).
    conn.switch_filter(BlockFilter(codec="u8"))
    conn.put(b"ab", "c\udcff")
    drain(kernel)
    assert t.written == b"fine\n\x02ab\x02c\xff"


def test_write_sends_bytes_as_they_are_in_order_with_replies() -> None:
    kernel, conn, t = open_connection()
    conn.put("one")
    conn.write("prompt> ")
    conn.put("two")
    conn.write(b"\x00")
    with pytest.raises(TypeError, match="write\\(\\) takes bytes or str, not int"):
        conn.write(3)  # type: ignore[arg-type]
    drain(kernel)
    assert t.written == b"one\nprompt> two\n\x00"


def test_events_others_post_to_a_working_connection_are_bounded() -> None:
    # Its own input stops at max_postponed (reading pauses); events other
    # sessions post do not, so past ten times that the connection is aborted.
    def forever(session: Connection, line: str) -> None:
        def job() -> Any:
            while True:
                yield

        session.work(job())

    kernel, conn, t = open_connection(input=forever, news=lambda s, *a: None)
    conn.data_received(b"go\n")
    kernel.tick()
    assert conn.state == "working"
    limit = conn.server.limits.max_postponed
    for _ in range(limit * 10 - 1):
        kernel.enqueue(conn, "news", ())
    kernel.tick()
    assert conn.state == "working"
    kernel.enqueue(conn, "news", ())
    kernel.tick()
    assert conn.state == "closing" and t.closed  # aborted; what waited is dropped
    assert conn.server.counts["overflows"] == 1
