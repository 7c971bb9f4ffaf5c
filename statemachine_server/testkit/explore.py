"""Generated conversations: walk a spec's states and rules, and measure what was reached.

XState's ``@xstate/graph`` is the precedent: a model of the machine gives the
paths to each state, and each path becomes a test. Here the model is the
spec's own: its protocol states, each state's input rules (its own, then the
top-level ones: first match wins), and the inputs each rule's test accepts,
made from its ``equals``, ``prefix`` or regex (:mod:`.examples`) or, for a
schema's ``message``, from the message's fields. What a guard (``if:``) needs
cannot be read off the rule, so every input is *run*, on a fresh server in
memory on a virtual clock, and what actually ran is observed (:mod:`.observe`):

1. a conversation that only connects gives the initial state;
2. from each state reached, for each of its input rules, each input made for it
   is sent after the shortest conversation known to reach that state; one that
   reaches something new (a rule, a state, a transition) is kept, and a state
   reached for the first time is explored in turn (breadth first, so the
   conversations kept are short);
3. a guarded rule that did not run is tried again with its input sent twice
   and three times (a counter such as ``heap.said < 2`` changes as it runs);
4. then the events input does not name: each state's timeout (the clock moved
   past it), the idle timeout, a record over the filter's limit (``error``), a
   record that fails the schema (``invalid``); ``disconnected`` runs at every
   conversation's end.

Inputs also come from a dictionary of the spec's own words: the text literals
in its guards and tests (``heap.command in ["CONNECT", "STOMP"]``), put in the
place of a regex's named groups, as a fuzzer's dictionary would. What no
conversation reached is listed with the likely reason.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from msgspec import Struct

from ..language.expressions import regex_fields
from ..language.messages import is_structured
from ..language.model import LineFilterSettings, Rule, Schema
from .harness import AsyncSpecServer, Loaded
from .observe import Point, gotos_of

__all__ = ["Exploration", "Trace", "explore"]

#: Conversations run at most, by default (each is a fresh server: a few ms).
DEFAULT_BUDGET = 400
#: Seconds of (virtual) time a conversation waits for a job's timers.
_JOB_WAIT = 30.0
#: Inputs tried per rule and state.
_PER_RULE = 8
#: Inputs for a rule that tests nothing (or that nothing could be made for).
_PLAIN = ["hello", "x", "42", "", "?"]
_LITERAL = re.compile(r'"((?:[^"\\]|\\.){1,64})"|\'((?:[^\'\\]|\\.){1,64})\'')
_SAMPLES: dict[str, Any] = {"str": "a", "int": 1, "float": 1.5, "bool": True, "any": 1}


@dataclass
class Trace:
    """One conversation run: what it was for, what happened, in order."""

    goal: str
    #: ("send", record), ("raw", text sent without framing), ("expect", record),
    #: ("advance", seconds), ("closed", None).
    steps: list[tuple[str, Any]] = field(default_factory=list)
    #: The points that ran, in order; those after the last action.
    fired: list[Point] = field(default_factory=list)
    last: list[Point] = field(default_factory=list)
    #: The client's protocol state at the end (None: closed, or no states).
    state: str | None = None
    closed: bool = False
    transitions: set[tuple[str, str]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    #: Whether it reached something no conversation before it had.
    new: bool = False


@dataclass
class Exploration:
    """What exploring a spec gave."""

    loaded: Loaded
    traces: list[Trace] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    rules: list[Point] = field(default_factory=list)
    transitions: set[tuple[str, str]] = field(default_factory=set)
    timeouts: list[str] = field(default_factory=list)
    hit: set[int] = field(default_factory=set)
    entered: set[str] = field(default_factory=set)
    taken: set[tuple[str, str]] = field(default_factory=set)
    timed_out: set[str] = field(default_factory=set)
    #: Point index -> why no conversation ran it.
    reasons: dict[int, str] = field(default_factory=dict)
    #: State -> why no conversation entered it.
    unreached_states: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def kept(self) -> list[Trace]:
        """The conversations that reached something new."""
        return [t for t in self.traces if t.new]

    def figures(self) -> dict[str, tuple[int, int]]:
        """(hit, of all) for states, rules, transitions and state timeouts."""
        return {
            "states": (len(self.entered & set(self.states)), len(self.states)),
            "rules": (len({p.index for p in self.rules} & self.hit), len(self.rules)),
            "transitions": (len(self.taken & self.transitions), len(self.transitions)),
            "state timeouts": (len(self.timed_out & set(self.timeouts)), len(self.timeouts)),
        }


async def explore(
    loaded: Loaded, *, heap: dict[str, Any] | None = None, budget: int = DEFAULT_BUDGET
) -> Exploration:
    """Explore ``loaded`` (see the module docstring); at most ``budget`` conversations."""
    started = time.monotonic()
    spec = loaded.spec
    _, points = loaded.instrumented
    program = spec.program
    result = Exploration(
        loaded,
        states=list(spec.states),
        rules=[p for p in points if p.kind == "rule"],
        transitions={(s, d) for s, d, _ in (program.transitions if program else [])},
        timeouts=[n for n, st in spec.states.items() if st.timeout is not None],
    )
    runner = _Runner(loaded, heap or {}, result, budget)
    words = _dictionary(spec)
    settings = spec.server.filter
    first = await runner.run("connect", [])
    reached: dict[str | None, list[tuple[str, Any]]] = {first.state: []}
    queue: deque[str | None] = deque([first.state])
    tried: set[tuple[str | None, int]] = set()
    while queue and runner.left():
        state = queue.popleft()
        prefix = reached[state]
        for point in _input_rules(points, state, bool(spec.states)):
            if (state, point.index) in tried:
                continue
            tried.add((state, point.index))
            earlier = _earlier(points, point, state, bool(spec.states))
            plain, worded = _inputs(point, earlier, spec, words)
            if not plain and not worded and point.index not in result.reasons:
                result.reasons[point.index] = _no_input_reason(point)
            # A guard, its own or an earlier rule's, may change as inputs repeat
            # (a counter): such a rule gets its input twice and three times too.
            guards = any(p.rule is not None and p.rule.if_ for p in (*earlier, point))
            for repeat in (1, 2, 3) if guards else (1,):
                if repeat > 1 and point.index in result.hit:
                    break
                # Plain inputs until one runs the rule; the dictionary's all (they
                # are what may pass a guard further on).
                tries = [(v, False) for v in plain[:_PER_RULE]]
                tries += [(v, True) for v in worded[:_PER_RULE]]
                for value, word in tries:
                    if not runner.left():
                        break
                    if not word and point.index in result.hit and repeat == 1:
                        continue
                    goal = f"fire {point}" + (f" (its input {repeat} times)" if repeat > 1 else "")
                    trace = await runner.run(goal, [*prefix, *[("send", value)] * repeat])
                    if trace.state is not None and trace.state not in reached:
                        reached[trace.state] = [
                            s for s in trace.steps if s[0] != "expect" and s[0] != "closed"
                        ]
                        queue.append(trace.state)
        st = spec.states.get(state) if state is not None else None
        if st is not None and st.timeout is not None and runner.left():
            after = [("advance", st.timeout.after + 0.001)]
            await runner.run(f"the timeout of state {state}", [*prefix, *after])
            if state not in result.timed_out and runner.left() and not is_structured(settings):
                # A first-byte timeout no longer than the state's closes a silent
                # client first: a byte of a record that is not complete yet is heard.
                await runner.run(
                    f"the timeout of state {state}, after a byte", [*prefix, ("raw", "x"), *after]
                )
    await _other_events(runner, spec)
    _explain(result, points, spec)
    result.seconds = time.monotonic() - started
    return result


class _Runner:
    def __init__(self, loaded: Loaded, heap: dict[str, Any], result: Exploration, budget: int):
        self.loaded = loaded
        self.heap = heap
        self.result = result
        self.budget = budget

    def left(self) -> bool:
        return len(self.result.traces) < self.budget

    async def run(self, goal: str, actions: list[tuple[str, Any]]) -> Trace:
        trace = Trace(goal)
        server = AsyncSpecServer(self.loaded, heap=self.heap, timeout=1.0).start()
        observer = server.observer
        assert observer is not None
        patient = not server.can_be_quiet  # outbound connections: real network time
        try:
            client = await server.connect("client")
            await self._settle(server, client, patient)
            seen = self._harvest(client, trace, 0)
            mark = 0
            for kind, value in actions:
                if client.ended:
                    break
                mark = len(observer.fired)
                trace.steps.append((kind, value))
                if kind == "send":
                    await client.send(value)
                elif kind == "raw":
                    await client.send(value.encode("utf-8", "surrogateescape"))
                else:
                    await server.advance(value)
                await self._settle(server, client, patient)
                seen = self._harvest(client, trace, seen)
                seen = await self._finish_jobs(server, client, trace, seen)
            trace.closed = client.ended
            if trace.closed:
                trace.steps.append(("closed", None))
            session = client.session
            trace.state = None if trace.closed else getattr(session, "protocol_state", None)
            trace.last = [p for _, p in observer.fired[mark:]]
        finally:
            trace.problems = [*server.problems, *await server.stop()]
        trace.fired = [p for _, p in observer.fired]
        trace.transitions = set(observer.transitions)
        result = self.result
        before = (len(result.hit), len(result.entered), len(result.taken), len(result.timed_out))
        result.hit |= {p.index for p in trace.fired}
        result.entered |= {p.state for p in trace.fired if p.kind == "enter" and p.state}
        result.timed_out |= {p.state for p in trace.fired if p.kind == "timeout" and p.state}
        result.taken |= trace.transitions
        after = (len(result.hit), len(result.entered), len(result.taken), len(result.timed_out))
        trace.new = after != before or not result.traces
        result.traces.append(trace)
        return trace

    @staticmethod
    async def _settle(server: AsyncSpecServer, client: Any, patient: bool) -> None:
        await server.idle(2.0)
        if patient:
            # Outbound connections take real network time, which the kernel does
            # not show: wait for records while they keep coming.
            wait = 0.2
            while not client.ended and await client.more(len(client.received), wait):
                await server.idle(2.0)
                wait = 0.05

    async def _finish_jobs(
        self, server: AsyncSpecServer, client: Any, trace: Trace, seen: int
    ) -> int:
        """Move the clock on, timer by timer, while a job waits on one (a ``sleep``
        in work), for at most :data:`_JOB_WAIT` seconds: its reply is part of
        the conversation. Each move is a step of its script."""
        kernel = server.kernel
        waited = 0.0
        while kernel.statistics().jobs and not client.ended:
            due = [
                d
                for s in kernel.sessions()
                for t in s.timer_ids or ()
                if (d := kernel.timer_due(t)) is not None
            ]
            step = max(0.0, min(due) - kernel.time()) if due else None
            if step is None or waited + step > _JOB_WAIT:
                break
            waited += step
            trace.steps.append(("advance", step))
            await server.advance(step)
            await self._settle(server, client, not server.can_be_quiet)
            seen = self._harvest(client, trace, seen)
        return seen

    @staticmethod
    def _harvest(client: Any, trace: Trace, seen: int) -> int:
        for record in client.received[seen:]:
            trace.steps.append(("expect", record))
        return len(client.received)


async def _other_events(runner: _Runner, spec: Any) -> None:
    """The events no input rule names (see the module docstring, step 4)."""
    events = {p.event for p in runner.result.rules}
    limits = spec.server.limits
    idle = [t for t in (limits.first_byte_timeout, limits.idle_timeout) if t is not None]
    if "timeout" in events and idle and runner.left():
        await runner.run("the idle timeout", [("advance", min(idle) + 1)])
    settings = spec.server.filter
    if "error" in events and runner.left() and isinstance(settings, LineFilterSettings):
        over = "x" * (settings.max_length + 1)
        await runner.run("a record over the filter's limit (error)", [("send", over)])
    if "invalid" in events and runner.left():
        await runner.run("a record that fails the schema (invalid)", [("send", "{}")])


# -- the model: which rules a state tries, and inputs for them --------------------------


def _input_rules(points: list[Point], state: str | None, has_states: bool) -> list[Point]:
    """The rules an input meets in ``state``: the state's own, then the top level."""
    own = [p for p in points if p.kind == "rule" and p.event == "input" and p.state == state]
    top = [p for p in points if p.kind == "rule" and p.event == "input" and p.state is None]
    return (own + top) if has_states and state is not None else top


