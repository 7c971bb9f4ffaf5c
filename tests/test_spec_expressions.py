"""The expression language in specs: guards, typed heap data, raw writes, raised events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from conftest import run_cli

from statemachine_server import SpecError
from statemachine_server.language.expressions import Names, compile_expression
from statemachine_server.language.loader import load_spec_text
from statemachine_server.language.templates import compile_guard

TIMEOUT = 20.0


async def talk(port: int, data: bytes, until: bytes, *, close: bool = False) -> bytes:
    """Send ``data`` in one write; read until the reply ends with ``until``."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        got = b""
        while not got.endswith(until):
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
        writer.close()
        return got


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "e.yaml")
    return str(info.value).splitlines()


# -- the language itself ---------------------------------------------------------------------


class _S:
    id = 7
    state = "reading"
    protocol_state = None
    remote_ip = "127.0.0.1"
    remote_port = 5

    def __init__(self, heap: dict[str, Any], shared: dict[str, Any]):
        self.heap = heap
        self.server = type("Server", (), {"heap": shared})()


def evaluate(text: str, heap: dict[str, Any] | None = None, **shared: Any) -> Any:
    guard = compile_guard(text, Names(groups=frozenset({"key"})))
    return guard(_S(heap or {}, shared), "PASS secret", {"key": "k1"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("input == 'PASS ' + server.password", True),
        ("heap.count + 1", 3),
        ("heap.count * 2 > 3 and not heap.busy", True),
        ("match.key in heap.items", True),
        ("heap.items[match.key]", "v1"),
        ("get(heap.items, 'nope', 'none')", "none"),
        ("len(heap.list) == 2 and heap.list[-1] == 'b'", True),
        ("split(input, ' ')[1]", "secret"),
        ("join(sorted(keys(heap.items)), ',')", "k1,k2"),
        ("int('42') + int('x', 0)", 42),
        ("'yes' if heap.missing == null else 'no'", "yes"),
        ("lower(input)[:4]", "pass"),
        ("startswith(input, 'PASS') and endswith(input, 'et')", True),
        ("min(3, heap.count) + max([1, 5])", 7),
        ("b64decode(b64encode(input)) == input", True),
        ("matches(input, '^PASS [a-z]+$')", True),
        ("{'a': heap.count}['a']", 2),
        ("session.id + remote_port", 12),
        ("byte_len('é')", 2),
        ("str(true) + str(null) + str(1.5)", "true1.5"),
    ],
)
def test_expressions_compute_values(text: str, value: Any) -> None:
    heap = {"count": 2, "busy": False, "items": {"k1": "v1", "k2": "v2"}, "list": ["a", "b"]}
    assert evaluate(text, heap, password="secret") == value


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("heap.a +", "syntax error", 8),
        ("nope + 1", "unknown name 'nope'", 0),
        ("heap.a + lenn(input)", "unknown function 'lenn' (did you mean 'len'?)", 9),
        ("'a' + 1", "cannot add text and int", 0),
        ("len(1)", "len() takes text or list or map here, not int", 4),
        ("len(input, 2)", "len() takes 1 argument, not 2", 0),
        ("input.upper()", "only the expression language's functions", 0),
        ("heap.a ** 2", "the operator ** is not part of the expression language", 0),
        ("[x for x in input]", "comprehensions are not part of the expression language", 0),
        ("lambda: 1", "lambdas are not part of the expression language", 0),
        ("heap.__class__", "names do not start with _", 0),
        ("input * 3", "* needs numbers, not text", 0),
        ("match.nope", "the rule's condition has no group 'nope'", 0),
        ("matches(input, '(')", "bad regular expression", 15),
        ("heap", "heap is a namespace", 0),
        ("1 < 'a'", "cannot compare int < text", 0),
    ],
)
def test_expression_errors_say_what_and_where(text: str, message: str, offset: int) -> None:
    with pytest.raises(ValueError) as info:
        compile_expression(text, Names(groups=frozenset({"key"})), lambda v: "_x")
    assert message in str(info.value)
    assert info.value.offset == offset  # type: ignore[attr-defined]


def test_multiplication_and_remainder_take_numbers_only_and_stay_in_64_bits() -> None:
    with pytest.raises(TypeError, match=r"\* needs numbers"):
        evaluate("heap.t * heap.n", {"t": "ab", "n": 10**6})
    with pytest.raises(TypeError, match="% needs numbers"):
        evaluate("heap.t % heap.n", {"t": "%s", "n": 1})
    with pytest.raises(OverflowError):
        evaluate("heap.n * heap.n", {"n": 2**40})
    assert evaluate("heap.n * heap.n", {"n": 2**31}) == 2**62


