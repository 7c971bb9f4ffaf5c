"""A spec's size costs linear time to check, and absurd nesting is one clear error."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from statemachine_server.errors import SpecError
from statemachine_server.language import loader, model, model_filters, yamlread
from statemachine_server.language.compile import _on_cycles
from statemachine_server.language.loader import load_spec_text
from statemachine_server.language.yamlread import MAX_DEPTH


def chain_spec(n: int) -> str:
    """A chain of ``n`` states whose enter actions goto the next (each one's loop
    check used to follow it to the end), then a ring of ``n`` states, each going
    to the next by a timeout's goto and by the goto of an event only it handles."""
    events = ", ".join(f"e{i}" for i in range(n))
    lines = ["version: 1", "server:", "  name: big", "  port: 12345", f"events: [{events}]"]
    lines += ["initial: t0", "states:"]
    for i in range(n):
        lines.append(f"  t{i}: {{enter: [goto: {f't{i + 1}' if i + 1 < n else 's0'}]}}")
    for i in range(n):
        lines += [
            f"  s{i}:",
            f"    timeout: {{after: 5, do: [goto: s{(i + 1) % n}]}}",
            f"    handlers: {{e{i}: [goto: s{(i + 1) % n}]}}",
        ]
    return "\n".join(lines) + "\n"


def best_time(text: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        load_spec_text(text)
        best = min(best, time.perf_counter() - start)
    return best


def test_checking_a_spec_costs_time_linear_in_its_states() -> None:
    small, large = chain_spec(500), chain_spec(4_000)
    best_time(small, 1)  # caches warm
    # 8 times the states: about 8 times the time if linear, 64 if quadratic
    # (before, a chain of enter gotos and the reachability search were). The
    # best of a few runs: a busy machine only ever adds time.
    ratio = best_time(large, 2) / best_time(small, 3)
    assert ratio < 20, f"8x the states took {ratio:.1f}x the time"


def test_a_large_chain_spec_still_reports_what_is_wrong() -> None:
    text = chain_spec(3_000).replace("enter: [goto: s0]", "enter: [goto: t0]")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "big.yaml")
    errors = info.value.errors
    # Every state on the enter loop is reported (the first 50 are shown).
    assert len(errors) == loader.MAX_ERRORS + 1
    assert "state 't0': goto in enter actions leads back to it" in str(errors[0])
    # The ring of s states is now unreachable: 3,000 more.
    assert str(errors[-1]).endswith("... and 5950 more errors")


def _cyclic_by_search(graph: dict[str, set[str]]) -> set[str]:
    """The checks' old way: from each node, search whether it leads back to itself."""
    found = set()
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == start:
                    found.add(start)
                    todo = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    return found


def test_the_loop_check_finds_what_a_search_from_each_state_finds() -> None:
    rng = random.Random(7)
    for _ in range(500):
        names = [f"s{i}" for i in range(rng.randint(1, 12))]
        graph = {
            name: {rng.choice(names) for _ in range(rng.randint(0, 3))}
            for name in rng.sample(names, rng.randint(0, len(names)))
        }
        assert _on_cycles(graph) & set(graph) == _cyclic_by_search(graph), graph


# -- nesting ------------------------------------------------------------------------------

#: A tab in a comment: PyYAML alone reads the spec (libyaml reads tabs otherwise).
READERS = pytest.mark.parametrize("prefix", ["", "#\t\n"], ids=["libyaml", "pyyaml"])


@READERS
def test_absurd_flow_nesting_is_one_error_with_its_position(prefix: str) -> None:
    line = 1 + prefix.count("\n")
    with pytest.raises(SpecError) as info:
        load_spec_text(prefix + "a: " + "[" * 10_000, "deep.yaml")
    # `a: ` then the top mapping and 100 lists: the 100th `[` is one too many.
    assert str(info.value) == (
        f"deep.yaml:{line}:{3 + MAX_DEPTH}: YAML nested deeper than {MAX_DEPTH} levels"
    )


