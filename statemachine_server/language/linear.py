"""Which patterns Python's ``re`` runs in linear time: those a rule may run on it.

RE2 (:mod:`.regexes`) is linear in the text for every pattern, but a call into it
costs a microsecond or more where ``re`` costs a fraction of one, on every rule a
line is tried against. ``re`` backtracks; backtracking costs more than linear time
only when the engine can try the same text more than one way: a repeated element
followed by something that can match what the element matches (``\\s*\\s*$``,
``(a+)+``, ``a*a*b``), repeated alternatives that start alike, or a search that
restarts at every position of an unanchored pattern.

So a pattern runs on ``re`` when :func:`linear_on_re` proves none of that can
happen (an over-approximation of every character set keeps the proof sound: a
doubt sends the pattern to RE2):

* it is anchored (``^`` or ``\\A`` first, after an optional ``(?i)``);
* it is made of literals, classes (``[...]``, ``.``, ``\\d \\s \\w`` and their
  negations), groups (capturing, named, non-capturing) with alternatives, the
  anchors ``$``, ``\\Z``, and greedy quantifiers (``? * + {m,n}``);
* every element repeated a variable number of times matches no character that
  can come right after it (its *follow* set), so once it stops, it could not
  have stopped elsewhere; a repeated group's alternatives start with different
  characters and cannot be empty.

A protocol's command rules nearly always pass (``^(?P<cmd>gets?) (?P<key>[!-~]{1,250})$``:
``s?`` is followed by a space, the key's class holds no space and is followed by
the end). The proof is by construction, not by timing, and the tests check it
against RE2's answers.
"""

from __future__ import annotations

__all__ = ["linear_on_re"]

_MAX = 0x10FFFF
#: A set of code points as sorted, disjoint, inclusive ranges.
Ranges = tuple[tuple[int, int], ...]
_ALL: Ranges = ((0, _MAX),)
_NONE: Ranges = ()