def _earlier(points: list[Point], point: Point, state: str | None, has_states: bool) -> list[Point]:
    rules = _input_rules(points, state, has_states)
    return rules[: rules.index(point)] if point in rules else []


def _inputs(
    point: Point, earlier: list[Point], spec: Any, words: list[str]
) -> tuple[list[Any], list[Any]]:
    """Inputs for ``point``'s test that no earlier rule without a guard takes:
    those made from the test alone, and those with the dictionary's words."""
    rule = point.rule
    settings = spec.server.filter
    schema = getattr(settings, "schema", None)
    if isinstance(schema, Schema):
        made: list[Any] = _messages(rule, schema, words)
        worded: list[Any] = []
    else:
        made, worded = _texts(rule, words)
    open_earlier = [e.rule for e in earlier if e.rule is None or not e.rule.if_]
    guarded_earlier = [e.rule for e in earlier if e.rule is not None and e.rule.if_]
    forbidden = _forbidden(settings)

    def fits(m: Any) -> bool:
        if isinstance(m, str) and any(f in m for f in forbidden):
            return False
        return _test(rule, m, schema) and not any(_test(r, m, schema) for r in open_earlier)

    def ordered(given: list[Any]) -> list[Any]:
        kept = [m for m in given if fits(m)]
        # Inputs an earlier guarded rule does not test for come first.
        kept.sort(key=lambda m: any(_test(r, m, schema) for r in guarded_earlier))
        unique: list[Any] = []
        for m in kept:
            if m not in unique:
                unique.append(m)
        return unique

    plain = ordered(made)
    if not plain and rule is not None and rule.match is not None and not is_structured(settings):
        found = _hypothesis(rule, fits)
        plain = [found] if found is not None else []
    return plain, [w for w in ordered(worded) if w not in plain]


