"""Specs: the built-in echo spec, strict validation with FILE:LINE:COLUMN, templates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_server import SpecError
from statemachine_server.language import builtin_spec_path, load_spec, load_spec_text
from statemachine_server.language.model import Log, Reply
from statemachine_server.language.templates import compile_template

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_spec_is_the_recipe_and_matches_the_example_spec() -> None:
    spec = load_spec(builtin_spec_path())
    assert spec.handlers["input"] == [Reply("{input}"), Log("client {session.id}: {input}")]
    assert spec.server.host == "127.0.0.1"
    assert builtin_spec_path().read_text() == (ROOT / "specs" / "echo.yaml").read_text()


def test_every_shipped_spec_is_valid() -> None:
    for path in (ROOT / "specs").glob("*.yaml"):
        load_spec(path)


def test_defaults_make_a_minimal_spec_valid() -> None:
    spec = load_spec_text("handlers:\n  input:\n    - reply: '{input}'\n")
    assert spec.server.filter.max_length == 65536
    assert spec.server.port == 12345


def test_filter_short_form() -> None:
    assert load_spec_text("server:\n  filter: line\n").server.filter.max_length == 65536


def test_long_action_form() -> None:
    spec = load_spec_text("handlers:\n  connected:\n    - reply: {text: hello}\n")
    assert spec.handlers["connected"] == [Reply("hello")]


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: 99999\n", "s.yaml:2:9: Expected `int` <= 65535 at $.server.port"),
        ("server:\n  port: x\n", "s.yaml:2:9: Expected `int`, got `str` at $.server.port"),
        ("server:\n  fliter: line\n", "s.yaml:2:3: unknown key 'fliter' (did you mean 'filter'?)"),
        ("sever: {}\n", "s.yaml:1:1: unknown key 'sever' (did you mean 'server'?)"),
        (
            "handlers:\n  input:\n    - replay: x\n",
            "s.yaml:3:7: unknown action 'replay' (did you mean 'reply'?)",
        ),
        (
            "handlers:\n  input:\n    - reply: a\n    - log: [1]\n",
            "s.yaml:4:12: Expected `str`, got `array`",
        ),
        (
            "handlers:\n  input:\n    - reply: '{sesion.id}'\n",
            "s.yaml:3:16: unknown name 'sesion' (did you mean 'session'?)",
        ),
        (
            "handlers:\n  connected:\n    - reply: '{input}'\n",
            "s.yaml:3:16: {input} is only available",
        ),
        (
            "handlers:\n  input:\n    - reply: '{input!r}'\n",
            "conversions and format specs are not allowed",
        ),
        ("handlers:\n  input:\n    - reply: '{input'\n", "s.yaml:3:15: a { that is never closed"),
        (
            "handlers:\n  input:\n    - {reply: a, log: b}\n",
            "s.yaml:3:7: an action is a mapping with one key",
        ),
        ("server: {port: 1}\nserver: {port: 2}\n", "s.yaml:2:1: duplicate key 'server'"),
        ("version: 2\n", "s.yaml:1:10: Invalid enum value 2 at $.version"),
        ("a: [\n", "s.yaml:2:1: invalid YAML"),
        ("", "s.yaml: spec is empty"),
        ("- 1\n", "s.yaml:1:1: expected a mapping at the top"),
        ("x: &a [1]\ny: *a\n", "YAML aliases are not supported"),
        ("server: !!python/object:os.system {}\n", "s.yaml:1:9: unsupported YAML tag"),
        ("when: 2024-01-01\n", "s.yaml:1:7: unsupported YAML tag"),
        (
            "server:\n  limits:\n    high_water: 10\n    low_water: 20\n",
            "s.yaml:3:5: need low_water <= high_water <= max_output",
        ),
        (
            "server:\n  high_water: 10\n",
            "s.yaml:2:3: unknown key 'high_water' (it belongs under server.limits)",
        ),
        ("server:\n  limits: {idle_timeout: 0}\n", "s.yaml:2:26: Expected `float` > 0.0"),
        ("server:\n  limits: {max_conections: 5}\n", "(did you mean 'max_connections'?)"),
    ],
)
def test_errors_say_where_and_what(text: str, expected: str) -> None:
    message = error_of(text)
    assert expected in message
    assert "\n" not in message


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec: No such file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"server: \xff\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(bad)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(SpecError, match="larger than"):
        load_spec(big)


yaml_values: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["server", "handlers", "version", "x"]), yaml_values, max_size=3
    )
)
def test_random_structures_give_a_spec_or_a_clean_error(data: dict[str, Any]) -> None:
    import yaml

    try:
        load_spec_text(yaml.safe_dump(data), "r.yaml")
    except SpecError as exc:
        assert str(exc).startswith("r.yaml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_text_gives_a_spec_or_a_clean_error(text: str) -> None:
    try:
        load_spec_text(text, "r.yaml")
    except SpecError as exc:
        assert str(exc).startswith("r.yaml")


class FakeSession:
    id = 7
    state = "reading"
    remote_ip = "127.0.0.1"
    remote_port = 5555
    heap = {"name": "ada"}  # noqa: RUF012


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{input}", "hi"),
        ("client {session.id}: {input}", "client 7: hi"),
        ("{session.state} {remote_ip}:{remote_port}", "reading 127.0.0.1:5555"),
        ("{heap.name}/{heap.missing}.", "ada/."),
        ("{{literal}} {input}", "{literal} hi"),
        ("constant {{x}}", "constant {x}"),
        ("{input}{input}{input}", "hihihi"),
    ],
)
def test_templates_render(template: str, expected: str) -> None:
    assert compile_template(template)(FakeSession(), "hi") == expected


@pytest.mark.parametrize(
    "template", ["{input.__class__}", "{session.heap}", "{heap}", "{}", "{heap.a.b}", "{input!r}"]
)
def test_templates_cannot_reach_into_objects(template: str) -> None:
    with pytest.raises(ValueError):
        compile_template(template)


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_template_text_is_a_value_never_code(text: str) -> None:
    # Quotes, backslashes, newlines, % and braces in a spec's text never reach the
    # generated source: it renders exactly, and the expression is only names.
    from statemachine_server.language.templates import template_code

    literal = text.replace("{", "{{").replace("}", "}}")
    values: dict[str, Any] = {}
    code = template_code(literal + "{input}" + literal, values)
    # Only generated names and the fixed field in the source; the text as values.
    assert re.fullmatch(r'f"(\{_t\d+\})*\{i!s\}(\{_t\d+\})*"', code.expr), code.expr
    assert "".join(values.values()) == text + text
    assert (
        compile_template(literal + "{input}" + literal)(FakeSession(), "hi") == text + "hi" + text
    )


def test_long_templates_render_like_short_ones() -> None:
    # Past a few dozen fields a template compiles to `%` (an f-string's compile
    # time grows with the square of its fields): same text, % signs and all.
    unit = "%s {session.id}:{heap.name}%% {input}|"
    for count in (1, 100, 5000):
        assert compile_template(unit * count)(FakeSession(), "hi") == "%s 7:ada%% hi|" * count


def test_generated_input_batch_stops_at_a_failing_record() -> None:
    # The loop a read's records go through in an echo-shaped spec: it reports how
    # many records it handled and the exception that stopped it (the generated
    # code has no builtins, so the exception class is bound as a value).
    from statemachine_server import Kernel
    from statemachine_server.language import build_server
    from statemachine_server.net.connection import INPUT_BATCH

    spec = load_spec_text("handlers:\n  input:\n    - reply: '{input} {session.id}'\n")
    server = build_server(spec, Kernel(), port=0)
    server.close()  # its handlers are all this needs
    batch = server.handlers[INPUT_BATCH]

    class Session(FakeSession):
        def __init__(self) -> None:
            self.sent: list[str] = []

        def put(self, text: str) -> None:
            if text.startswith("boom"):
                raise ZeroDivisionError(text)
            self.sent.append(text)

    session = Session()
    assert batch(session, ["a", "b"]) is None  # all handled
    handled, exc = batch(session, ["c", "boom", "d"])
    assert handled == 1 and isinstance(exc, ZeroDivisionError) and str(exc) == "boom 7"
    assert session.sent == ["a 7", "b 7", "c 7"]


@given(st.text(max_size=20), st.text(max_size=20), st.sampled_from([0, 1, 20]))
@settings(max_examples=100, deadline=None)
def test_hoisted_template_parts_are_values_and_render_the_same(a: str, b: str, n: int) -> None:
    # In a loop over a read's records, the per-connection parts of a template are
    # rendered once before it: same text, and still no spec text in the source.
    from statemachine_server.language.generated import build_function
    from statemachine_server.language.templates import template_code

    def lit(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")

    # n = 0: the empty template, or just the text; 20: past the f-string's 64 fields.
    unit = f"{lit(a)}{{session.id}}{lit(b)}{{input}}{lit(a)}{{remote_port}}{{heap.name}}"
    template = unit * n or lit(b)
    values: dict[str, Any] = {}
    hoist: list[str] = []
    code = template_code(template, values, hoist=hoist)
    local = r'_th\d+ = (f"(\{(_t\d+|s\.[a-z_]+!s)\})*"|_t\d+ % \((s\.[a-z_]+, )+\))'
    assert all(re.fullmatch(local, h) for h in hoist), hoist
    source = "def _f(s, i):\n" + "".join(f"    {h}\n" for h in hoist) + f"    return {code.expr}\n"
    render = build_function(source, values, "<test>")
    assert render(FakeSession(), "hi") == compile_template(template)(FakeSession(), "hi")


def test_an_empty_reply_or_log_loads() -> None:
    spec = load_spec_text("handlers:\n  input:\n    - reply: ''\n    - log: ''\n")
    assert [a.text for a in spec.handlers["input"]] == ["", ""]  # type: ignore[union-attr]


def test_generated_input_batch_renders_like_the_handler() -> None:
    # One read of several records (the batch, with its hoisted parts) and reads of
    # one record each give the same replies and the same log lines.
    import asyncio
    import io

    from fakes import FakeTransport

    from statemachine_server import Kernel
    from statemachine_server.console import ConsoleLog
    from statemachine_server.language import build_server
    from statemachine_server.testing import drain

    spec = load_spec_text(
        "handlers:\n  input:\n"
        "    - reply: '{input}'\n"
        "    - reply: 'to {session.id} at {remote_ip}:{remote_port} ({session.state}): {input}'\n"
        "    - log: 'client {session.id}: {input} {heap.missing}.'\n"
    )
    outputs = []
    for reads in ([b"one\ntwo\nthree\n"], [b"one\n", b"two\n", b"three\n"]):
        kernel = Kernel()
        kernel._loop = loop = asyncio.new_event_loop()  # never run: the test ticks
        try:
            out = io.StringIO()
            server = build_server(spec, kernel, port=0, console=ConsoleLog(kernel, out))
            conn = server._connection_factory()
            transport = FakeTransport()
            transport.set_write_buffer_limits = lambda *a: None  # type: ignore[attr-defined]
            conn.connection_made(transport)  # type: ignore[arg-type]
            drain(kernel)
            for data in reads:
                conn.data_received(data)
                drain(kernel)
            outputs.append((conn.id, transport.written, out.getvalue()))
            server.close()
        finally:
            loop.close()
    assert outputs[0] == outputs[1]
    cid, written, logged = outputs[0]
    assert written.splitlines()[:2] == [b"one", b"to %d at 127.0.0.1:4242 (reading): one" % cid]
    assert logged.splitlines() == [f"client {cid}: {x} ." for x in ("one", "two", "three")]


def test_generated_echo_handler_puts_like_connection_put() -> None:
    # The echo spec's handler inlines Connection.put(record): same effect in a
    # tick, outside one (the kernel is woken to flush it), and after the close.
    import asyncio
    import io

    from fakes import FakeTransport

    from statemachine_server import Kernel
    from statemachine_server.console import ConsoleLog
    from statemachine_server.language import build_server
    from statemachine_server.testing import drain

    kernel = Kernel()
    kernel._loop = loop = asyncio.new_event_loop()  # never run: the test drives the ticks
    try:
        out = io.StringIO()
        console = ConsoleLog(kernel, out)
        server = build_server(load_spec(builtin_spec_path()), kernel, port=0, console=console)
        conn = server._connection_factory()
        transport = FakeTransport()
        transport.set_write_buffer_limits = lambda *a: None  # type: ignore[attr-defined]
        conn.connection_made(transport)  # type: ignore[arg-type]
        drain(kernel)
        conn.data_received(b"one\ntwo\n")  # dispatched in a tick
        drain(kernel)
        assert transport.written == b"one\ntwo\n"
        kernel._scheduled = False
        server.handlers["input"](conn, "three")  # outside a handler
        assert kernel._scheduled  # a tick is on its way to flush it
        drain(kernel)
        assert transport.written == b"one\ntwo\nthree\n"
        conn.connection_lost(None)
        drain(kernel)
        server.handlers["input"](conn, "late")  # closed: dropped, like put()
        drain(kernel)
        assert transport.written == b"one\ntwo\nthree\n"
        logged = [f"client {conn.id}: {x}" for x in ("one", "two", "three")]
        assert out.getvalue().splitlines() == logged
        server.close()
    finally:
        loop.close()


def test_log_lines_are_cut_and_escaped() -> None:
    from statemachine_server.console import clean

    assert clean("plain", 100) == "plain"
    assert clean("\x1b[31mred\udcff\x00", 100) == "\\x1b[31mred\\xff\\x00"
    assert clean("x" * 50, 10) == "xxxxxxx..."
    assert clean("\x1b" * 50, 10) == "\\x1b\\x1..."
    assert clean("x" * 10, 10) == "x" * 10


def _clean_whole(line: str, limit: int) -> str:
    # The definition: escape the whole line, then cut it. clean() cuts first.
    from statemachine_server.console import _escape

    line = "".join(c if c.isprintable() else _escape(c) for c in line)
    return line if len(line) <= limit else line[: max(limit - 3, 0)] + "..."


@given(st.text(alphabet=st.sampled_from("ab\x00\x1b\n\udcff\u00e9\u2028")), st.integers(0, 40))
def test_a_log_line_cut_before_escaping_is_the_line_escaped_then_cut(line: str, limit: int) -> None:
    from statemachine_server.console import clean

    assert clean(line, limit) == _clean_whole(line, limit)


async def test_log_settings_reach_the_console() -> None:
    import io

    from statemachine_server import Kernel
    from statemachine_server.console import ConsoleLog
    from statemachine_server.language import build_server

    for enabled, expected in ((True, "client 2: \\x1b]0;pwne...\n"), (False, "")):
        kernel = Kernel()
        out = io.StringIO()
        spec = load_spec_text(
            f"server:\n  log: {{enabled: {str(enabled).lower()}, max_length: 24}}\n"
            "handlers:\n  input:\n    - log: 'client {session.id}: {input}'\n    - reply: ok\n"
        )
        server = build_server(spec, kernel, port=0, console=ConsoleLog(kernel, out, max_line=24))
        replies: list[str] = []
        session = type("S", (), {"id": 2, "put": lambda self, r, out=replies: out.append(r)})()
        server.handlers["input"](session, "\x1b]0;pwned\x07 and more text")
        assert replies == ["ok"]
        kernel.tick()
        assert out.getvalue() == expected
        server.close()


def test_high_and_low_handlers_are_the_servers() -> None:
    from statemachine_server import Kernel
    from statemachine_server.core.lifecycle import OUTPUT_HIGH, OUTPUT_LOW
    from statemachine_server.language import build_server

    spec = load_spec_text(
        "handlers:\n  high: [log: 'slow reader {session.id}']\n  low: [log: 'caught up']\n"
    )
    server = build_server(spec, Kernel(), port=0)
    try:
        assert OUTPUT_HIGH in server.handlers and OUTPUT_LOW in server.handlers
    finally:
        server.close()


def test_console_checks_a_batch_at_once_and_cleans_only_what_needs_it() -> None:
    import io

    from statemachine_server import Kernel
    from statemachine_server.console import ConsoleLog

    kernel = Kernel()
    out = io.StringIO()
    console = ConsoleLog(kernel, out, max_line=12)
    batches = [
        ["plain", "also plain"],  # the fast path: printable ASCII, short
        ["ok", "tab\there", "x" * 20, "café", "\udcff"],  # each kind of line to clean
        ["exactly 12 c"],
        ["forged\nclient 1: x", "ok"],  # a newline inside a line never makes two
    ]
    for batch in batches:
        console.lines.extend(batch)
        kernel.tick()
    assert out.getvalue().splitlines() == [
        "plain", "also plain",
        "ok", "tab\\x09here", "xxxxxxxxx...", "café", "\\xff",
        "exactly 12 c",
        "forged\\x0...", "ok",
    ]  # fmt: skip
