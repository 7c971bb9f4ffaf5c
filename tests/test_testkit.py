"""The test kit's spec_server fixture, its clients and its janitor (statemachine_server.testkit)."""

from __future__ import annotations

import re
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from statemachine_server import Kernel
from statemachine_server.errors import SpecError
from statemachine_server.testkit import ExpectationFailed, Janitor, serve
from statemachine_server.testkit.janitor import kernel_leftovers, process_leftovers, snapshot
from statemachine_server.testkit.transport import MemoryTransport

pytest_plugins = ["pytester"]

SPECS = Path(__file__).resolve().parent.parent / "specs"

#: A login with a 30 s state timeout, and a 2 s one after it.
TIMED = textwrap.dedent("""\
    version: 1
    server:
      name: timed
      limits: {first_byte_timeout: null}
    initial: login
    states:
      login:
        enter: [reply: "name?"]
        timeout: {after: 30, do: [reply: "too slow", close]}
        handlers:
          input:
            - match: '^(?P<name>\\w+)$'
              do: [set: {name: match.name}, goto: ready]
      ready:
        enter: [reply: "hello {heap.name}"]
        handlers:
          input:
            - equals: bye
              do: [reply: "bye", close]
            - do: [reply: "{heap.name}: {input}"]
    """)


# -- sync tests: each call runs the loop ------------------------------------------------


def test_sync_memory_virtual_clock_state_timeout_is_instant(spec_server: Any) -> None:
    server = spec_server(TIMED)
    client = server.connect()
    client.expect("name?")
    started = time.perf_counter()
    server.advance(29.9)
    with pytest.raises(ExpectationFailed, match="the server is idle"):
        client.expect("too slow")  # nothing yet: fails at once, not after a timeout
    server.advance(0.1)
    client.expect("too slow")
    client.expect_closed()
    # 30 s of protocol time, in a few milliseconds of real time.
    assert time.perf_counter() - started < 0.5


def test_sync_conversation_regex_list_and_session(spec_server: Any) -> None:
    server = spec_server(TIMED)
    ada = server.connect("ada")
    ada.expect("name?")
    ada.send("ada")
    ada.expect(re.compile(r"^hello a"))
    assert ada.session.protocol_state == "ready"
    assert ada.session.heap["name"] == "ada"
    ada.send("one", "two")
    assert ada.expect(["ada: one", re.compile("two$")]) == ["ada: one", "ada: two"]
    ada.send("bye")
    ada.expect("bye")
    ada.expect_closed()
    assert ada.received[-1] == "bye"


def test_sync_over_tcp_with_a_real_clock(spec_server: Any) -> None:
    server = spec_server(TIMED, transport="tcp", clock="real")
    assert server.server.port > 0
    client = server.connect()
    client.expect("name?")
    client.send("bob")
    client.expect("hello bob")
    client.send("bye")
    client.expect("bye")
    client.expect_closed()


def test_failure_shows_expected_received_history_and_rule(spec_server: Any) -> None:
    server = spec_server(SPECS / "chat.yaml")
    ada, bob = server.connect("ada"), server.connect("bob")
    for client, nick in ((ada, "ada"), (bob, "bob")):
        client.expect("Welcome to chat. Your nick?")
        client.send(nick)
        client.expect(re.compile(f"^Hello {nick}"))
    ada.expect("* bob joined #lobby")
    bob.send("hi")
    with pytest.raises(ExpectationFailed) as caught:
        ada.expect("<bob> hello")
    message = str(caught.value)
    assert "ada did not receive what was expected" in message
    assert "  expected: <bob> hello\n  received: <bob> hi" in message
    # The rule that broadcast it, by its file and line in the spec.
    line = _line_of("# not a command: say it to the room")
    where = rf"chat\.yaml:{line} \(states\.chatting\.handlers\.input\[1\]\)"
    assert re.search(r"answered by: .*" + where, message)
    assert "protocol state now: chatting" in message
    assert "    * bob joined #lobby" in message  # the last lines received


def test_json_records_compare_as_values(spec_server: Any) -> None:
    server = spec_server(SPECS / "kv.yaml")
    client = server.connect()
    client.expect({"hello": "kv", "session": client.session.id})
    client.send({"op": "set", "key": "a", "value": 1})
    client.expect('{"ok": true}')  # JSON text is read as JSON
    client.send('{"op": "incr", "key": "a", "by": 2}')
    client.expect({"key": "a", "value": 3})
    client.send('{"op": "get"}')
    client.expect(re.compile("missing required field"))


MSGPACK = """\
version: 1
server:
  name: mp
  filter: {type: msgpack}
handlers:
  input:
    - reply: {got: "{input}"}
"""

