"""Inputs a rule matches: text made from a regex, a prefix or an equals.

:func:`from_regex` walks the parsed pattern (the parse tree Python's own ``re``
compiles from, :mod:`re._parser`, as hypothesis's ``from_regex`` does) and
writes a few short, readable strings it matches: each variant takes other
branches, other characters of a class and other repeat counts, so that a rule
placed after another whose pattern is close can still be told apart. Letters
and digits come first wherever a class allows them, so that a generated
conversation reads like one a person would type.

Lookarounds and backreferences to groups not yet matched are written as
nothing: the caller checks each example against the pattern and drops those
that do not match (where hypothesis is installed, :mod:`.explore` asks it for
such patterns).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from re import _constants as sre  # type: ignore[attr-defined]  # the parse tree's opcodes
from re import _parser  # type: ignore[attr-defined]
from typing import Any

__all__ = ["from_regex"]

#: Characters tried for a class, in groups: each variant starts with another of
#: the first four (so that ``[^/]`` gives ``a``, then ``0``, then ``_``...), and
#: the rest of printable ASCII, then line breaks, then any Latin-1 come last.
_GROUPS = (string.ascii_lowercase, string.digits, "_-.@:/+=,;!?#", string.ascii_uppercase)
_REST = " " + "".join(chr(c) for c in range(33, 127)) + "\n\r\t" + "".join(map(chr, range(256)))
_SPACE = " \t\n\r\f\v"


def from_regex(pattern: str, *, ignore_case: bool = False, variants: int = 4) -> list[str]:
    """Up to ``variants`` distinct strings meant to contain a match of ``pattern``
    (unchecked: see the module docstring). An unparsable pattern gives none."""
    try:
        tree = _parser.parse(pattern, 2 if ignore_case else 0)  # re.IGNORECASE
    except Exception:  # re.error, or a construct this version does not know
        return []
    found: list[str] = []
    for variant in range(variants * 2):
        text = _Writer(variant).tree(list(tree))
        if text not in found:
            found.append(text)
        if len(found) >= variants:
            break
    return found


class _Writer:
    def __init__(self, variant: int):
        self.variant = variant
        self.groups: dict[int, str] = {}

    def tree(self, items: list[Any]) -> str:
        return "".join(self.node(op, arg) for op, arg in items)

    def node(self, op: Any, arg: Any) -> str:
        v = self.variant
        if op is sre.LITERAL:
            return chr(arg)
        if op is sre.NOT_LITERAL:
            return _pick(lambda c: ord(c) != arg, v)
        if op is sre.ANY:
            return _pick(lambda c: c != "\n", v)
        if op is sre.IN:
            return _pick(_class(arg), v)
        if op is sre.BRANCH:
            alternatives = arg[1]
            return self.tree(list(alternatives[v % len(alternatives)]))
        if op is sre.SUBPATTERN:
            group, _add, _del, inner = arg
            text = self.tree(list(inner))
            if group is not None:
                self.groups[group] = text
            return text
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            low, high, inner = arg
            high = low + 3 if high is sre.MAXREPEAT else high
            count = (max(low, 1), low, min(high, low + 2), min(high, max(low, 1) + 1))[v % 4]
            return "".join(self.tree(list(inner)) for _ in range(min(count, high)))
        if op is sre.GROUPREF:
            return self.groups.get(arg, "")
        if op is sre.GROUPREF_EXISTS:
            group, yes, no = arg
            branch = yes if group in self.groups else no
            return "" if branch is None else self.tree(list(branch))
        if op is getattr(sre, "ATOMIC_GROUP", None):
            return self.tree(list(arg))
        return ""  # AT (anchors), ASSERT, ASSERT_NOT: nothing to write


def _class(items: list[Any]) -> Any:
    """A test of one character for a class ``[...]``."""
    negate = bool(items) and items[0][0] is sre.NEGATE
    tests: list[Callable[[str], bool]] = []
    for op, arg in items[1:] if negate else items:
        if op is sre.LITERAL:
            tests.append(_equal(arg))
        elif op is sre.RANGE:
            tests.append(_between(arg[0], arg[1]))
        elif op is sre.CATEGORY:
            tests.append(_CATEGORIES.get(arg, lambda c: False))

    def test(c: str) -> bool:
        return any(t(c) for t in tests) != negate

    return test


def _equal(code: int) -> Callable[[str], bool]:
    return lambda c: ord(c) == code


def _between(low: int, high: int) -> Callable[[str], bool]:
    return lambda c: low <= ord(c) <= high


_CATEGORIES: dict[Any, Callable[[str], bool]] = {
    sre.CATEGORY_DIGIT: lambda c: c in string.digits,
    sre.CATEGORY_NOT_DIGIT: lambda c: c not in string.digits,
    sre.CATEGORY_SPACE: lambda c: c in _SPACE,
    sre.CATEGORY_NOT_SPACE: lambda c: c not in _SPACE,
    sre.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
    sre.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
}


def _pick(test: Any, variant: int) -> str:
    """A character ``test`` accepts: the first readable one of the variant's order."""
    k = variant % len(_GROUPS)
    for group in (*_GROUPS[k:], *_GROUPS[:k], _REST):
        for c in group:
            if test(c):
                return c
    return ""  # a class nothing in Latin-1 is in: the caller checks the example
