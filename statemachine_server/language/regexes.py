"""The regular expressions of specs (a rule's ``match``, ``matches()``), compiled.

They test what clients send, so their cost must not depend on how hostile the
text is. Python's ``re`` backtracks: ``^(a+)+$`` on 25 ``a`` and a ``!`` takes
seconds, each further character doubling it, and the kernel (one thread) serves
nobody meanwhile. So a pattern runs on RE2 (``google-re2``), whose time is linear
in the text whatever the pattern, unless it is one :mod:`.linear` proves ``re``
runs in linear time too (anchored, every repeated element unable to stop at more
than one place: most protocol rules), which then runs on ``re``, four to five
times cheaper per call. Measured here (``benchmarks/`` style, one process,
CPython 3.11): typical memcache-lite and smtp-sink rules take 0.5-2.6 us on RE2
against 0.1-0.55 us on ``re`` (about 4-5 times as long, in absolute terms a
microsecond or two per rule), and ``^(a+)+$`` on a 64 KiB line 0.1 ms, where ``re``
takes 120 ms on 22 characters.

RE2 has no backreferences, lookaround, possessive quantifiers or verbose mode. A
pattern that needs them runs on ``re``, and only if the structural check
(:func:`backtracking_risk`) finds none of the shapes that backtrack
catastrophically (a repeated group that itself repeats, or that holds overlapping
alternatives); otherwise the pattern is an error at load time (``check``).

Differences a spec author may meet under RE2: ``\\d``, ``\\w``, ``\\s`` and ``\\b``
are ASCII (as with ``re.ASCII``); ``\\Z`` is accepted (rewritten to RE2's ``\\z``);
``{,n}`` is not a repetition; repetition counts stop at 1000.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import re2  # type: ignore[import-untyped]

# The binding's own Match on bytes: its str API encodes strictly (input decoded with
# surrogateescape would raise) and costs 5 times as much per call (a generator,
# offsets converted back to characters). Surrogates are passed through as RE2's
# lenient UTF-8 decoder reads them, so `.` and `\S` match an undecodable byte as
# `re` does.
from re2 import _re2  # type: ignore[import-untyped]

from .linear import linear_on_re

__all__ = ["Compiled", "PatternError", "backtracking_risk", "compile_pattern", "literal_prefix"]

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED


class PatternError(ValueError):
    """A pattern that cannot be used: ``offset`` is where in it, when known."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Compiled:
    """A compiled pattern.

    Attributes:
        search: ``search(text)``: the named groups (``""`` for one that took no
            part), or None when the pattern is not found.
        groups: the names of its groups.
        engine: ``"re2"``, or ``"python"`` for a pattern RE2 cannot run.
    """

    search: Callable[[str], dict[str, str] | None]
    groups: frozenset[str]
    engine: str


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str, ignore_case: bool = False) -> Compiled:
    """Compile a spec's pattern: on RE2, or on ``re`` where it must and may.

    Raises:
        PatternError: the pattern is not valid, or it would run on ``re`` and can
            backtrack catastrophically.
    """
    if linear_on_re(pattern, ignore_case):
        # Proven linear on re (linear.py): re's search, a fraction of RE2's cost.
        try:
            rx = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise PatternError(f"bad regular expression: {exc.msg}", exc.pos) from None
        return Compiled(_re_search(rx), frozenset(rx.groupindex), "python")
    try:
        compiled = _compile_re2(pattern, ignore_case)
    except PatternError as refused:
        reason = refused.message
    else:
        return _with_prefix(compiled, pattern, ignore_case)
    try:
        rx = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise PatternError(f"bad regular expression: {exc.msg}", exc.pos) from None
    risk = backtracking_risk(pattern)
    if risk is not None:
        what, offset = risk
        raise PatternError(
            f"this pattern can backtrack catastrophically ({what}): a hostile line would "
            f"stall the server; it needs Python's re (RE2 cannot run it: {reason}), so "
            "rewrite it without that",
            offset,
        )
    return Compiled(_re_search(rx), frozenset(rx.groupindex), "python")