BLOCKS = """\
version: 1
server:
  name: blocks
  filter: {type: block, codec: u16}
handlers:
  input:
    - reply: "<{input}>"
"""


def test_msgpack_and_length_prefixed_blocks_are_framed_as_the_spec_says(spec_server: Any) -> None:
    packed = spec_server(MSGPACK).connect()
    packed.send({"a": 1})
    packed.expect({"got": {"a": 1}})
    packed.send("[1, 2]")  # JSON text: the value to pack
    packed.expect('{"got": [1, 2]}')
    blocks = spec_server(BLOCKS).connect()
    blocks.send("abc", "line\nbreak")
    blocks.expect("<abc>")
    blocks.expect("<line\nbreak>")


def test_heap_and_server_overrides_and_logs(spec_server: Any, tmp_path: Path) -> None:
    server = spec_server(SPECS / "echo.yaml", server={"name": "renamed"})
    assert server.server.heap["name"] == "renamed"
    client = server.connect()
    client.send("hello")
    client.expect("hello")
    assert server.log == [f"client {client.session.id}: hello"]  # the marker lines are not there


def test_a_bad_spec_is_its_error(spec_server: Any) -> None:
    with pytest.raises(SpecError, match=r"<spec>:2:1: unknown key 'handlerz'"):
        spec_server("version: 1\nhandlerz: {}\n")


def test_chat_nick_timeout_and_quit_with_the_kit(spec_server: Any) -> None:
    # tests/test_spec_protocols.py tests the same with a copy of the spec whose
    # timeout is 50 ms of real time; here the spec is the file as shipped.
    server = spec_server(SPECS / "chat.yaml")
    slow = server.connect("slow")
    slow.expect("Welcome to chat. Your nick?")
    slow.send(b"ad")  # a nick begun, not ended: the first-byte timeout is met
    server.advance(60)
    slow.expect("No nick after 60 seconds. Bye.")
    slow.expect_closed()
    fast = server.connect("fast")
    fast.expect("Welcome to chat. Your nick?")
    fast.send("quick")
    fast.expect(re.compile("^Hello quick"))
    server.advance(60)  # a nick given in time cancels the state timeout
    fast.send("/who")
    fast.expect("Commands: /join ROOM (once you have a nick), /quit.")
    fast.send("/quit")
    fast.expect("Bye.")
    fast.expect_closed()


def test_serve_outside_pytest() -> None:
    with serve(TIMED) as server:
        client = server.connect()
        client.expect("name?")
        client.send("x")
        client.expect("hello x")


# -- async tests: the same, awaited ---------------------------------------------------------


async def test_async_memory_virtual_clock(spec_server: Any) -> None:
    server = spec_server(TIMED)
    client = await server.connect()
    await client.expect("name?")
    started = time.perf_counter()
    await server.advance(30)
    await client.expect("too slow")
    await client.expect_closed()
    assert time.perf_counter() - started < 0.5


async def test_async_over_tcp(spec_server: Any) -> None:
    server = spec_server(TIMED, transport="tcp")
    client = await server.connect()
    await client.expect("name?")
    await client.send("cy")
    await client.expect("hello cy")
    with pytest.raises(ExpectationFailed, match=r"nothing within 0\.2 s"):
        await client.expect("more", timeout=0.2)
    await server.advance(200)  # ready has no state timeout (the idle one is 300 s)
    await client.send("bye")
    await client.expect("bye")
    await client.expect_closed()


async def test_async_two_servers_in_one_test(spec_server: Any) -> None:
    one, two = spec_server(TIMED), spec_server(SPECS / "echo.yaml")
    a, b = await one.connect(), await two.connect()
    await a.expect("name?")
    await b.send("ping")
    await b.expect("ping")


# -- the in-memory transport ------------------------------------------------------------


