"""Broken specs: every error found at once, each at its exact line and column."""
# ruff: noqa: E501  (a table of YAML snippets and the exact errors they give)

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_server import SpecError
from statemachine_server.language import load_spec, load_spec_text

HERE = Path(__file__).resolve().parent


def errors_of(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml", base_dir=base_dir)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.errors)
    return lines


def test_a_spec_with_many_errors_gets_all_of_them_in_file_order() -> None:
    path = HERE / "specs" / "many-errors.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    expected = [
        (3, 9, "Expected `int` <= 65535 at $.server.port"),
        (4, 3, "unknown key 'fliter'"),
        (7, 3, "unknown event 'inptu'"),
        (10, 14, "bad regular expression"),
        (12, 7, "a rule has at most one test of the input (and an `if` beside it); this one has equals and prefix"),
        (18, 18, "session.__class__: names do not start with _"),
        (19, 15, "goto"),
        (22, 9, "a handler is a list of actions or a list of rules (with `do`), not both"),
        (23, 24, "match.nick is only available in a rule with a match, prefix or message condition"),
        (24, 29, "post"),
        (24, 42, "Expected `float` > 0.0 at $.states.lgoin.handlers.input[0].do[1].after"),
        (25, 21, "cannot import 'no_such_module'"),
        (26, 21, "cannot import 'm'"),
        (27, 21, "expected NAME (the session's heap) or server.NAME"),
        (27, 26, "unknown name 'x'"),
        (31, 9, "goto is not allowed in exit actions (the state is being left)"),
    ]  # fmt: skip
    got = info.value.errors
    assert len(got) == len(expected), str(info.value)
    for error, (line, column, message) in zip(got, expected, strict=True):
        assert (error.line, error.column) == (line, column), error
        assert error.message.startswith(message), error
    assert "(did you mean 'filter'?)" in str(info.value)
    assert "(did you mean 'input'?)" in str(info.value)