def _re_search(rx: re.Pattern[str]) -> Callable[[str], dict[str, str] | None]:
    search = rx.search

    def search_re(text: str) -> dict[str, str] | None:
        m = search(text)
        return None if m is None else m.groupdict("")

    return search_re


@functools.lru_cache(maxsize=256)
def cached(pattern: str, ignore_case: bool) -> Compiled:
    """:func:`compile_pattern`, remembered: for patterns made per record
    (a ``match`` with ``{fields}``)."""
    return compile_pattern(pattern, ignore_case)


def _compile_re2(pattern: str, ignore_case: bool) -> Compiled:
    options = re2.Options()
    options.log_errors = False  # a refusal is ours to report, not RE2's to print
    options.case_sensitive = not ignore_case
    rx = _re2.RE2(_for_re2(pattern).encode("utf-8", "surrogatepass"), options)
    if not rx.ok():
        error = rx.error()
        raise PatternError(error.decode("utf-8", "replace") if isinstance(error, bytes)
                           else str(error))  # fmt: skip
    named: list[tuple[bytes, int]] = rx.NamedCapturingGroups()
    names = [(k.decode(), i) for k, i in named]
    match = rx.Match

    def search_re2(text: str) -> dict[str, str] | None:
        data = text.encode("utf-8", "surrogatepass")
        spans = match(_UNANCHORED, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        found = {}
        for name, i in names:
            start, end = spans[i]
            found[name] = "" if start < 0 else data[start:end].decode("utf-8", "surrogatepass")
        return found

    return Compiled(search_re2, frozenset(n for n, _ in names), "re2")


def _with_prefix(compiled: Compiled, pattern: str, ignore_case: bool) -> Compiled:
    """``compiled``, its search first testing the literal text an anchored pattern
    must start with: a rule tried on a line that is not its command (most rules,
    most lines) costs a ``startswith``, not a call into RE2 (about 1 us)."""
    prefix = "" if ignore_case else literal_prefix(pattern)
    if not prefix:
        return compiled
    search = compiled.search

    def search_after_prefix(text: str) -> dict[str, str] | None:
        return search(text) if text.startswith(prefix) else None

    return Compiled(search_after_prefix, compiled.groups, compiled.engine)


_META = frozenset("\\.^$*+?{}[]|()")


def literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with, if it is anchored
    (``^``), as far as a plain scan can tell; ``""`` when unsure. Groups without
    alternatives are entered (``^(?P<cmd>gets?) `` gives ``get``); flags, escapes,
    classes and alternatives end it."""
    if not pattern.startswith("^"):
        return ""
    out: list[str] = []
    i, n = 1, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "(":
            close = _group_end(pattern, i)
            if close < 0 or "|" in _top_level(pattern[i + 1 : close]):
                break
            if pattern[close + 1 : close + 2] in ("?", "*", "{"):
                break  # the group may be absent
            if pattern.startswith("(?P<", i):
                i = pattern.find(">", i) + 1
                if i <= 0:
                    break
                continue
            if pattern.startswith("(?:", i):
                i += 3
                continue
            if pattern.startswith("(?", i):
                break  # flags, lookaround: unsure
            i += 1
            continue
        if c in _META:
            break
        quantified = i + 1 < n and pattern[i + 1] in "?*{"
        if quantified:
            break  # it may be absent
        out.append(c)
        if i + 1 < n and pattern[i + 1] == "+":
            break  # at least once: it is there, what follows is unsure
        i += 1
    return "".join(out)


def _group_end(pattern: str, start: int) -> int:
    """The index of the ``)`` that closes the group opened at ``start``; -1 if unsure."""
    depth, i, n = 0, start, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            return -1  # classes may hold parentheses: not worth scanning
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _top_level(body: str) -> str:
    """``body`` without its nested groups (where a ``|`` is the nested group's)."""
    out, depth = [], 0
    for c in body:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0:
            out.append(c)
    return "".join(out)


def _for_re2(pattern: str) -> str:
    """Python's spelling to RE2's where they differ and the meaning is the same:
    ``\\Z`` (end of text) is RE2's ``\\z``."""
    if "\\Z" not in pattern:
        return pattern
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            pair = pattern[i : i + 2]
            out.append("\\z" if pair == "\\Z" and not in_class else pair)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            i += 1
            if pattern[i : i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i : i + 1] == "]":  # a ] first in a class is literal
                out.append("]")
                i += 1
            continue
        if c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


# -- the structural check ----------------------------------------------------------------

_QUANTIFIER = re.compile(r"[*+?]|\{(\d*)(?:,(\d*))?\}")


@dataclass
class _Group:
    start: int  # offset of its "("
    repeats: bool = False  # it holds a quantifier that repeats (max > 1)
    firsts: list[str | None] | None = None  # each alternative's first literal (None: any)
    at_start: bool = True  # nothing yet in the current alternative


def backtracking_risk(pattern: str) -> tuple[str, int] | None:
    """Whether a backtracking engine can take exponential time on this pattern.

    A structural check, conservative in the shapes it knows: a group repeated by
    ``*``, ``+`` or ``{n,m}`` (m > 1) that itself holds such a quantifier
    (``(a+)+``, ``(.*)*``, ``(\\w+\\s?)+``), or whose alternatives may begin with
    the same character (``(a|a)*``, ``(\\w|x)+``). It does not find every slow
    pattern (``\\s*\\s*$`` is polynomial): that is what RE2 is for.

    Returns:
        what was found and the offset of the group's ``(``, or None.
    """
    stack = [_Group(0, firsts=[])]
    i, n = 0, len(pattern)
    last: _Group | None = None  # the group that just closed, if the last atom was one
    while i < n:
        c = pattern[i]
        top = stack[-1]
        m = _QUANTIFIER.match(pattern, i) if c in "*+?{" else None
        if m is not None:
            token = m.group(0)
            if token == "?":
                repeats = False
            elif token in "*+":
                repeats = True
            else:
                high = m.group(2) if m.group(2) is not None else m.group(1)
                repeats = m.group(2) == "" or ((high or "0").isdigit() and int(high or "0") > 1)
            i = m.end()
            if i < n and pattern[i] in "?+":  # lazy or possessive
                i += 1
            if repeats:
                if last is not None:
                    if last.repeats:
                        return "a repeated group holds a repeating quantifier", last.start
                    if last.firsts is not None and _overlap(last.firsts):
                        return "a repeated group has alternatives that overlap", last.start
                top.repeats = True
            last = None
            continue
        last = None
        if c == "\\":
            first = pattern[i + 1 : i + 2]
            _atom(top, first if first and not first.isalnum() else None)
            i += 2
        elif c == "[":
            j = i + 1
            if pattern[j : j + 1] == "^":
                j += 1
            if pattern[j : j + 1] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            _atom(top, None)
            i = j + 1
        elif c == "(":
            if pattern.startswith("(?#", i):
                end = pattern.find(")", i)
                i = n if end < 0 else end + 1
                continue
            _atom(top, None)
            stack.append(_Group(i, firsts=[]))
            i += 1
            if pattern.startswith("?", i):  # (?:...), (?P<name>...), (?=...), flags
                m2 = re.match(r"\?(?:P<\w+>|P=\w+\)|<?[=!]|[aiLmsux-]*[:)]|)", pattern[i:])
                i += m2.end() if m2 else 1
        elif c == ")" and len(stack) > 1:
            group = stack.pop()
            assert group.firsts is not None
            if group.at_start:
                group.firsts.append(None)
            if len(group.firsts) < 2:
                group.firsts = None
            stack[-1].repeats = stack[-1].repeats or group.repeats
            last = group
            i += 1
        elif c == "|":
            assert top.firsts is not None
            if top.at_start:
                top.firsts.append(None)
            top.at_start = True
            i += 1
        else:
            _atom(top, None if c in ".^$" else c)
            i += 1
    return None


def _atom(group: _Group, first: str | None) -> None:
    if group.at_start:
        assert group.firsts is not None
        group.firsts.append(first)
        group.at_start = False


def _overlap(firsts: list[str | None]) -> bool:
    if None in firsts:
        return True
    return len(set(firsts)) < len(firsts)