@READERS
def test_absurd_block_nesting_is_one_error_with_its_position(prefix: str) -> None:
    text = prefix + "".join("  " * i + "k:\n" for i in range(MAX_DEPTH + 50)) + "  " * 200 + "v\n"
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "deep.yaml")
    line = prefix.count("\n") + MAX_DEPTH
    assert str(info.value) == (
        f"deep.yaml:{line + 1}:{2 * MAX_DEPTH + 1}: YAML nested deeper than {MAX_DEPTH} levels"
    )


@READERS
def test_nesting_up_to_the_limit_is_read(prefix: str) -> None:
    depth = MAX_DEPTH - 1  # and the top mapping
    with pytest.raises(SpecError) as info:
        load_spec_text(prefix + "x: " + "[" * depth + "]" * depth + "\n", "ok.yaml")
    assert "unknown key 'x'" in str(info.value)


# -- libyaml reads what PyYAML reads -----------------------------------------------------


def _events(parser: Any, text: str) -> list[tuple[Any, ...]]:
    return [
        (type(e).__name__, e.start_mark.line, e.start_mark.column, getattr(e, "tag", None),
         getattr(e, "value", None), getattr(e, "style", None) or "", getattr(e, "implicit", None))
        for e in yamlread.events_with(parser, text)
    ]  # fmt: skip


@pytest.mark.skipif(yamlread.Fast is None, reason="PyYAML without libyaml")
@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parent.parent / "specs").glob("*.yaml")), ids=lambda p: p.name
)
def test_both_readers_give_the_same_events_and_positions(path: Path) -> None:
    text = path.read_text()
    fast = _events(yamlread.Fast, text)
    assert fast == _events(yamlread.Reference, text)
    assert len(fast) > 20  # the spec was read


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\tb\n", "s.yaml:1:3: invalid YAML: found character '\\t' that cannot start any token"),
        ("a: |#\n  x\n", "s.yaml:1:5: invalid YAML: expected chomping or indentation indicators"),
        ("a: [b\n", "s.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_yaml_errors_are_pyyaml_s_own(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    assert str(info.value).startswith(expected)


async def test_many_states_handling_one_event_dispatch_by_table(serve_spec: Any) -> None:
    # Past a few states, a handler looks its state's rules up in a table (a chain
    # of thousands of tests would not even compile).
    n = 40
    lines = ["initial: s0", "handlers:", "  input:", "    - equals: quit", "      do: [close]"]
    lines.append("states:")
    for k in range(n):
        lines += [f"  s{k}:", "    handlers:", "      input:", "        - prefix: m",
                  f"          do: [reply: 's{k} {{input}}', goto: s{(k + 1) % n}]"]  # fmt: skip
    server = await serve_spec("\n".join(lines) + "\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"".join(b"m%d\n" % k for k in range(n + 2)) + b"quit\n")
    async with asyncio.timeout(20):
        got = await reader.read(-1)
    writer.close()
    expected = [f"s{k % n} m{k}" for k in range(n + 2)]
    assert got.decode().splitlines() == expected


async def test_many_states_log_through_the_server_s_writer(serve_spec: Any) -> None:
    # Their handlers are compiled when first used, after the server is built: they
    # still write their log lines where the server's go.
    lines = ["initial: s0", "states:"]
    for k in range(20):
        step = f"log: 'in s{k}: {{input}}', reply: ok, goto: s{(k + 1) % 20}"
        lines += [f"  s{k}:", "    handlers:", "      input:", f"        - do: [{step}]"]
    written: list[str] = []

    class Console:
        lines = written

    server = await serve_spec("\n".join(lines) + "\n", console=Console())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"a\nb\n")
    async with asyncio.timeout(20):
        assert await reader.readexactly(6) == b"ok\nok\n"
    writer.close()
    assert written == ["in s0: a", "in s1: b"]


def test_every_model_struct_refuses_unknown_keys() -> None:
    # Loading converts a valid spec with msgspec in one call, trusting it to
    # refuse what the field-by-field walk refuses.
    seen = 0
    for module in (model, model_filters):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, msgspec.Struct):
                if value.__module__ != module.__name__:
                    continue
                seen += 1
                assert value.__struct_config__.forbid_unknown_fields, value
                private = [f for f in value.__struct_fields__ if f.startswith("_")]
                assert not private or value is model.Spec, (value, private)
    assert seen > 20
