"""A hostile line cannot stall the server through a spec's regular expression:
rules and ``matches()`` run on RE2 (linear time); a pattern only Python's ``re``
can run is refused when it can backtrack catastrophically."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import TIMEOUT, connect

from statemachine_server import SpecError
from statemachine_server.language import load_spec_text
from statemachine_server.language.linear import linear_on_re
from statemachine_server.language.regexes import (
    PatternError,
    backtracking_risk,
    compile_pattern,
    literal_prefix,
)

HOSTILE = "a" * 25 + "!"  # ^(a+)+$ on re: about 2.5 s, doubling per further "a"


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    return str(info.value).splitlines()


async def test_a_nested_quantifier_rule_answers_a_hostile_line_at_once(serve_spec: Any) -> None:
    server = await serve_spec(
        "handlers:\n  input:\n"
        "    - match: '^(a+)+$'\n      do: [reply: 'yes']\n"
        "    - if: matches(input, '^(a|a)*$')\n      do: [reply: also]\n"
        "    - do: [reply: 'no']\n"
    )
    reader, writer = await connect(server)
    started = time.perf_counter()
    writer.write(((HOSTILE + "\n") * 20 + "a" * 65_000 + "!\naaaa\n").encode())
    async with asyncio.timeout(TIMEOUT):
        for _ in range(21):
            assert await reader.readline() == b"no\n"
        assert await reader.readline() == b"yes\n"
    # 22 lines, one of 64 KiB, two patterns each: well under a second (re: minutes).
    assert time.perf_counter() - started < 1.0
    writer.close()


def test_rules_keep_re_syntax_groups_flags_and_undecodable_bytes() -> None:
    smtp = compile_pattern(r"(?i)^MAIL FROM:\s*<(?P<addr>[^>]*)>")
    assert smtp.engine == "python"  # proven linear on re (linear.py)
    assert compile_pattern(r"(?i)^NOOP\b").engine == "re2"  # \b: not covered by the proof
    assert smtp.search("mail from: <a@b>") == {"addr": "a@b"}
    plain = compile_pattern(r"^(?P<authzid>[^\x00]*)\x00(?P<user>[^\x00]+)\x00(?P<pw>[^\x00]*)\Z")
    assert plain.search("\x00bob\x00pw") == {"authzid": "", "user": "bob", "pw": "pw"}
    assert compile_pattern(r"a\Z").search("a\n") is None  # \Z: the very end, as in re
    key = compile_pattern(r"^get (?P<key>\S+)(?P<opt> x)?$", ignore_case=True)
    # A line is decoded with surrogateescape: its undecodable bytes are matched too.
    assert key.search("GET caf\udce9") == {"key": "caf\udce9", "opt": ""}
    assert key.groups == frozenset({"key", "opt"})


def test_a_pattern_only_re_can_run_falls_back_when_it_is_safe() -> None:
    twice = compile_pattern(r"^(?P<w>\w+) (?P=w)$")  # a backreference: not RE2's
    assert twice.engine == "python"
    assert twice.search("hey hey") == {"w": "hey"}


@pytest.mark.parametrize(
    "pattern",
    [r"^(a+)+$", r"(a|a)*", r"(.*)*", r"(\w+\s?)+$", r"(?:x{1,5})+", r"((ab)*c)+"],
)
def test_the_shapes_that_backtrack_catastrophically_are_found(pattern: str) -> None:
    assert backtracking_risk(pattern) is not None


@pytest.mark.parametrize(
    "pattern", [r"^(?P<cmd>gets?) (?P<key>[!-~]{1,250})$", r"(?:GET|POST)+", r"(ab)+", r"[(+]+"]
)
def test_ordinary_patterns_pass_the_check(pattern: str) -> None:
    assert backtracking_risk(pattern) is None


def test_check_refuses_a_catastrophic_pattern_that_would_run_on_re() -> None:
    # A lookahead keeps it off RE2; its nested quantifier makes it an error.
    errors = errors_of("handlers:\n  input:\n    - match: '(?=x)(a+)+$'\n      do: []\n")
    assert len(errors) == 1
    assert errors[0].startswith("s.yaml:3:14: this pattern can backtrack catastrophically")
    assert "at position 5" in errors[0]
    errors = errors_of("handlers:\n  input:\n    - if: matches(input, '(a|a)*(?<=a)')\n"
                       "      do: []\n")  # fmt: skip
    assert errors[0].startswith("s.yaml:3:26: matches(): this pattern can backtrack")
    with pytest.raises(PatternError):
        compile_pattern(r"(\w+\s?)+(?!x)$")


def test_a_catastrophic_pattern_re2_runs_is_accepted() -> None:
    load_spec_text("handlers:\n  input:\n    - match: '^(a+)+$'\n      do: []\n", "s.yaml")


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("^(?P<cmd>gets?) (?P<key>[!-~]{1,250})$", "get"),
        ("^delete (?P<key>[!-~]{1,250})", "delete "),
        ("^(?P<cmd>set|add) x", ""),  # alternatives: unsure
        ("^(ab)?c", ""),  # an optional group
        ("^ab?c", "a"),
        ("^a+b", "a"),
        ("(?i)^QUIT$", ""),  # flags: unsure
        ("QUIT", ""),  # not anchored
        ("^\\d+", ""),
    ],
)
def test_an_anchored_pattern_s_literal_prefix_is_tested_first(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


LINEAR = {
    r"^(?P<cmd>gets?) (?P<key>[!-~]{1,250})$": True,
    r"^(?P<cmd>gets?) (?P<keys>[!-~]{1,250}(?: [!-~]{1,250})*)$": True,
    r"(?i)^MAIL FROM:\s*<(?P<addr>[^>]*)>": True,
    r"(?i)^(HELO|EHLO)\s+(?P<host>\S+)": True,
    r"^[^\r\n]*$": True,
    r"^(a+)+$": False,  # nested repetition
    r"^\s*\s*$": False,  # two repetitions that can share the text
    r"^a*a*b": False,
    r"^(a|a)*$": False,  # repeated alternatives that start alike
    r"^(?:ab|ac)*$": False,
    r"^(a?)*$": False,  # an iteration that may match nothing
    r"abc": False,  # unanchored: a search restarts at every position
    r"^a|b": False,  # the second alternative is not anchored
    r"^x.*y": False,
}


@pytest.mark.parametrize(("pattern", "linear"), LINEAR.items())
def test_patterns_proven_linear_run_on_re_the_others_on_re2(pattern: str, linear: bool) -> None:
    assert linear_on_re(pattern) is linear


@pytest.mark.parametrize("pattern", [p for p, linear in LINEAR.items() if linear])
def test_a_pattern_proven_linear_is_fast_on_hostile_lines(pattern: str) -> None:
    rule = compile_pattern(pattern)
    assert rule.engine == "python"
    for line in ("a" * 65536, "get " + "a" * 65535, "MAIL FROM:" + " " * 65000 + "!", "\t" * 65536):
        started = time.perf_counter()
        rule.search(line)
        assert time.perf_counter() - started < 0.05, (pattern, line[:20])
