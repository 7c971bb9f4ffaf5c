"""Which rule answered: a spec's rules, states and transitions, watched while it runs.

The kit answers "which rule sent that?" and "which rules did no test reach?"
with the compiler's own semantics rather than a second reading of the rules:
before a spec is built, each rule's ``do`` (each handler that is a plain list of
actions, each state's ``enter`` and ``timeout``) gets one ``log`` action in
front, whose line names the place (a :class:`Point`) and the session. The
compiled program is the spec's own, tests, guards and first-match-wins
included, plus a log line per rule that runs; the lines never reach the log:
:class:`LogLines` takes them out as they are written and tells the
:class:`Observer`. A ``goto`` runs the target's ``enter``, so a state entered
after a rule ran is a transition that rule made.

Positions come from the spec's YAML, read again here (the loader keeps none
once a spec is valid): a rule is named ``FILE:LINE (states.login.handlers.input[0])``.

What it costs: one log line per rule run, taken out before formatting; the
program is otherwise the same. A spec whose ``server.log.enabled`` is false is
compiled with logging on, and its own log lines are dropped as they come.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import Struct

from ..language.model import Close, Goto, Log, Rule, Spec, State, Use
from ..language.report import KEY, SpecPath, dotted
from ..language.yamlread import read

__all__ = [
    "MARK",
    "LogLines",
    "Observer",
    "Point",
    "closes",
    "gotos_of",
    "instrument",
    "marker_in",
]

#: What starts a marker line (followed by the session id and the point's index).
MARK = "@@testkit"


@dataclass(frozen=True)
class Point:
    """A place in a spec that the kit watches.

    Attributes:
        index: its number, in the order the spec is walked.
        kind: ``rule`` (a rule, or a handler that is a list of actions),
            ``enter`` or ``timeout`` (a state's).
        path: where it is in the spec, as the loader's errors name nodes.
        state: the state whose handlers hold it (None: the top-level handlers).
        event: the event a rule handles (None for enter and timeout).
        rule: the rule itself (None for a list of actions, enter and timeout).
        file: the spec file's name.
        line: its line in the file (0: unknown, e.g. a spec made in Python).
    """

    index: int
    kind: str
    path: SpecPath
    state: str | None
    event: str | None
    rule: Rule | None
    file: str
    line: int

    @property
    def where(self) -> str:
        """``FILE:LINE``."""
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def name(self) -> str:
        """Its path, dotted: ``states.login.handlers.input[0]``."""
        return dotted(self.path)

    def __str__(self) -> str:
        return f"{self.where} ({self.name})"


def instrument(spec: Spec, file: str, text: str | None) -> tuple[Spec, list[Point]]:
    """``spec`` with a marker ``log`` action in front of every watched place, and
    the places. ``text`` is the spec's YAML, for line numbers (None: no lines)."""
    marks: dict[SpecPath, tuple[int, int]] = {}
    if text is not None:
        doc = read(text, file)
        marks = doc.marks if doc is not None else {}
    points: list[Point] = []

    def mark(
        kind: str, path: SpecPath, state: str | None, event: str | None, rule: Rule | None = None
    ) -> Log:
        point = Point(len(points), kind, path, state, event, rule, file, _line(marks, path))
        points.append(point)
        return Log(text=f"{MARK} {{session.id}} {point.index}")

    def handlers(given: dict[str, Any], base: SpecPath, state: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for event, items in given.items():
            path = (*base, event)
            present = [x for x in items if x is not None]
            if present and all(isinstance(x, Rule) for x in present):
                out[event] = [
                    None
                    if r is None
                    else msgspec.structs.replace(
                        r, do=[mark("rule", (*path, i), state, event, r), *r.do]
                    )
                    for i, r in enumerate(items)
                ]
            elif present and not any(isinstance(x, Rule) for x in present):
                out[event] = [mark("rule", path, state, event), *items]
            else:
                out[event] = items  # empty, or refused by the loader already
        return out

    top = handlers(spec.handlers, ("handlers",), None)
    states: dict[str, State] = {}
    for name, st in spec.states.items():
        base: SpecPath = ("states", name)
        enter = [mark("enter", (*base, "enter"), name, None), *st.enter]
        timeout = st.timeout
        if timeout is not None:
            do = [mark("timeout", (*base, "timeout"), name, None), *timeout.do]
            timeout = msgspec.structs.replace(timeout, do=do)
        states[name] = msgspec.structs.replace(
            st,
            enter=enter,
            timeout=timeout,
            handlers=handlers(st.handlers, (*base, "handlers"), name),
        )
    server = spec.server
    if not server.log.enabled:
        log = msgspec.structs.replace(server.log, enabled=True)
        server = msgspec.structs.replace(server, log=log)
    return msgspec.structs.replace(spec, handlers=top, states=states, server=server), points


def _line(marks: dict[SpecPath, tuple[int, int]], path: SpecPath) -> int:
    # A node, its key, or the nearest node around it (a state without ``enter``
    # is found at the state).
    while path:
        at = marks.get(path) or marks.get((*path, KEY))
        if at is not None:
            return at[0]
        path = path[:-1]
    return 0


def gotos_of(items: list[Any], spec: Spec, seen: frozenset[str] = frozenset()) -> Iterator[str]:
    """The states a list of actions may go to (nested actions and ``use`` included)."""
    for item in items:
        if isinstance(item, Goto):
            yield item.state
        elif isinstance(item, Use):
            if item.name not in seen:
                yield from gotos_of(spec.actions.get(item.name, []), spec, seen | {item.name})
        elif isinstance(item, Struct):
            for key in item.__struct_fields__:
                value = getattr(item, key)
                if isinstance(value, list):
                    yield from gotos_of(value, spec, seen)


def closes(items: list[Any], spec: Spec, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a list of actions may close the connection."""
    for item in items:
        if isinstance(item, Close):
            return True
        if isinstance(item, Use):
            if item.name not in seen and closes(
                spec.actions.get(item.name, []), spec, seen | {item.name}
            ):
                return True
        elif isinstance(item, Struct):
            for key in item.__struct_fields__:
                value = getattr(item, key)
                if isinstance(value, list) and closes(value, spec, seen):
                    return True
    return False


@dataclass
class Observer:
    """What ran: every point reached, per session, and the transitions made."""

    points: list[Point]
    #: (session id, point), in the order they ran.
    fired: list[tuple[int, Point]] = field(default_factory=list)
    #: Point index -> how many times it ran.
    counts: Counter[int] = field(default_factory=Counter)
    #: (from state, to state) -> times (a goto to the state it is in counts too).
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Session id -> the state it last entered.
    state_of: dict[int, str] = field(default_factory=dict)
    #: Session id -> the last rule that ran for it.
    last_rule: dict[int, Point] = field(default_factory=dict)
    #: The points of the tick under way (a reply written now came from one).
    this_tick: list[tuple[int, Point]] = field(default_factory=list)

    def marker(self, text: str) -> bool:
        """Take a log line: True if it was a marker (and is noted), else False."""
        if not text.startswith(MARK):
            return False
        try:
            _, sid_text, index_text = text.split(" ")
            sid, point = int(sid_text), self.points[int(index_text)]
        except (ValueError, IndexError):
            return False
        self.fired.append((sid, point))
        self.this_tick.append((sid, point))
        self.counts[point.index] += 1
        if point.kind == "rule":
            self.last_rule[sid] = point
        elif point.kind == "enter" and point.state is not None:
            previous = self.state_of.get(sid)
            if previous is not None:
                self.transitions[(previous, point.state)] += 1
            self.state_of[sid] = point.state
        return True

    def end_tick(self) -> None:
        self.this_tick.clear()

    def answered(self, sid: int | None) -> Point | None:
        """The rule that most likely wrote what ``sid``'s client just received: the
        last of this tick's (that session's first, another's for a broadcast), or
        the last that ran for that session."""
        for owner, point in reversed(self.this_tick):
            if point.kind == "rule" and owner == sid:
                return point
        for _, point in reversed(self.this_tick):
            if point.kind == "rule":
                return point
        return None if sid is None else self.last_rule.get(sid)


class LogLines(list[Any]):
    """A console's lines of a tick, with the markers taken out as they come.

    ``build_server`` binds compiled ``log`` actions to the console's
    ``lines.append``: an instance of this class in that place sees each line
    as it is written, in order with the replies of the same handler.
    """

    def __init__(self, observer: Observer | None, keep_own: bool = True):
        super().__init__()
        self.observer = observer
        self.keep_own = keep_own

    def append(self, entry: Any) -> None:
        text = entry if isinstance(entry, str) else _text_of(entry)
        if self.observer is not None and text is not None and self.observer.marker(text):
            return
        if self.keep_own:
            super().append(entry)


def _text_of(entry: Any) -> str | None:
    # A JSON-format log entry: (time, session id, state, text).
    if isinstance(entry, tuple) and entry and isinstance(entry[-1], str):
        return entry[-1]
    return None


def marker_in(line: str) -> str | None:
    """The marker a written log line carries (a JSON line's message), if any."""
    if line.startswith(MARK):
        return line
    if line.startswith("{") and MARK in line:
        try:
            message = json.loads(line).get("message")
        except (ValueError, AttributeError):
            return None
        if isinstance(message, str) and message.startswith(MARK):
            return message
    return None