def _forbidden(settings: Any) -> list[str]:
    """What a text input must not hold: it would end the record."""
    if isinstance(settings, LineFilterSettings):
        return [settings.separator] if settings.separator else ["\r", "\n"]
    return []


def _hypothesis(rule: Rule, fits: Any) -> str | None:
    """An input for ``rule``'s regex that ``fits``, from hypothesis if it is
    installed (the ``testkit`` extra): its search shrinks to a short one."""
    try:
        from hypothesis import HealthCheck, find, settings, strategies
        from hypothesis.errors import NoSuchExample
    except ImportError:
        return None
    try:
        pattern = re.compile(rule.match or "", re.I if rule.ignore_case else 0)
        strategy = strategies.from_regex(pattern)
    except (re.error, ValueError):
        return None
    try:
        found: str = find(
            strategy,
            fits,
            settings=settings(
                database=None,
                max_examples=300,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            ),
        )
    except (NoSuchExample, Exception):  # none, or a pattern it cannot search
        return None
    return found


def _texts(rule: Rule | None, words: list[str]) -> tuple[list[Any], list[Any]]:
    if rule is None or (rule.match is None and rule.equals is None and rule.prefix is None):
        return list(_PLAIN), list(words)
    if rule.equals is not None:
        return ([] if "{" in rule.equals else [rule.equals]), []
    if rule.prefix is not None:
        if "{" in rule.prefix:
            return [], []
        return [rule.prefix + "hello", rule.prefix + "1", rule.prefix], [
            rule.prefix + w for w in words
        ]
    pattern = rule.match or ""
    if any(f is not None for _, f, _ in regex_fields(pattern)):
        return [], []
    from .examples import from_regex

    found = from_regex(pattern, ignore_case=rule.ignore_case, variants=6)
    return found, list(_with_words(pattern, found, rule.ignore_case, words))


