"""`statemachine-server graph`: state names are drawn as themselves, top-level gotos once."""

from __future__ import annotations

import re
import textwrap

from statemachine_server.language import load_spec_text
from statemachine_server.language.graph import declare, draw
from statemachine_server.language.model import Spec

# Names with "_" (transitions' nested-state separator), and top-level handlers
# that goto a state: from a rule, from a named event, and after a work.
SPEC = textwrap.dedent("""\
    version: 1
    server:
      name: names
    initial: user_wait
    events: [kick]
    handlers:
      input:
        - equals: reset
          do:
            - goto: user_wait
      kick:
        - goto: user_done
    states:
      user_wait:
        handlers:
          input:
            - equals: ok
              do:
                - goto: user_ok
      user_ok:
        handlers:
          input:
            - equals: done
              do:
                - goto: user_done
      user_done:
        enter:
          - close
    """)


def spec() -> Spec:
    return load_spec_text(SPEC, "names.yaml")


def mermaid_edges(out: str) -> set[tuple[str, str, str]]:
    found = re.findall(r"^\s*(\S+) --> (\S+): (.*)$", out, re.M)
    return {(src, dest, label) for src, dest, label in found}


def dot_edges(out: str) -> set[tuple[str, str, str]]:
    return set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[label="([^"]*)"\];$', out, re.M))


def test_mermaid_draws_names_with_underscores_as_themselves() -> None:
    out = draw(spec())
    for name in ("user_wait", "user_ok", "user_done"):
        assert f'state "{name}" as reading_{name}' in out
    # No invented parent state "user" holding "wait", "ok" and "done".
    assert 'state "user"' not in out and "reading_user {" not in out
    assert not re.search(r'state "(wait|ok|done)"', out)
    assert "[*] --> reading_user_wait\n" in out


def test_dot_draws_names_with_underscores_as_themselves() -> None:
    out = draw(spec(), "dot")
    for name in ("user_wait", "user_ok", "user_done"):
        assert f'"reading_{name}" [label="{name}"];' in out
    assert '[label="user"]' not in out


def test_the_declared_machine_does_not_split_names() -> None:
    machine = declare(spec())
    protocol = [n for n in machine.get_nested_state_names() if n.startswith("reading.")]
    assert protocol == ["reading.user_wait", "reading.user_ok", "reading.user_done"]


def test_top_level_gotos_are_drawn_once_from_any_state() -> None:
    protocol = {
        ("reading_user_wait", "reading_user_ok", "input"),
        ("reading_user_ok", "reading_user_done", "input"),
        ("any_state", "reading_user_wait", "input"),
        ("any_state", "reading_user_done", "kick"),
    }
    out = draw(spec())
    assert 'state "any state" as any_state' in out
    edges = {e for e in mermaid_edges(out) if e[0].startswith(("reading_", "any_"))}
    assert edges == protocol
    out = draw(spec(), "dot")
    assert '"any_state" [label="any state", style=dashed];' in out
    edges = {e for e in dot_edges(out) if e[0].startswith(("reading_", "any_"))}
    assert edges == protocol


def test_a_state_own_goto_is_kept_beside_a_top_level_one() -> None:
    # user_ok's own handler and the top-level rule go to the same state on
    # different events: one edge each.
    own = "- equals: again\n          do:\n            - goto: user_wait\n        - equals: done"
    text = SPEC.replace("- equals: done", own)
    assert text != SPEC
    out = draw(load_spec_text(text, "names.yaml"))
    edges = mermaid_edges(out)
    assert ("reading_user_ok", "reading_user_wait", "input") in edges
    assert ("any_state", "reading_user_wait", "input") in edges


def test_a_spec_without_top_level_gotos_has_no_any_state() -> None:
    text = SPEC.replace("- goto: user_wait\n  kick:\n    - goto: user_done", "- close\n  kick: []")
    assert text != SPEC
    for fmt in ("mermaid", "dot"):
        assert "any_state" not in draw(load_spec_text(text, "names.yaml"), fmt)