def test_int_reads_ascii_digits_only() -> None:
    # Python's int() reads "٣" (Arabic-Indic three) and the like.
    assert evaluate("int(heap.t, -1)", {"t": "٣"}) == -1
    with pytest.raises(ValueError):
        evaluate("int(heap.t)", {"t": "²"})
    assert evaluate("is_digits(heap.t)", {"t": "٣"}) is False


def test_an_error_inside_an_expression_points_at_its_line_and_column() -> None:
    text = (
        "handlers:\n"
        "  input:\n"
        "    - if: heap.n > 1 and lenn(input) > 0\n"  # line 3
        "      do: [reply: 'x']\n"
        "    - do:\n"
        "        - set: {count: 'heap.count + * 1'}\n"  # line 6
        "        - reply: |\n"
        "            first line\n"
        "            total {heap.count +}\n"  # line 9
    )
    assert errors(text) == [
        "e.yaml:3:26: unknown function 'lenn' (did you mean 'len'?) (docs/expressions.md "
        "lists them)",
        "e.yaml:6:38: syntax error: invalid syntax",
        "e.yaml:9:32: syntax error: invalid syntax",
    ]


# -- guards, data, raw writes and raised events in a running spec ----------------------------

MAILBOX = """
server:
  filter: {type: line, newline: "\\r\\n"}
  heap: {password: secret, users: {a: secret, b: other}}
heap:
  tries: 0
  box: []
initial: user
handlers:
  input:
    - equals: QUIT
      do: [reply: "+OK bye", close]
    - do: [reply: "-ERR"]
states:
  user:
    handlers:
      input:
        - match: '^USER (?P<name>\\S+)$'
          do: [set: {name: match.name}, reply: "+OK", goto: pass]
        - do: [reply: "-ERR USER first"]
  pass:
    handlers:
      input:
        - prefix: "PASS "
          if: server.users[heap.name] == match.rest
          do: [raise: {event: login, input: "{heap.name}"}]
        - prefix: "PASS "
          if: heap.tries < 2
          do: [set: {tries: heap.tries + 1}, reply: "-ERR try {3 - heap.tries} more", goto: user]
        - prefix: "PASS "
          do: [reply: "-ERR locked", close]
      login:
        - do:
            - reply: "+OK welcome {input}"
            - append: {box: "'hello'"}
            - append: {box: "'world ' + input"}
            - goto: trans
  trans:
    handlers:
      input:
        - equals: STAT
          do: [reply: "+OK {len(heap.box)} {sum([byte_len(x) for x in heap.box]) if false else 0}"]
        - equals: LIST
          do:
            - reply: "+OK"
            - foreach: {in: heap.box, as: msg, do: [reply: "{msg}"]}
            - reply: "."
        - match: '^DELE (?P<n>[0-9]+)$'
          if: int(match.n) <= len(heap.box)
          do: [unset: "box[int(match.n) - 1]", reply: "+OK deleted"]
        - equals: RAW
          do: [write: "no newline:", write: "{len(heap.box)}", reply: "!"]
"""


def test_comprehensions_are_refused_even_in_dead_branches() -> None:
    (line,) = errors(MAILBOX)
    assert "comprehensions are not part of the expression language" in line
    assert line.startswith("e.yaml:42:")


@pytest.fixture
def mailbox() -> str:
    return MAILBOX.replace(
        " {sum([byte_len(x) for x in heap.box]) if false else 0}", " {byte_len(join(heap.box))}"
    )


async def test_pipelined_login_is_answered_in_order(
    serve_spec: Callable[..., Any], mailbox: str
) -> None:
    server = await serve_spec(mailbox)
    got = await talk(server.port, b"USER a\r\nPASS secret\r\nSTAT\r\nLIST\r\nQUIT\r\n", b"bye\r\n")
    assert got.decode().split("\r\n") == [
        "+OK", "+OK welcome a", "+OK 2 12", "+OK", "hello", "world a", ".", "+OK bye", "",
    ]  # fmt: skip


async def test_guards_count_tries_and_lock_out(
    serve_spec: Callable[..., Any], mailbox: str
) -> None:
    server = await serve_spec(mailbox)
    got = await talk(
        server.port,
        b"PASS x\r\nUSER b\r\nPASS secret\r\nUSER b\r\nPASS no\r\nUSER b\r\nPASS no\r\n",
        b"locked\r\n",
    )
    assert got.decode().split("\r\n")[:-1] == [
        "-ERR USER first", "+OK", "-ERR try 2 more", "+OK", "-ERR try 1 more", "+OK", "-ERR locked",
    ]  # fmt: skip