def _with_words(pattern: str, found: list[str], fold: bool, words: list[str]) -> Iterator[str]:
    """Examples with a dictionary word in place of each named group."""
    try:
        compiled = re.compile(pattern, re.I if fold else 0)
    except re.error:
        return
    for text in sorted(found, key=len)[:2]:  # the simplest: the word is what differs
        match = compiled.search(text)
        if match is None:
            continue
        for group in compiled.groupindex:
            if match.start(group) < 0:
                continue
            for word in words:
                candidate = text[: match.start(group)] + word + text[match.end(group) :]
                again = compiled.search(candidate)
                if again is not None and again.group(group) == word:
                    yield candidate


def _messages(rule: Rule | None, schema: Schema, words: list[str]) -> list[Any]:
    kinds = [rule.message] if rule is not None and rule.message else list(schema.messages)
    out: list[Any] = []
    for kind in kinds:
        fields = schema.messages.get(kind or "", {})
        base = {schema.tag: kind}
        out.append({**base, **{name: _sample(t) for name, t in fields.items()}})
        required = {n: _sample(t) for n, t in fields.items() if not t.endswith("?")}
        out.append({**base, **required})
    return out


def _sample(kind: str) -> Any:
    kind = kind.rstrip("?")
    if kind.startswith("list["):
        return [_SAMPLES.get(kind[5:-1], 1)]
    return _SAMPLES.get(kind, 1)