def _norm(ranges: list[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _union(a: Ranges, b: Ranges) -> Ranges:
    return _norm([*a, *b])


def _complement(a: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in a:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX:
        out.append((start, _MAX))
    return tuple(out)


def _disjoint(a: Ranges, b: Ranges) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return False
    return True


def _chars(text: str) -> Ranges:
    return _norm([(ord(c), ord(c)) for c in text])


# Over-approximations: all of non-ASCII counts as digit, space and word (re's
# are Unicode-aware); an over-approximated set can only make the proof fail.
_NON_ASCII: Ranges = ((128, _MAX),)
_DIGIT = _union(_chars("0123456789"), _NON_ASCII)
# re's \s is exactly str.isspace(): these.
_SPACE = _union(
    _chars(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"),
    ((0x2000, 0x200A),),
)
_WORD = _union(_norm([(48, 57), (65, 90), (95, 95), (97, 122)]), _NON_ASCII)
# Their negations, over-approximated the same way: everything but the ASCII ones.
_NOT_DIGIT = _complement(_norm([(48, 57)]))
_NOT_SPACE = _complement(_SPACE)
_NOT_WORD = _complement(_norm([(48, 57), (65, 90), (95, 95), (97, 122)]))
_CLASS_ESCAPES = {"d": _DIGIT, "s": _SPACE, "w": _WORD, "D": _NOT_DIGIT, "S": _NOT_SPACE,
                  "W": _NOT_WORD}  # fmt: skip
_LITERAL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0"}
_META = set(".^$*+?{}[]\\|()")


class _Unsure(Exception):
    """Something the proof does not cover: the pattern goes to RE2."""


class _Element:
    """One element of a sequence: a character set or a group, with its repetition."""

    __slots__ = ("alts", "chars", "hi", "lo")

    def __init__(self, chars: Ranges | None = None, alts: list[list[_Element]] | None = None):
        self.chars = chars
        self.alts = alts
        self.lo, self.hi = 1, 1

    def first(self) -> Ranges:
        if self.chars is not None:
            return self.chars
        assert self.alts is not None
        out = _NONE
        for seq in self.alts:
            out = _union(out, _first(seq))
        return out

    def nullable(self) -> bool:
        if self.lo == 0:
            return True
        return self.alts is not None and any(_nullable(seq) for seq in self.alts)


def _first(seq: list[_Element]) -> Ranges:
    out = _NONE
    for el in seq:
        out = _union(out, el.first())
        if not el.nullable():
            break
    return out


def _nullable(seq: list[_Element]) -> bool:
    return all(el.nullable() for el in seq)


class _Parser:
    def __init__(self, pattern: str, fold: bool):
        self.p = pattern
        self.i = 0
        self.fold = fold

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def literal(self, c: str) -> Ranges:
        if self.fold and c.lower() != c.upper():
            return _chars(c.lower() + c.upper() + c.casefold())
        return _chars(c)

    def alternatives(self) -> list[list[_Element]]:
        alts = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.sequence())
        return alts

    def sequence(self) -> list[_Element]:
        seq: list[_Element] = []
        while self.i < len(self.p) and self.peek() not in "|)":
            el = self.atom()
            if el is None:
                continue  # an anchor at the end
            self.quantifier(el)
            seq.append(el)
        return seq

    def atom(self) -> _Element | None:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            if self.p.startswith("?P<", self.i):
                end = self.p.find(">", self.i)
                if end < 0:
                    raise _Unsure
                self.i = end + 1
            elif self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise _Unsure  # lookaround, flags, backreferences by name...
            alts = self.alternatives()
            if self.peek() != ")":
                raise _Unsure
            self.i += 1
            return _Element(alts=alts)
        if c == "$":
            if self.i != len(self.p):
                raise _Unsure  # an anchor in the middle
            return None
        if c == ".":
            return _Element(_complement(_chars("\n")))
        if c == "[":
            return _Element(self.char_class())
        if c == "\\":
            return self.escape(in_class=False)
        if c in _META:
            raise _Unsure  # a quantifier with nothing before it, ^ in the middle...
        return _Element(self.literal(c))

    def escape(self, in_class: bool) -> _Element | None:
        c = self.peek()
        self.i += 1
        if c in _CLASS_ESCAPES:
            return _Element(_CLASS_ESCAPES[c])
        if c in _LITERAL_ESCAPES:
            return _Element(self.literal(_LITERAL_ESCAPES[c]))
        if c == "Z" and not in_class and self.i == len(self.p):
            return None
        if c and not c.isalnum():
            return _Element(self.literal(c))
        raise _Unsure  # \b, \1, \x41, \N{...}: not covered

    def char_class(self) -> Ranges:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: Ranges = _NONE
        first = True
        while True:
            c = self.peek()
            if not c:
                raise _Unsure
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            self.i += 1
            if c == "\\":
                el = self.escape(in_class=True)
                if el is None or el.chars is None:
                    raise _Unsure
                item = el.chars
                low = None if len(item) != 1 or item[0][0] != item[0][1] else item[0][0]
            else:
                item, low = self.literal(c), ord(c)
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                if low is None:
                    raise _Unsure
                self.i += 1
                end = self.peek()
                self.i += 1
                if end == "\\":
                    el = self.escape(in_class=True)
                    if el is None or el.chars is None or len(el.chars) != 1:
                        raise _Unsure
                    high = el.chars[0][1]
                else:
                    high = ord(end)
                if high < low or self.fold:
                    raise _Unsure  # case-folded ranges: not worth modelling
                item = ((low, high),)
            ranges = _union(ranges, item)
        return _complement(ranges) if negated else ranges

    def quantifier(self, el: _Element) -> None:
        c = self.peek()
        if c == "?":
            el.lo, el.hi = 0, 1
        elif c == "*":
            el.lo, el.hi = 0, -1
        elif c == "+":
            el.lo, el.hi = 1, -1
        elif c == "{":
            end = self.p.find("}", self.i)
            body = self.p[self.i + 1 : end] if end > 0 else ""
            lo, comma, hi = body.partition(",")
            if not lo.isdigit() or (hi and not hi.isdigit()) or (not comma and hi):
                raise _Unsure  # {,n} and the like: re reads some as literals
            el.lo = int(lo)
            el.hi = el.lo if not comma else (int(hi) if hi else -1)
            self.i = end
        else:
            return
        self.i += 1
        if self.peek() in ("?", "+"):
            raise _Unsure  # lazy or possessive: not covered (RE2 has no possessive)


def _check(seq: list[_Element], follow: Ranges) -> None:
    """Raise _Unsure where a repeated element could stop at more than one place."""
    for k, el in enumerate(seq):
        rest = seq[k + 1 :]
        after = _first(rest)
        if _nullable(rest):
            after = _union(after, follow)
        if el.lo != el.hi and not _disjoint(el.first(), after):
            raise _Unsure
        if el.alts is not None:
            repeated = el.hi != 1
            if repeated:
                firsts = [_first(s) for s in el.alts]
                if any(_nullable(s) for s in el.alts):
                    raise _Unsure  # an iteration that may match nothing
                for a in range(len(firsts)):
                    for b in range(a + 1, len(firsts)):
                        if not _disjoint(firsts[a], firsts[b]):
                            raise _Unsure
            # Inside: what follows the group, or (repeated) its next iteration.
            inner = _union(after, el.first()) if repeated else after
            for alt in el.alts:
                _check(alt, inner)


def linear_on_re(pattern: str, ignore_case: bool = False) -> bool:
    """Whether Python's ``re`` matches ``pattern`` (``search``) in time linear in
    the text, by the rules in this module's docstring."""
    fold = ignore_case
    text = pattern
    if text.startswith("(?i)"):
        fold, text = True, text[4:]
    if text.startswith("^"):
        text = text[1:]
    elif text.startswith("\\A"):
        text = text[2:]
    else:
        return False  # unanchored: a search restarts at every position
    parser = _Parser(text, fold)
    try:
        alts = parser.alternatives()
        if parser.i != len(text) or len(alts) > 1:
            return False  # "^a|b": the second alternative is not anchored
        # At the end: "$" also matches before a final "\n", so it may follow.
        _check(alts[0], _chars("\n"))
    except (_Unsure, IndexError, ValueError):
        return False
    return True