async def test_raw_writes_keep_their_place_among_replies(
    serve_spec: Callable[..., Any], mailbox: str
) -> None:
    server = await serve_spec(mailbox)
    got = await talk(server.port, b"USER a\r\nPASS secret\r\nDELE 1\r\nRAW\r\nQUIT\r\n", b"bye\r\n")
    assert got.endswith(b"+OK deleted\r\nno newline:1!\r\n+OK bye\r\n")


COUNTERS = """
server:
  heap: {hits: 0}
collections:
  seen: {max_items: 3}
  server.log: {max_items: 2, evict: lru}
handlers:
  error: [reply: "error"]
  input:
    - equals: count
      do: [set: {server.hits: server.hits + 1}, reply: "{server.hits}"]
    - prefix: "see "
      do: [set: {"seen[match.rest]": true}, reply: "{len(heap.seen)}"]
    - prefix: "log "
      do: [set: {"server.log[match.rest]": input}, reply: "{join(keys(server.log), ',')}"]
    - prefix: "get "
      do: [reply: "{get(server.log, match.rest, 'gone')}"]
"""


async def test_counters_maps_and_bounds(serve_spec: Callable[..., Any]) -> None:
    server = await serve_spec(COUNTERS)
    got = await talk(server.port, b"count\ncount\nsee a\nsee b\nsee a\nsee c\n", b"3\n")
    assert got == b"1\n2\n1\n2\n2\n3\n"
    assert server.heap["hits"] == 2 and type(server.heap["hits"]) is int
    # Past max_items: the connection's error (and it closes).
    got = await talk(server.port, b"see a\nsee b\nsee c\nsee d\nsee e\n", b"error\n")
    assert got == b"1\n2\n3\nerror\n"
    # evict: lru keeps the two most recently used.
    got = await talk(server.port, b"log x\nlog y\nget x\nlog z\nget y\n", b"gone\n")
    assert got == b"x\nx,y\nlog x\nx,z\ngone\n"


PYTHON_STATE = """
initial: a
events: [counted]       # raised from Python only
states:
  a:
    handlers:
      input:
        - prefix: "go "
          do: [call: "moves:move", reply: "now {session.state}"]
        - do: [reply: "a: {input}"]
  b:                    # reached from Python only: check cannot see it, and allows it
    handlers:
      input:
        - equals: back
          do: [goto: a]
        - do: [reply: "b: {input} {heap.count}"]
handlers:
  counted:
    - reply: "counted {input[0]} of {len(input)}"
"""

MOVES = """
from statemachine_server import goto, raise_event


def move(session, line, match):
    session.heap["count"] = session.heap.get("count", 0) + 1
    goto(session, match["rest"])
    raise_event(session, "counted", [session.heap["count"], "x"])
"""


async def test_python_handlers_change_the_state_and_raise_events(
    serve_spec: Callable[..., Any], tmp_path: Any, monkeypatch: Any
) -> None:
    (tmp_path / "moves.py").write_text(MOVES)
    (tmp_path / "t.yaml").write_text(PYTHON_STATE)
    server = await serve_spec(tmp_path / "t.yaml")
    got = await talk(server.port, b"x\ngo b\ny\n", b"y 1\n")
    # The raised event keeps its value (a list) and comes before the next line.
    assert got == b"a: x\nnow b\ncounted 1 of 2\nb: y 1\n"
    with pytest.raises(ValueError, match="no state 'nowhere'"):
        from statemachine_server import goto

        class Fake:
            handler_table = server.dispatch
            id = 1

        goto(Fake(), "nowhere")


FIXES = """
initial: start
heap: {seen: []}
states:
  start:
    enter:
      - raise: {event: note, input: "{['enter', 1, true]}"}
      - append: {seen: "'enter'"}
    handlers:
      connected:
        - append: {seen: "'connected'"}
      input:
        - equals: quit
          do: [close]
        - if: true
          do:
            - if: len(heap.seen) > 99
              else: [write: "{join(heap.seen, ',')}"]
            - write: " {group_size('nobody')}"
      note:
        - append: {seen: "'note'"}
        - write: "{input}|"
"""


async def test_raised_values_writes_and_guards(serve_spec: Callable[..., Any]) -> None:
    server = await serve_spec(FIXES)
    # The raise in the initial state's enter actions waits for connected; the
    # raised list is written as JSON; a write that ends a tick adds no newline;
    # `if: true` is a YAML boolean; an `if` may have only `else`.
    got = await talk(server.port, b"x\n", b" 0")
    assert got == b'["enter",1,true]|enter,connected,note 0'