def _test(rule: Rule | None, value: Any, schema: Any) -> bool:
    """Whether ``rule``'s test (not its guard) takes ``value``."""
    if rule is None:
        return True
    if rule.message is not None:
        return isinstance(value, dict) and value.get(getattr(schema, "tag", "type")) == rule.message
    if not isinstance(value, str):
        return rule.match is None and rule.equals is None and rule.prefix is None
    fold = rule.ignore_case
    text = value.casefold() if fold else value
    if rule.equals is not None:
        return "{" in rule.equals or text == (rule.equals.casefold() if fold else rule.equals)
    if rule.prefix is not None:
        want = rule.prefix.casefold() if fold else rule.prefix
        return "{" in rule.prefix or text.startswith(want)
    if rule.match is not None:
        try:
            return re.search(rule.match, value, re.I if fold else 0) is not None
        except re.error:
            return True  # RE2-only syntax: let the server decide
    return True


def _dictionary(spec: Any) -> list[str]:
    """The text literals of the spec's guards, conditions and tests, most used first."""
    counts: dict[str, int] = {}

    def count(word: str) -> None:
        if word and "\\" not in word and "{" not in word and word.strip() == word:
            counts[word] = counts.get(word, 0) + 1

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, Struct):
            for name in value.__struct_fields__:
                field_value = getattr(value, name)
                if name in ("if_", "in_") and isinstance(field_value, str):
                    for a, b in _LITERAL.findall(field_value):
                        count(a or b)
                elif name == "equals" and isinstance(field_value, str):
                    count(field_value)
                else:
                    walk(field_value)

    for handlers in [spec.handlers, *(st.handlers for st in spec.states.values())]:
        for items in handlers.values():
            walk(items)
    return sorted(counts, key=lambda w: -counts[w])[:24]


def _no_input_reason(point: Point) -> str:
    rule = point.rule
    if rule is not None and any("{" in (v or "") for v in (rule.equals, rule.prefix)):
        return "its test is a template ({...}): its input depends on data, not made here"
    if rule is not None and rule.match is not None:
        return "no input could be made that its regex matches and no earlier rule takes"
    return "every input made for it is taken by an earlier rule"


def _explain(result: Exploration, points: list[Point], spec: Any) -> None:
    """Why each rule that did not run did not."""
    for point in result.rules:
        if point.index in result.hit or point.index in result.reasons:
            continue
        rule = point.rule
        if point.event != "input" and not any(
            p.event == point.event and p.index in result.hit for p in result.rules
        ):
            result.reasons[point.index] = _event_reason(point.event or "")
        elif point.event != "input":
            test = f"guard `if: {_one_line(rule.if_)}`" if rule is not None and rule.if_ else "test"
            result.reasons[point.index] = (
                f"`{point.event}` ran, but its {test} did not hold in any conversation tried"
            )
        elif result.traces and result.traces[0].closed:
            result.reasons[point.index] = (
                "the server closes a connection before any input is handled (the first "
                "conversation only connected, and was closed: see the problems met)"
            )
        elif point.state is not None and point.state not in result.entered:
            result.reasons[point.index] = f"its state {point.state!r} was never reached"
        elif rule is not None and rule.if_:
            result.reasons[point.index] = (
                f"its guard `if: {_one_line(rule.if_)}` was false in every conversation tried "
                "(it needs data that input alone did not give)"
            )
        else:
            result.reasons[point.index] = "inputs made for it were taken by an earlier rule"
    for state in result.states:
        if state not in result.entered:
            leads = [
                str(p)
                for p in points
                if p.kind == "rule" and p.rule is not None and state in gotos_of(p.rule.do, spec)
            ]
            why = (
                f"the rules that go there did not run: {', '.join(leads)}"
                if leads
                else ("nothing that ran goes there")
            )
            result.unreached_states[state] = why


def _event_reason(event: str) -> str:
    if event in ("flushed", "high", "low"):
        return f"`{event}` comes from output flow (a client that stops reading): not explored"
    if event in ("connected", "disconnected"):
        return f"`{event}` ran in no conversation (a handler that raised first?)"
    if event == "timeout":
        return "the idle timeout is off (limits), or its handler's rules did not match"
    if event == "error":
        return "only a record over the limit is tried for `error` (line filters)"
    return (
        f"`{event}` is a named event: no action that posts or raises it ran, or its rules "
        "test an input no conversation gave"
    )


def _one_line(text: Any) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= 120 else words[:117] + "..."