STATES = """\
initial: a
states:
  a:
    handlers:
      input:
        - equals: go
          do: [goto: b]
  b:
    handlers:
      input:
        - do: [close]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # states: names, targets, reachability, ways out
        (STATES.replace("goto: b", "goto: c"), ["s.yaml:7:22: goto: no state 'c'"]),
        (
            STATES.replace("initial: a", "initial: x"),
            ["s.yaml:1:10: initial state 'x' is not declared"],
        ),
        (
            STATES.replace("[goto: b]", "[reply: nope]"),
            [
                "s.yaml:3:3: state 'a' has no way out: no goto to another state, close or call in its "
                "actions or the top-level handlers",
                "s.yaml:8:3: state 'b' is unreachable: no goto leads to it from the initial state 'a'",
            ],
        ),
        (
            STATES + "  c:\n    enter: [goto: d]\n  d:\n    enter: [goto: c]\n",
            [
                "s.yaml:12:3: state 'c' is unreachable",
                "s.yaml:13:12: state 'c': goto in enter actions leads back to it (an endless loop)",
                "s.yaml:14:3: state 'd' is unreachable",
                "s.yaml:15:12: state 'd': goto in enter actions leads back to it (an endless loop)",
            ],
        ),
        ("handlers:\n  input: [goto: x]\n", ["s.yaml:2:17: goto needs protocol states"]),
        ("initial: x\n", ["s.yaml:1:10: initial needs protocol states"]),
        ("states:\n  a-b: {}\n", ["s.yaml:2:3: expected a name (letters, digits and _"]),
        (
            STATES.replace(
                "  b:\n    handlers:", "  b:\n    handlers:\n      connected: [reply: hi]"
            ),
            ["s.yaml:10:7: `connected` happens in the initial state ('a') only; use `enter` here"],
        ),
        # events
        ("handlers:\n  tick: [reply: x]\n", ["s.yaml:2:3: unknown event 'tick'"]),
        ("events: [tick]\nhandlers:\n  tick: [reply: '{input}']\n", []),
        ("handlers:\n  eof: [reply: x]\n", ["s.yaml:2:3: 'eof' is a lifecycle event"]),
        (
            "handlers:\n  input: [post: tik]\n  tick: [reply: x]\n",
            [
                "s.yaml:2:17: post: no handler for event 'tik' (did you mean 'tick'?)",
                "s.yaml:3:3: unknown event 'tick'",
            ],
        ),
        # rules and conditions
        (
            "handlers:\n  input:\n    - do: [reply: a]\n    - equals: x\n      do: [reply: b]\n",
            ["s.yaml:4:7: this rule is never tried: an earlier rule has no condition"],
        ),
        (
            "handlers:\n  connected:\n    - equals: x\n      do: [reply: b]\n",
            ["s.yaml:3:15: `connected` has no input to test"],
        ),
        (
            "handlers:\n  input:\n    - match: '(?P<a>x'\n      do: []\n",
            [
                "s.yaml:3:14: bad regular expression: missing ), unterminated subpattern at position 0"
            ],
        ),
        (
            "handlers:\n  input:\n    - match: 'x'\n      do: [reply: '{match.y}']\n",
            ["s.yaml:4:21: match.y: the rule's condition has no group 'y' (its groups: none)"],
        ),
        (
            "handlers:\n  input:\n    - do: [reply: a]\n      ignore_case: true\n",
            ["s.yaml:4:20: ignore_case needs a condition"],
        ),
        (
            "handlers:\n  input:\n    - match: x\n      doo: []\n",
            [
                's.yaml:3:7: an action is a mapping with one key, its name, e.g. `reply: "{input}"`, '
                "or a bare name such as `close`; a rule is a mapping with `do`"
            ],
        ),
        (
            "handlers:\n  input:\n    - match: x\n      do: [reply: a]\n      when: y\n",
            ["s.yaml:5:7: unknown key 'when'"],
        ),
        # actions
        (
            "handlers:\n  input:\n    - close: true\n",
            ["s.yaml:3:14: close takes no value: write `- close`"],
        ),
        ("handlers:\n  input:\n    - reply\n", ["s.yaml:3:7: action 'reply' needs a value"]),
        (
            "handlers:\n  input:\n    - clsoe\n",
            ["s.yaml:3:7: unknown action 'clsoe' (did you mean 'close'?)"],
        ),
        (
            "handlers:\n  input:\n    - post: {event: t, aftr: 1}\n  t: [log: x]\n",
            ["s.yaml:3:24: unknown key 'aftr' (did you mean 'after'?)"],
        ),
        (
            "handlers:\n  input:\n    - broadcast: {text: x}\n",
            ["s.yaml:3:18: missing required key 'group'"],
        ),
        (
            "handlers:\n  input:\n    - set: {n: heap.n +}\n",
            ["s.yaml:3:24: syntax error: invalid syntax"],
        ),
        (
            "handlers:\n  input:\n    - call: nomodule\n",
            ["s.yaml:3:13: call 'nomodule': expected `module:function`"],
        ),
        (
            "handlers:\n  input:\n    - call: os:_exit\n",
            ["s.yaml:3:13: call 'os:_exit': expected `module:function` (a public function)"],
        ),
        (
            "handlers:\n  input:\n    - call: json:dumsp\n",
            ["s.yaml:3:13: call 'json:dumsp': module 'json' has no 'dumsp' (did you mean 'dump'?)"],
        ),
        (
            "handlers:\n  input:\n    - switch_filter: block\n",
            ["s.yaml:3:7: switch_filter block needs a size"],
        ),
        (
            "handlers:\n  input:\n    - switch_filter: {type: line, size: 3}\n",
            ["s.yaml:3:41: switch_filter line: size is for block filters"],
        ),
        (
            "handlers:\n  input:\n    - switch_filter: {type: lines}\n",
            [
                "s.yaml:3:29: Invalid enum value 'lines' at $.handlers.input[0].type (expected one of: 'line', 'block')"
            ],
        ),
        (
            "handlers:\n  input:\n    - switch_filter: {type: block, size: 2000000}\n",
            ["s.yaml:3:42: size 2000000: expected 0 to max_size (1048576)"],
        ),
        (
            "handlers:\n  input:\n    - reply: '{result}'\n    - call: json:dumps\n",
            [
                "s.yaml:3:16: {result} is only available after a call, work or run action in the same list"
            ],
        ),
        (
            "handlers:\n  input:\n    - work: m:f\n",
            ["s.yaml:3:13: cannot import 'm'"],
        ),
        (
            "handlers:\n  input:\n    - work: {function: 'json:loads', progress: [reply: '{nope}']}\n",
            ["s.yaml:3:58: unknown name 'nope'"],
        ),
        (
            "handlers:\n  input:\n    - work: {function: 'json:loads', in: pool}\n",
            [
                "s.yaml:3:42: Invalid enum value 'pool' at $.handlers.input[0].in (expected one of: "
                "'steps', 'thread', 'process')"
            ],
        ),
        (
            "handlers:\n  input:\n    - run: ['{input}']\n",
            ["s.yaml:3:12: run: the program must be written out, not a template"],
        ),
        (
            "handlers:\n  input:\n    - run:\n        argv: [ls, '{input}']\n        stdout:\n          - reply: '{result} {bad}'\n",
            ["s.yaml:6:31: unknown name 'bad'"],
        ),
        ("handlers:\n  input:\n    - run: [ls]\n    - reply: 'exit {result}'\n", []),
        (
            "initial: a\nstates:\n  a:\n    exit: [work: 'json:loads']\n    handlers: {input: [close]}\n",
            ["s.yaml:4:12: work is not allowed in exit actions"],
        ),
        (
            "server:\n  filter: {type: lines}\n",
            ["s.yaml:2:11: unknown type 'lines' (did you mean 'line'?)"],
        ),
        (
            "server:\n  heap: {x: [1]}\nhandlers:\n  input: [reply: '{server.x[0] + heap.y}']\n",
            [],
        ),
        ("_base_dir: /\n", ["s.yaml:1:1: unknown key '_base_dir'"]),
    ],
)
def test_each_error_at_its_place(text: str, expected: list[str]) -> None:
    if not expected:
        load_spec_text(text, "s.yaml")
        return
    got = errors_of(text)
    assert len(got) == len(expected), got
    for line, want in zip(got, expected, strict=True):
        assert line.startswith(want), (line, want)


def test_call_finds_modules_beside_the_spec(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text(
        "def shout(session, line, match):\n    return line.upper()\n"
    )
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "s.yaml").write_text("handlers:\n  input: [call: helpers:shout]\n")
    load_spec(tmp_path / "s.yaml")
    (tmp_path / "t.yaml").write_text("handlers:\n  input: [call: broken:f]\n")
    with pytest.raises(SpecError, match=r"t.yaml:2:17: cannot import 'broken': SyntaxError"):
        load_spec(tmp_path / "t.yaml")


# -- templates may not reach into Python objects ----------------------------------------------

ESCAPES = [
    "{session.__class__}",
    "{input.__class__}",
    "{heap[x]}",
    "{heap.x.y}",
    "{heap.__dict__}",
    "{server.__class__.__init__}",
    "{match}",
    "{match[0]}",
    "{session}",
    "{session.kernel}",
    "{session.heap}",
    "{server}",
    "{}",
    "{1.__class__}",
    "{input!r}",
    "{input:>99999}",
    "{remote_ip.__len__}",
    "{result.__class__}",
    "{match.__class__}",
    "{heap.__class__}",
    "{session.id.__class__}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_templates_cannot_reach_into_objects(template: str) -> None:
    text = (
        "handlers:\n  input:\n    - match: '(?P<a>.)'\n      do:\n"
        f"        - call: {{function: 'json:dumps', reply: false}}\n        - reply: {template!r}\n"
    )
    (error,) = errors_of(text)
    assert error.startswith("s.yaml:6:"), error


# -- fuzzing: a clean SpecError or a valid spec, never another exception ---------------------

names = st.sampled_from(["input", "connected", "tick", "a", "b", "enter", "do", "x", "match"])
leaf = (
    st.none() | st.booleans() | st.integers(-3, 70000) | st.floats(allow_nan=False)
    | st.sampled_from(["{input}", "{match.a}", "{heap.x}", "(?P<a>.)", "a", "b", "close",
                       "reply", "json:dumps", "line", "block", "{", "."])
)  # fmt: skip
actions = st.fixed_dictionaries(
    {},
    optional={k: leaf for k in ["reply", "goto", "post", "set", "call", "switch_filter", "close"]},
) | st.sampled_from(["close"])
rules = st.fixed_dictionaries(
    {"do": st.lists(actions, max_size=3)},
    optional={"match": leaf, "equals": leaf, "prefix": leaf, "ignore_case": leaf},
)
handlers = st.dictionaries(names, st.lists(rules | actions, max_size=3), max_size=3)
state = st.fixed_dictionaries(
    {}, optional={"enter": st.lists(actions, max_size=2), "exit": st.lists(actions, max_size=2),
                  "handlers": handlers,
                  "timeout": st.fixed_dictionaries({"after": leaf, "do": st.lists(actions, max_size=2)})},
)  # fmt: skip
specs = st.fixed_dictionaries(
    {},
    optional={
        "handlers": handlers,
        "states": st.dictionaries(st.sampled_from(["a", "b", "c"]), state, max_size=3),
        "initial": leaf | st.sampled_from(["a", "b"]),
        "events": st.lists(names, max_size=2),
        "server": st.fixed_dictionaries(
            {}, optional={"port": leaf, "heap": st.dictionaries(names, leaf)}
        ),
        "version": leaf,
    },
)


@settings(max_examples=400, deadline=None)
@given(specs)
def test_random_specs_give_a_spec_or_clean_errors(data: dict[str, Any]) -> None:
    try:
        load_spec_text(yaml.safe_dump(data), "r.yaml")
    except SpecError as exc:
        for line in str(exc).splitlines():
            assert line.startswith("r.yaml:"), line


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "é{}[]:-&*!|>'\"", max_size=120))
def test_random_yaml_text_gives_a_spec_or_clean_errors(text: str) -> None:
    try:
        load_spec_text(text, "r.yaml")
    except SpecError as exc:
        for line in str(exc).splitlines():
            assert line.startswith("r.yaml"), line