async def test_group_size_in_an_echo_shaped_spec(serve_spec: Callable[..., Any]) -> None:
    server = await serve_spec("handlers:\n  input: [reply: \"{group_size('g')} {input}\"]\n")
    assert await talk(server.port, b"hi\n", b"\n") == b"0 hi\n"


def test_set_values_keep_the_type_of_the_spec_s_own(tmp_path: Any) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("server:\n  heap: {max_size: 10, strict: false}\nhandlers: {}\n")
    status, _, err = run_cli("run", str(spec), "--port", "0", "--set", "max_size=abc")
    assert status == 2
    assert "--set 'max_size=abc': expected an integer (the spec's server.heap.max_size is 10)" in (
        err
    )
    status, _, err = run_cli("run", str(spec), "--port", "0", "--set", "strict=maybe")
    assert status == 2 and "expected true or false" in err


def test_replace_cannot_build_text_without_bound() -> None:
    with pytest.raises(ValueError, match="replace\\(\\): the result would be"):
        evaluate("replace(heap.t, 'a', heap.n)", {"t": "a" * 100_000, "n": "b" * 1000})
    assert evaluate("replace(heap.t, 'a', 'bb')", {"t": "aa"}) == "bbbb"


def test_set_refuses_a_name_the_spec_does_not_declare(tmp_path: Any) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("server:\n  heap: {password: secret}\nhandlers: {}\n")
    status, _, err = run_cli("run", str(spec), "--port", "0", "--set", "pasword=x")
    assert status == 2
    assert "the spec's server.heap has no 'pasword' (did you mean 'password'?)" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "handlers:\n  input:\n    - do:\n        - if: input == 'x'\n          do: [close]\n",
            "e.yaml:4:11: an `if` action takes `then` (and `else`); `do` is for a rule",
        ),
        (
            "handlers:\n  input:\n    - do: [if: input == 'x', then: [close]]\n",
            "e.yaml:3:30: unknown action 'then' (an `if` action is one mapping",
        ),
    ],
)
def test_if_actions_written_as_rules_or_without_braces(text: str, message: str) -> None:
    (line,) = errors(text)
    assert line.startswith(message), line


def test_a_handler_of_an_unknown_event_is_one_error() -> None:
    (line,) = errors("handlers:\n  dispach:\n    - reply: '{input}'\n")
    assert "unknown event 'dispach'" in line and "raised" in line


async def test_raised_events_are_first_in_first_out(serve_spec: Callable[..., Any]) -> None:
    spec = (
        "handlers:\n"
        "  input: [raise: {event: a, input: '1'}, raise: {event: a, input: '2'}]\n"
        "  a: [write: 'a{input} ', raise: {event: b, input: '{input}'}]\n"
        "  b: [write: 'b{input} ']\n"
    )
    server = await serve_spec(spec)
    assert await talk(server.port, b"x\n", b"b2 ") == b"a1 a2 b1 b2 "


USE = """
server:
  filter: {type: line, newline: "\\r\\n"}
actions:
  new_envelope:             # reused: RSET, HELO and after each message
    - set: {sender: null, rcpts: []}
  ok:
    - use: new_envelope
    - reply: "250 OK ({len(heap.rcpts)} recipients)"
handlers:
  input:
    - prefix: "RCPT "
      do: [append: {rcpts: match.rest}, reply: "250 {len(heap.rcpts)}"]
    - equals: RSET
      do: [use: ok]
"""


async def test_use_runs_named_actions_in_place(serve_spec: Callable[..., Any]) -> None:
    server = await serve_spec(USE)
    got = await talk(server.port, b"RCPT a\r\nRCPT b\r\nRSET\r\nRCPT c\r\n", b"250 1\r\n")
    assert got == b"250 1\r\n250 2\r\n250 OK (0 recipients)\r\n250 1\r\n"


def test_use_errors_are_reported_once_where_written() -> None:
    text = (
        USE.replace("rcpts: []}", "rcpts: [], x: nope}")
        + "    - equals: HELO\n      do: [use: ok]\n"
    )
    assert errors(text) == [
        "e.yaml:6:41: unknown name 'nope' (did you mean 'heap.nope'?): expected input, result, "
        "remote_ip, remote_port, true, false, null, or heap.NAME, server.NAME, match.NAME, "
        "session.id, session.state (text is quoted: 'nope')"
    ]
    assert errors("actions: {a: [use: b], b: [use: a]}\nhandlers: {input: [use: a, use: c]}\n") == [
        "e.yaml:1:33: use: 'a' uses itself (a -> b -> a)",
        "e.yaml:2:33: use: no actions named 'c' (the top-level `actions` has: a, b)",
    ]