async def test_memory_transport_holds_input_while_reading_is_paused() -> None:
    import asyncio

    seen: list[Any] = []

    class Protocol(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            seen.append(data)

        def eof_received(self) -> None:
            seen.append("eof")

        def connection_lost(self, exc: Exception | None) -> None:
            seen.append("lost")

    transport = MemoryTransport(asyncio.get_running_loop(), lambda: None)
    transport.connect(Protocol())
    transport.pause_reading()
    transport.feed(b"a")
    transport.feed_eof()
    assert seen == []
    transport.resume_reading()
    assert seen == []  # on a later loop turn, as a socket's next read
    await asyncio.sleep(0)
    assert seen == [b"a", "eof"]
    transport.write(b"reply")
    transport.close()
    assert transport.received == b"reply" and transport.closed and seen[-1] == "eof"
    await asyncio.sleep(0)
    assert seen[-1] == "lost"


# -- the janitor ---------------------------------------------------------------------------


def test_janitor_lists_a_kernel_s_sessions_and_timers() -> None:
    kernel = Kernel()
    session = kernel.spawn({"started": lambda s: s.timer("tick", 10)}, alias="ticker")
    kernel.tick()
    found = kernel_leftovers(kernel)
    assert any(f"session {session.id} (Session: " in line and "1 timer(s)" in line
               for line in found), found  # fmt: skip
    keeper = Janitor()
    keeper.watch(kernel)
    assert keeper.report()
    kernel.stop_session(session)
    assert kernel_leftovers(kernel) == []


def test_janitor_sees_a_socket_left_open() -> None:
    before = snapshot()
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        found = process_leftovers(before)
        port = sock.getsockname()[1]
        assert any(f"listening on 127.0.0.1:{port}" in line for line in found), found
    finally:
        sock.close()
    assert process_leftovers(before) == []


INNER_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def test_janitor_fails_a_test_that_leaves_a_job_running(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_inner=f"""
        import pytest

        JOBS = {str(SPECS / "jobs.yaml")!r}

        def test_leaves_a_job(spec_server):
            server = spec_server(JOBS)
            client = server.connect()
            client.send("sleep 5")  # on the virtual clock: waits until advanced

        @pytest.mark.allow_leftovers(reason="on purpose")
        def test_leaves_a_job_on_purpose(spec_server):
            server = spec_server(JOBS)
            server.connect().send("sleep 5")

        def test_finishes_its_job(spec_server):
            server = spec_server(JOBS)
            client = server.connect()
            client.send("sleep 5")
            server.advance(5)
            client.expect("slept 5 s")

        def test_fails_and_is_not_blamed_twice(spec_server):
            server = spec_server(JOBS)
            server.connect().send("sleep 5")
            assert False, "failed on its own"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_leaves_a_job*",
        "*the test left things behind*",
        "*session * (Connection: working, client 127.0.0.1:*) still alive*",
        "*1 job(s) still running*",
        "*allow_leftovers*",
    ])  # fmt: skip


def test_janitor_fixture_watches_a_kernel(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_inner="""
        from statemachine_server import Kernel

        def test_leaves_a_timer(janitor):
            kernel = janitor.watch(Kernel())
            kernel.spawn({"started": lambda s: s.timer("tick", 10)})
            kernel.tick()

        async def test_clean(janitor):
            janitor.watch(Kernel())
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*session 1 (Session: running, 1 timer(s), next in * s) still alive*"]
    )


# -- docs/testing.md's examples are real ----------------------------------------------------

DOC = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_docs_python_examples_pass(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    for name in ("greeter.yaml", "greeter_words.py"):
        (pytester.path / name).write_text((EXAMPLES / name).read_text())
    code = "\n\n".join(_blocks("python"))
    pytester.makepyfile(test_testing_page=code)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_docs_conversation_and_failures_are_real(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    from statemachine_server.testkit import parse, run_script

    for name in ("greeter.yaml", "greeter_words.py"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    monkeypatch.chdir(tmp_path)
    texts = _blocks("text")
    (conversation,) = [t for t in texts if t.startswith("# The greeter counts")]
    outcome = asyncio.run(run_script(parse(conversation, "greeter.conv", tmp_path)))
    assert outcome.ok, outcome.failure
    # The failure shown is the one the kit gives.
    (shown,) = [t for t in texts if t.startswith("ada did not receive")]
    with serve("greeter.yaml") as server:
        ada = server.connect("ada")
        ada.expect("HELLO, who are you? (USER name)")
        ada.send("USER ada", "SAY the engine is ready")
        ada.expect("WELCOME ada")
        with pytest.raises(ExpectationFailed) as caught:
            ada.expect("ada said the engine is ready (3 words)")
        ada.send("QUIT")
    assert str(caught.value) + "\n" == shown
    (command_run,) = [t for t in texts if t.startswith("$ statemachine-server test greeter.yaml")]
    # The same conversation, its count changed, run as the page runs it.
    wrong = conversation.replace("(4 words)", "(3 words)")
    status, out = _run_command(tmp_path / "greeter.conv", wrong)
    assert status == 1
    assert out == command_run.split("\n", 1)[1]


def _run_command(path: Path, text: str) -> tuple[int, str]:
    import argparse
    import io

    from statemachine_server.testkit import command

    parser = argparse.ArgumentParser(prog="statemachine-server")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    path.write_text(text)
    status = command.run(parser.parse_args(["test", "greeter.yaml", path.name]), out, out)
    return status, out.getvalue()


def _line_of(comment: str) -> int:
    """The line of specs/chat.yaml that holds ``comment`` (a rule, by its comment)."""
    text = (Path(__file__).resolve().parent.parent / "specs" / "chat.yaml").read_text()
    return next(n for n, line in enumerate(text.splitlines(), 1) if comment in line)
