"""Compile a :class:`~.model.Spec` once, and run it as a :class:`TCPServer`.

Everything a spec says is turned, at load time, into plain Python functions: each
action into a *step* ``step(session, input, match)``, each handler into a function
that tries its rules in order, and protocol states into one dict per event,
``{state: handler}``, looked up with ``session.protocol_state``. So the
per-message path is a dict lookup and a few calls: no spec lookups, no template
parsing, and never a ``transitions`` trigger (one costs ~15-20 us; ``transitions``
only declares and draws the machine, see :mod:`.graph`).

The same compiler checks a spec: :func:`compile_spec` reports every error of
meaning (a template name, a regex, a ``goto`` target, a ``call`` that does not
import, an unreachable state...) with the path of the node, and the loader turns
paths into ``FILE:LINE:COLUMN``. So what ``check`` accepts is exactly what runs.

A spec with no states whose handlers are plain lists of ``reply`` and ``log`` (the
echo server) compiles to the hand-written shape of such a server: the input
handler calls ``session.put`` and one pre-formatted log line, with no rules, no
match dict and no state lookup, which keeps it within a few percent of the same
server written with the Python API (``benchmarks/scenarios/spec_vs_python.py``).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import itertools
import logging
import re
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..net.connection import INPUT_BATCH, Connection
from ..console import ConsoleLog
from ..errors import LimitReached, ProtocolError, SpecError
from ..filters import Filter, InvalidRecord, LineFilter
from ..core.kernel import Kernel
from ..core.lifecycle import CLOSED, EVENTS
from ..net.server import TCPServer
from ..net.tls import server_ssl_context
from ..work import Cancelled, WorkTimeout, in_process, in_thread
from .clients import ClientProgram, Outbound
from .framing import BlockFilter, PullLineFilter
from .messages import (
    Messages,
    check_filter,
    compile_value,
    is_structured,
    make_filter,
    schema_of,
    structured_input,
)
from .model import (
    BUILTIN_EVENTS,
    CLIENT_EVENTS,
    Action,
    Broadcast,
    Call,
    ClientSettings,
    Close,
    FilterSettings,
    Goto,
    Join,
    Leave,
    LineFilterSettings,
    Log,
    Post,
    Reply,
    Rule,
    Run,
    Send,
    Set,
    Spec,
    SwitchFilter,
    TLSSettings,
    Work,
)
from .templates import (
    RESULT,
    Template,
    build_function,
    compile_template,
    is_identity,
    template_code,
)

__all__ = [
    "STATE_TIMEOUT", "Program", "beside_spec", "build_server", "compile_spec", "resolve_call",
]  # fmt: skip

log = logging.getLogger("statemachine_server")

Path_ = tuple[str | int, ...]
Step = Callable[[Any, Any, dict[str, Any]], None]
Test = Callable[[Any], "dict[str, Any] | None"]
Report = Callable[[str, Path_], None]

#: The event a state timeout posts (not a name a spec can use).
STATE_TIMEOUT = "<state timeout>"
#: Names a spec's own events may not take: the lifecycle's and the kernel's.
RESERVED_EVENTS = frozenset(EVENTS) | {"started", "stopped", "shutdown"}
#: Events whose handlers get a record: input, and a structured record that failed
#: its schema (``invalid``, whose ``{input}`` is the reason).
_INPUT_EVENTS = frozenset({"input", "invalid", "connect_error"})


def _always(data: Any) -> dict[str, Any]:
    return {}


def _never(data: Any) -> None:
    return None


# -- what compiled steps share at run time -------------------------------------------------


class _Runtime:
    """One spec server's shared state: groups, state timers, and the states' actions."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.groups: dict[str, dict[int, Any]] = {}
        self.member_of: dict[int, set[str]] = {}
        # session id -> (kernel timer id, token) of its state timeout
        self.timers: dict[int, tuple[int, int]] = {}
        self.tokens = itertools.count(1)
        self.enter: dict[str, list[Step]] = {}
        self.exit: dict[str, list[Step]] = {}
        self.timeout: dict[str, tuple[float, list[Step]]] = {}
        #: The outbound connections (``clients``), once a server is built.
        self.outbound: Outbound | None = None

    def goto(self, session: Any, target: str) -> None:
        # gen_statem's order: leave (timeout cancelled, exit actions), then enter.
        entry = self.timers.pop(session.id, None)
        if entry is not None:
            session.kernel.cancel(entry[0])
        _run(self.exit.get(session.protocol_state), session)
        session.protocol_state = target
        self.enter_state(session, target)

    def enter_state(self, session: Any, name: str) -> None:
        timeout = self.timeout.get(name)
        if timeout is not None and session.state is not CLOSED:
            # A kernel timer owned by the session: it keeps the session alive
            # while pending and goes with it; goto cancels it.
            token = next(self.tokens)
            tid = session.kernel.delay(timeout[0], STATE_TIMEOUT, token, session=session)
            self.timers[session.id] = (tid, token)
        _run(self.enter.get(name), session)

    def state_timeout(self, session: Any, token: int = 0, *_: Any) -> None:
        entry = self.timers.get(session.id)
        if entry is None or entry[1] != token:
            return  # fired just before the state was left: stale
        del self.timers[session.id]
        timeout = self.timeout.get(session.protocol_state)
        if timeout is not None:
            _run(timeout[1], session)

    def join(self, session: Any, group: str) -> None:
        self.groups.setdefault(group, {})[session.id] = session
        self.member_of.setdefault(session.id, set()).add(group)

    def leave(self, session: Any, group: str) -> None:
        members = self.groups.get(group)
        if members is not None and members.pop(session.id, None) is not None:
            if not members:
                del self.groups[group]
            self.member_of[session.id].discard(group)

    def broadcast(self, session: Any, group: str, text: str, include_self: bool) -> None:
        members = self.groups.get(group)
        if not members:
            return
        for member in list(members.values()):
            if include_self or member is not session:
                member.put(text)

    def gone(self, session: Any) -> None:
        """The session ended: out of every group, no state timer left."""
        self.timers.pop(session.id, None)  # the kernel cancelled the timer itself
        for group in self.member_of.pop(session.id, ()):
            members = self.groups.get(group)
            if members is not None:
                members.pop(session.id, None)
                if not members:
                    del self.groups[group]


def _run_with(
    steps: list[Step], session: Any, data: Any, match: dict[str, Any], result: Any
) -> None:
    # The continuation of a work or run action: the rest of its list, with {result}.
    if steps:
        match = {**match, RESULT: "" if result is None else result}
        for step in steps:
            step(session, data, match)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, WorkTimeout | Cancelled | LimitReached):
        return str(exc)
    return _one_line(exc)


def _reply_error(session: Any, data: Any, match: dict[str, Any]) -> None:
    session.put(f"error: {match[RESULT]}")


def _reply_result(session: Any, data: Any, match: dict[str, Any]) -> None:
    session.put(match[RESULT])


def call_in_worker(base_dir: str, target: str, data: Any, match: dict[str, Any]) -> Any:
    """``work`` with ``in: process``: runs in a worker process, which imports the
    function by name (a function imported from beside a spec cannot be pickled)."""
    return resolve_call(target, base_dir)(data, match)


def _run(steps: list[Step] | None, session: Any) -> None:
    if steps:
        match: dict[str, Any] = {}
        for step in steps:
            step(session, None, match)


# -- calls ------------------------------------------------------------------------------

_CALLS: dict[tuple[str, str], Callable[..., Any]] = {}


def resolve_call(target: str, base_dir: str | Path, *, kind: str = "call") -> Callable[..., Any]:
    """The function ``module:function`` names, imported once.

    The module is looked for beside the spec (``base_dir/module.py``) first, then
    imported normally (``sys.path``).

    Raises:
        ValueError: a malformed name, a module that does not import, or no such
            callable (the message is one line).
    """
    key = (str(base_dir), target)
    found = _CALLS.get(key)
    if kind != "call":  # a name for something else (a schema's type): not cached as a call
        found = None
    if found is not None:
        return found
    module_name, colon, name = target.partition(":")
    if (
        not colon
        or not all(part.isidentifier() for part in module_name.split("."))
        or not name.isidentifier()
        or name.startswith("_")
    ):
        what = "function" if kind == "call" else "name"
        raise ValueError(
            f"{kind} {target!r}: expected `module:{what}` (a public {what}), "
            "e.g. `handlers:on_line`"
        )
    module = _import(module_name, Path(base_dir))
    fn = getattr(module, name, None)
    if fn is None:
        names = [n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n])]
        close = difflib.get_close_matches(name, names, n=1)
        near = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{kind} {target!r}: module {module_name!r} has no {name!r}{near}")
    if kind != "call":
        return fn  # type: ignore[no-any-return]
    if not callable(fn):
        raise ValueError(f"call {target!r}: {name!r} is not callable")
    _CALLS[key] = fn
    return fn  # type: ignore[no-any-return]


def _import(module_name: str, base_dir: Path) -> Any:
    beside = base_dir / f"{module_name}.py"
    try:
        if "." not in module_name and beside.is_file():
            # Under a name of its own, so that two specs' "handlers.py" in two
            # folders stay two modules.
            digest = hashlib.sha1(str(beside).encode()).hexdigest()[:12]
            unique = f"_statemachine_spec_{module_name}_{digest}"
            if unique in sys.modules:
                return sys.modules[unique]
            spec = importlib.util.spec_from_file_location(unique, beside)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[unique]
                raise
            return module
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or (exc.name and module_name.startswith(exc.name + ".")):
            raise ValueError(
                f"cannot import {module_name!r}: no {beside.name} beside the spec "
                f"({base_dir}) and no such module on sys.path"
            ) from None
        raise ValueError(f"cannot import {module_name!r}: {_one_line(exc)}") from None
    except Exception as exc:
        raise ValueError(f"cannot import {module_name!r}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


# -- the compiler -------------------------------------------------------------------------


@dataclass
class Program:
    """A compiled spec: the handlers a :class:`TCPServer` takes, and what graph draws."""

    #: Event name to handler, for TCPServer's ``on_*`` arguments.
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: Named events (and the state timeout) to handler, for TCPServer's ``handlers``.
    named: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: Makes each connection's filter.
    filter_factory: Callable[[], Filter] = LineFilter
    #: The protocol states' transitions: (source state, dest state, label).
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    #: The state a connection starts in (None: the spec declares no states).
    initial: str | None = None
    #: The outbound connections (``clients``), compiled.
    clients: list[ClientProgram] = field(default_factory=list)
    #: What the compiled steps share at run time.
    runtime: _Runtime | None = None


def compile_spec(
    spec: Spec, report: Report | None = None, write: Callable[[str], None] | None = None
) -> Program:
    """Compile ``spec``; report each error as ``report(message, path)``.

    Args:
        spec: a spec whose values are valid (from the loader).
        report: where errors go; by default the first raises :class:`SpecError`.
        write: where ``log`` actions write (nowhere by default: a check).
    """

    def raise_first(message: str, path: Path_) -> None:
        raise SpecError(message)

    compiler = _Compiler(spec, report or raise_first, _Runtime(write or (lambda line: None)))
    return compiler.compile()


# A scope is where actions live: a state's name, or None for the top-level handlers.
Scope = str | None


class _Compiler:
    def __init__(self, spec: Spec, report: Report, rt: _Runtime):
        self.spec = spec
        self.errors = 0

        def counted(message: str, path: Path_) -> None:
            self.errors += 1
            report(message, path)

        self.report = counted
        self.rt = rt
        self.base_dir = spec._base_dir or str(Path.cwd())
        self.states = spec.states
        self.has_states = bool(spec.states)
        self.logs = spec.server.log.enabled
        settings = spec.server.filter
        self.filter_settings = settings
        # Records are decoded values (json, msgpack), not text.
        self.structured = is_structured(settings)
        # The default line framing, the one switch_filter works with.
        self.plain_lines = (
            isinstance(settings, LineFilterSettings)
            and settings.separator is None
            and settings.regex is None
        )
        line = settings if isinstance(settings, LineFilterSettings) else LineFilterSettings()
        self.max_length = line.max_length
        self.newline = line.newline
        self.output = PullLineFilter(line.max_length, line.newline)
        self.input_text = structured_input if self.structured else None
        # Whether input records are messages: the server's, or a client's while
        # its handlers compile (replies still go to the server's client).
        self.records_structured = self.structured
        self.schema, self.messages = self._framing(settings, ("server", "filter"))
        self.switches = False
        # Named events: listed in `events`, or posted by a `post` action.
        self.named = set(spec.events) | {
            a.event for _, a in self._all_actions() if isinstance(a, Post)
        }
        self.handled = {
            event for scope_handlers in self._handler_maps() for event in scope_handlers[1]
        }
        self.edges: list[tuple[Scope, str, str]] = []  # (from, to, label)
        self.enter_gotos: dict[str, set[str]] = {}
        self.ways_out: set[Scope] = set()  # scopes with a close or a call
        self.bad_gotos = False  # then the graph checks would only echo those errors

    def _framing(self, settings: FilterSettings, where: Path_) -> tuple[Any, Messages | None]:
        """Report what is wrong with filter settings; the schema they declare."""
        check_filter(settings, self.report, where)
        try:
            return schema_of(
                settings, lambda target: resolve_call(target, self.base_dir, kind="schema")
            )
        except ValueError as exc:
            self.report(str(exc), (*where, "schema"))
            return Any, None

    # -- walking the spec -------------------------------------------------------------

    def _handler_maps(self) -> Iterator[tuple[Path_, dict[str, Any], Scope]]:
        yield ("handlers",), self.spec.handlers, None
        for name, state in self.states.items():
            yield ("states", name, "handlers"), state.handlers, name

    def _all_actions(self) -> Iterator[tuple[Path_, Any]]:
        for path, handlers, _ in self._handler_maps():
            for event, items in handlers.items():
                yield from _walk(items, (*path, event))
        for name, state in self.states.items():
            yield from _walk(state.enter, ("states", name, "enter"))
            yield from _walk(state.exit, ("states", name, "exit"))
            if state.timeout is not None:
                yield from _walk(state.timeout.do, ("states", name, "timeout", "do"))

    # -- the whole spec ----------------------------------------------------------------

    def compile(self) -> Program:
        rt = self.rt
        initial = self._initial()
        program = Program(initial=initial)
        for path, handlers, scope in self._handler_maps():
            self._check_events(path, handlers, scope, initial)
        # Per scope and event: the compiled rules.
        rules: dict[Scope, dict[str, list[tuple[Test, list[Step]]]]] = {None: {}}
        for path, handlers, scope in self._handler_maps():
            compiled = rules.setdefault(scope, {})
            for event, items in handlers.items():
                compiled[event] = self._rules(items, (*path, event), scope, event)
        for name, state in self.states.items():
            path = ("states", name)
            rt.enter[name] = self._actions(state.enter, (*path, "enter"), name, "enter")
            rt.exit[name] = self._actions(state.exit, (*path, "exit"), name, "exit")
            if state.timeout is not None:
                label = f"after {state.timeout.after:g} s"
                steps = self._actions(state.timeout.do, (*path, "timeout", "do"), name, label)
                rt.timeout[name] = (state.timeout.after, steps)
        if self.has_states and not self.bad_gotos:
            self._check_graph(initial)
        program.transitions = self._transitions()
        program.filter_factory = self._filter_factory()
        # Compiled before the error check: their errors are reported with the rest.
        program.clients = [self._client(name, c) for name, c in self.spec.clients.items()]
        if self.errors:
            return program  # reported: nothing will run it
        if self._fast_path_fits(rules[None]):
            self._fast_path(program, rules[None])
        else:
            self._handlers(program, rules, initial)
        if self.structured:
            _take_invalid(program)
        program.runtime = self.rt
        return program

    def _client(self, name: str, c: ClientSettings) -> ClientProgram:
        path: Path_ = ("clients", name)
        schema, messages = self._framing(c.filter, (*path, "filter"))
        factory = make_filter(c.filter, schema)

        def address(value: Any, key: str) -> Callable[..., Any]:
            if not isinstance(value, str):
                return lambda s, i, m=None: value
            try:
                return compile_template(value, has_input=False, states=self.has_states)
            except ValueError as exc:
                self.report(str(exc), (*path, key))
                return lambda s, i, m=None: ""

        if (c.port is None) == (c.path is None):
            self.report("a client needs either port (with host) or path", path)
        elif isinstance(c.port, int) and not c.port:
            self.report("a client's port must be 1 to 65535", (*path, "port"))
        program = ClientProgram(
            name, c, factory, address(c.host, "host"), address(c.port, "port"),
            None if c.path is None else str(Path(self.base_dir) / c.path),
        )  # fmt: skip
        saved = self.input_text, self.records_structured, self.messages
        structured = is_structured(c.filter)
        self.input_text = structured_input if structured else None
        self.records_structured, self.messages = structured, messages
        try:
            for event, items in c.handlers.items():
                where = (*path, "handlers", event)
                if event not in CLIENT_EVENTS:
                    near = self._hint(event, CLIENT_EVENTS)
                    self.report(f"unknown client event {event!r}{near}: a client has "
                                f"{', '.join(CLIENT_EVENTS)}", (*where, "<key>"))  # fmt: skip
                    continue
                for at, action in _walk(items, where):
                    kind = type(action).__name__.lower()
                    if isinstance(action, Goto | Work | Run):
                        self.report(f"{kind} is not available in a client's handlers (they "
                                    "run beside the session's own events)", at)  # fmt: skip
                    elif c.per == "server" and isinstance(action, Send):
                        target = self.spec.clients.get(action.to)
                        if target is not None and target.per == "connection":
                            self.report(f"a shared client's handlers run for no session: "
                                        f"they cannot send to {action.to!r}, which is each "
                                        "session's own", at)  # fmt: skip
                    elif (
                        c.per == "server"
                        and event == "connect_error"
                        and not isinstance(action, Log | Broadcast | Set)
                    ):
                        self.report(f"{kind} is not available here: a shared client that "
                                    "cannot connect has no connection (log, broadcast and set "
                                    "are)", at)  # fmt: skip
                rules = self._rules(items, where, None, event)
                handler = _entry(event, rules, set())
                if handler is not None:
                    program.handlers[event] = handler
        finally:
            self.input_text, self.records_structured, self.messages = saved
        return program

    def _initial(self) -> str | None:
        spec = self.spec
        if spec.initial is None:
            return next(iter(self.states), None)
        if spec.initial not in self.states:
            if not self.states:
                self.report("initial needs protocol states: add `states:`", ("initial",))
            else:
                self.report(
                    f"initial state {spec.initial!r} is not declared{self._hint(spec.initial)}",
                    ("initial",),
                )
            return next(iter(self.states), None)
        return spec.initial

    def _hint(self, name: str, choices: Any = None) -> str:
        close = difflib.get_close_matches(
            name, list(self.states if choices is None else choices), n=1
        )
        return f" (did you mean {close[0]!r}?)" if close else ""

    def _check_events(
        self, path: Path_, handlers: dict[str, Any], scope: Scope, initial: str | None
    ) -> None:
        for event in handlers:
            where = (*path, event, "<key>")
            if event in BUILTIN_EVENTS:
                if event == "invalid" and not self.structured:
                    self.report("`invalid` is for json and msgpack filters: a record that "
                                "fails its schema", where)  # fmt: skip
                if event == "connected" and scope is not None and scope != initial:
                    self.report(
                        f"`connected` happens in the initial state ({initial!r}) only; "
                        f"use `enter` here",
                        where,
                    )
            elif event in RESERVED_EVENTS:
                known = ", ".join(BUILTIN_EVENTS)
                self.report(f"{event!r} is a lifecycle event, not one a spec handles "
                            f"(those are {known} and your own)", where)  # fmt: skip
            elif not event.isidentifier():
                self.report(f"event {event!r}: expected a name (letters, digits and _)", where)
            elif event not in self.named:
                near = self._hint(event, [*BUILTIN_EVENTS, *self.named])
                self.report(
                    f"unknown event {event!r}{near}: not a built-in event, not posted by "
                    "any `post` action, not listed in `events`",
                    where,
                )

    # -- handlers and rules ---------------------------------------------------------------

    def _rules(
        self, items: list[Any], path: Path_, scope: Scope, event: str
    ) -> list[tuple[Test, list[Step]]]:
        present = [x for x in items if x is not None]
        kinds = {isinstance(x, Rule) for x in present}
        if len(kinds) > 1:
            self.report(
                "a handler is a list of actions or a list of rules (with `do`), not both",
                path,
            )
            # Still compiled, each item as what it is, for the errors inside.
            for item in items:
                if isinstance(item, Rule):
                    self._rules([item], path, scope, event)
                elif item is not None:
                    self._actions([item], path, scope, event)
            return []
        has_input = event in _INPUT_EVENTS or event in self.named
        if present and not isinstance(present[0], Rule):
            return [(_always, self._actions(items, path, scope, event, has_input=has_input))]
        rules: list[tuple[Test, list[Step]]] = []
        fallback_at: Path_ | None = None
        for i, rule in enumerate(items):
            if rule is None:
                continue
            where = (*path, i)
            if fallback_at is not None:
                self.report(
                    "this rule is never tried: an earlier rule has no condition and always matches",
                    where,
                )
            test, groups = self._condition(rule, where, event, has_input)
            if test is _always:
                fallback_at = where
            elif test is None:  # reported; its actions are still checked
                test = _never
            steps = self._actions(
                rule.do, (*where, "do"), scope, event, has_input=has_input, groups=groups
            )
            rules.append((test, steps))
        return rules

    def _condition(
        self, rule: Rule, path: Path_, event: str, has_input: bool
    ) -> tuple[Test | None, frozenset[str] | None]:
        given = [
            k for k in ("match", "equals", "prefix", "message") if getattr(rule, k) is not None
        ]
        if len(given) > 1:
            self.report(
                f"a rule has at most one condition; this one has {' and '.join(given)}", path
            )
            return None, None
        if not given:
            if rule.ignore_case:
                self.report("ignore_case needs a condition (match, equals or prefix)",
                            (*path, "ignore_case"))  # fmt: skip
            return _always, None
        (kind,) = given
        if not has_input:
            self.report(
                f"`{event}` has no input to test: conditions work in input and "
                "named-event handlers",
                (*path, kind),
            )
            return None, None
        value: str = getattr(rule, kind)
        fold = rule.ignore_case
        if kind == "message" or (self.records_structured and event == "input"):
            return self._message_condition(rule, kind, path, event)
        if kind == "match":
            try:
                rx = re.compile(value, re.IGNORECASE if fold else 0)
            except re.error as exc:
                at = f" at position {exc.pos}" if exc.pos is not None else ""
                self.report(f"bad regular expression: {exc.msg}{at}", (*path, "match"))
                return None, None
            search = rx.search

            def test_match(data: Any) -> dict[str, Any] | None:
                m = search(data)
                return None if m is None else m.groupdict("")

            return test_match, frozenset(rx.groupindex)
        if kind == "equals":
            if fold:
                want = value.casefold()
                return (lambda data: {} if data.casefold() == want else None), frozenset()
            return (lambda data: {} if data == value else None), frozenset()
        n = len(value)
        if fold:
            want = value.casefold()
            return (
                lambda data: {"rest": data[n:]} if data[:n].casefold() == want else None
            ), frozenset({"rest"})
        return (lambda data: {"rest": data[n:]} if data.startswith(value) else None), frozenset(
            {"rest"}
        )

    def _message_condition(
        self, rule: Rule, kind: str, path: Path_, event: str
    ) -> tuple[Test | None, frozenset[str] | None]:
        where = (*path, kind)
        if kind != "message":
            self.report(f"{kind} tests text, and this server's records are messages "
                        "(json, msgpack): use `message: KIND`", where)  # fmt: skip
            return None, None
        if event != "input":
            self.report("`message` tests input records, in the `input` handler", where)
            return None, None
        if self.messages is None:
            self.report("`message` needs a schema with tagged messages (server.filter.schema)",
                        where)  # fmt: skip
            return None, None
        if rule.ignore_case:
            self.report("ignore_case is for text conditions", (*path, "ignore_case"))
        assert rule.message is not None
        found = self.messages.get(rule.message)
        if found is None:
            near = self._hint(rule.message, self.messages)
            known = ", ".join(self.messages)
            self.report(f"unknown message {rule.message!r}{near} (the schema has {known})", where)
            return None, None
        struct, fields = found

        def test_message(data: Any) -> dict[str, Any] | None:
            if type(data) is not struct:
                return None
            return {name: getattr(data, name) for name in fields}

        return test_message, frozenset(fields)

    # -- actions ----------------------------------------------------------------------

    def _actions(
        self,
        actions: list[Any],
        path: Path_,
        scope: Scope,
        label: str,
        *,
        has_input: bool = False,
        groups: frozenset[str] | None = None,
        start: int = 0,
        result: bool = False,
    ) -> list[Step]:
        steps: list[Step] = []
        has_result = result
        for i, action in enumerate(actions):
            if action is None or i < start:
                continue
            where = (*path, i)

            def tpl(
                text: str,
                *at: str,
                _where: Path_ = where,
                _res: bool = has_result,
                raw: bool = False,
            ) -> Template:
                try:
                    return compile_template(
                        text, has_input=has_input, groups=groups, has_result=_res,
                        states=self.has_states, input_text=self.input_text, raw=raw,
                    )  # fmt: skip
                except ValueError as exc:
                    self.report(str(exc), (*_where, *at))
                    return lambda s, i, m=None: ""

            if isinstance(action, Work | Run):
                # The actions after it run when it is done: compiled as its
                # continuation, with {result}; nothing more runs now.
                def nested(items: list[Any], key: str, _where: Path_ = where) -> list[Step]:
                    return self._actions(
                        items, (*_where, key), scope, label,
                        has_input=has_input, groups=groups, result=True,
                    )  # fmt: skip

                then = self._actions(
                    actions, path, scope, label,
                    has_input=has_input, groups=groups, start=i + 1, result=True,
                )  # fmt: skip
                step = None
                if label == "exit":
                    self.report(f"{type(action).__name__.lower()} is not allowed in exit "
                                "actions (the state is being left)", where)  # fmt: skip
                elif isinstance(action, Work):
                    self.ways_out.add(scope)  # Python runs: not followed by the checks
                    step = self._work(action, where, then, nested)
                else:
                    step = self._run_program(action, where, tpl, then, nested)
                if step is not None:
                    steps.append(step)
                break
            step = self._action(action, where, scope, label, tpl)
            if step is not None:
                steps.append(step)
            if isinstance(action, Call):
                has_result = True
        return steps

    def _work(
        self, a: Work, where: Path_, then: list[Step], nested: Callable[..., list[Step]]
    ) -> Step | None:
        try:
            fn = resolve_call(a.function, self.base_dir)
        except ValueError as exc:
            self.report(str(exc).replace("call ", "work ", 1), (*where, "function"))
            return None
        progress = nested(a.progress, "progress")
        failed = nested(a.on_error, "on_error") or [_reply_error]
        target, pool, base = a.function, a.in_, str(self.base_dir)
        options = {"timeout": a.timeout, "progress_every": a.progress_every}

        def start(s: Any, i: Any, m: dict[str, Any]) -> None:
            job: Any
            if pool == "steps":
                job = fn(s, i, m)
                if not hasattr(job, "send"):
                    raise TypeError(
                        f"work {target!r} returned {type(job).__name__}: expected a generator "
                        "(a function with `yield`), or `in: thread` / `in: process`"
                    )
            elif pool == "thread":
                job = in_thread(fn, i, dict(m))
            else:  # a process: the function is found again there, by name
                job = in_process(call_in_worker, base, target, i, dict(m))
            s.work(
                job,
                lambda s, r: _run_with(then, s, i, m, r),
                on_progress=(lambda s, v: _run_with(progress, s, i, m, v)) if progress else None,
                on_error=lambda s, exc: _run_with(failed, s, i, m, _reason(exc)),
                **options,
            )

        return start

    def _run_program(
        self,
        a: Run,
        where: Path_,
        tpl: Callable[..., Template],
        then: list[Step],
        nested: Callable[..., list[Step]],
    ) -> Step | None:
        program = a.argv[0]
        if "{" in program or "}" in program:
            self.report("run: the program must be written out, not a template "
                        "(its arguments may be templates)", (*where, "argv", 0))  # fmt: skip
            return None
        args = [tpl(text, "argv", k) for k, text in enumerate(a.argv[1:], 1)]
        stdin = tpl(a.stdin, "stdin") if a.stdin is not None else None
        stdout = nested(a.stdout, "stdout") or [_reply_result]
        stderr = nested(a.stderr, "stderr")
        failed = nested(a.on_error, "on_error") or [_reply_error]
        timeout = a.timeout

        def start(s: Any, i: Any, m: dict[str, Any]) -> None:
            argv = [program, *(render(s, i, m) for render in args)]
            data = None if stdin is None else stdin(s, i, m)

            def job() -> Any:
                child = s.run_process(
                    argv,
                    stdin=data,
                    on_stdout=lambda s, line: _run_with(stdout, s, i, m, line),
                    on_stderr=(lambda s, line: _run_with(stderr, s, i, m, line))
                    if stderr
                    else None,
                )
                try:
                    return (yield child)
                finally:
                    child.kill()  # a timeout or a cancel; nothing once it has exited

            s.work(
                job(),
                lambda s, status: _run_with(then, s, i, m, status),
                on_error=lambda s, exc: _run_with(failed, s, i, m, _reason(exc)),
                timeout=timeout,
            )

        return start

    def _action(
        self, a: Action, where: Path_, scope: Scope, label: str, tpl: Callable[..., Template]
    ) -> Step | None:
        rt = self.rt
        if isinstance(a, Reply):
            if self.structured:
                # Values keep their types: {"count": "{match.n}"} sends a number.
                value = compile_value(a.text, lambda text: tpl(text, "text", raw=True))
                return lambda s, i, m: s.put(value(s, i, m))
            if not isinstance(a.text, str):
                self.report("a reply that is a mapping or a list needs a json or msgpack "
                            "filter (server.filter)", (*where, "text"))  # fmt: skip
                return None
            render = tpl(a.text, "text")
            return lambda s, i, m: s.put(render(s, i, m))
        if isinstance(a, Log):
            render = tpl(a.text, "text")
            if not self.logs:
                return None  # server.log.enabled: false - no client data in the console
            write = rt.write
            return lambda s, i, m: write(render(s, i, m))
        if isinstance(a, Set):
            return self._set(a, where, tpl)
        if isinstance(a, Goto):
            return self._goto(a, where, scope, label)
        if isinstance(a, Close):
            self.ways_out.add(scope)
            return lambda s, i, m: s.close()
        if isinstance(a, Post):
            return self._post(a, where, tpl)
        if isinstance(a, Broadcast):
            group, text, include_self = tpl(a.group, "group"), tpl(a.text, "text"), a.include_self
            return lambda s, i, m: rt.broadcast(s, group(s, i, m), text(s, i, m), include_self)
        if isinstance(a, Join):
            group = tpl(a.group, "group")
            return lambda s, i, m: rt.join(s, group(s, i, m))
        if isinstance(a, Leave):
            group = tpl(a.group, "group")
            return lambda s, i, m: rt.leave(s, group(s, i, m))
        if isinstance(a, Call):
            return self._call(a, where, scope)
        if isinstance(a, SwitchFilter):
            return self._switch(a, where, tpl)
        if isinstance(a, Send):
            return self._send(a, where, tpl)
        raise AssertionError(f"unknown action {a!r}")  # pragma: no cover - a closed union

    def _set(self, a: Set, where: Path_, tpl: Callable[..., Template]) -> Step:
        session_keys: list[tuple[str, Template]] = []
        server_keys: list[tuple[str, Template]] = []
        for key, text in a.values.items():
            head, dot, name = key.partition(".")
            if not dot and key.isidentifier():
                session_keys.append((key, tpl(text, "values", key)))
            elif head == "server" and name.isidentifier():
                server_keys.append((name, tpl(text, "values", key)))
            else:
                self.report(
                    f"set {key!r}: expected NAME (the session's heap) or server.NAME "
                    "(the server-wide heap)",
                    (*where, "values", key, "<key>"),
                )

        def set_values(s: Any, i: Any, m: dict[str, Any]) -> None:
            heap = s.heap
            for key, render in session_keys:
                heap[key] = render(s, i, m)
            if server_keys:
                shared = s.server.heap
                for key, render in server_keys:
                    shared[key] = render(s, i, m)

        return set_values

    def _goto(self, a: Goto, where: Path_, scope: Scope, label: str) -> Step | None:
        if not self.has_states:
            self.report("goto needs protocol states: add `states:`", (*where, "state"))
            return None
        if a.state not in self.states:
            self.report(f"goto: no state {a.state!r}{self._hint(a.state)}", (*where, "state"))
            self.bad_gotos = True
            return None
        if label == "exit":
            self.report("goto is not allowed in exit actions (the state is being left)",
                        where)  # fmt: skip
            return None
        if label == "enter":
            assert scope is not None
            self.enter_gotos.setdefault(scope, set()).add(a.state)
        self.edges.append((scope, a.state, label))
        target, rt = a.state, self.rt
        return lambda s, i, m: rt.goto(s, target)

    def _post(self, a: Post, where: Path_, tpl: Callable[..., Template]) -> Step | None:
        if a.event not in self.handled:
            near = self._hint(a.event, self.handled - set(BUILTIN_EVENTS))
            self.report(f"post: no handler for event {a.event!r}{near}", (*where, "event"))
            return None
        if a.event in RESERVED_EVENTS or a.event in BUILTIN_EVENTS:
            self.report(f"post: {a.event!r} is not a named event", (*where, "event"))
            return None
        event, render, after = a.event, tpl(a.input, "input"), a.after
        if after is None:
            return lambda s, i, m: s.kernel._post(s, event, (render(s, i, m),))
        return lambda s, i, m: s.kernel.delay(after, event, render(s, i, m), session=s)

    def _send(self, a: Send, where: Path_, tpl: Callable[..., Template]) -> Step | None:
        client = self.spec.clients.get(a.to)
        if client is None:
            near = self._hint(a.to, self.spec.clients)
            known = ", ".join(self.spec.clients) or "none"
            self.report(f"send to unknown client {a.to!r}{near} (clients: {known})",
                        (*where, "to"))  # fmt: skip
            return None
        if is_structured(client.filter):
            value = compile_value(a.text, lambda text: tpl(text, "text", raw=True))
        elif isinstance(a.text, str):
            value = tpl(a.text, "text")
        else:
            self.report(f"a mapping or list needs a json or msgpack filter on client {a.to!r}",
                        (*where, "text"))  # fmt: skip
            return None
        rt, to = self.rt, a.to

        def send(s: Any, i: Any, m: dict[str, Any]) -> None:
            assert rt.outbound is not None  # set by build_server
            rt.outbound.send(s, to, value(s, i, m))

        return send

    def _call(self, a: Call, where: Path_, scope: Scope) -> Step | None:
        self.ways_out.add(scope)  # Python may close or goto: not followed by the checks
        try:
            fn = resolve_call(a.function, self.base_dir)
        except ValueError as exc:
            self.report(str(exc), (*where, "function"))
            return None
        target = a.function

        if a.reply and self.structured:

            def call_structured(s: Any, i: Any, m: dict[str, Any]) -> None:
                result = fn(s, i, m)
                m[RESULT] = "" if result is None else result
                if result is not None:
                    s.put(result)  # any value the filter can encode, as one record

            return call_structured

        if not a.reply:

            def call_quietly(s: Any, i: Any, m: dict[str, Any]) -> None:
                result = fn(s, i, m)
                m[RESULT] = "" if result is None else result

            return call_quietly

        def call(s: Any, i: Any, m: dict[str, Any]) -> None:
            result = fn(s, i, m)
            if result is None:
                m[RESULT] = ""
                return
            m[RESULT] = result
            if isinstance(result, str):
                s.put(result)
            elif isinstance(result, list | tuple) and all(isinstance(r, str) for r in result):
                s.put(*result)
            else:
                raise TypeError(
                    f"call {target!r} returned {type(result).__name__}: expected a string, "
                    "a list of strings, or None (or set `reply: false`)"
                )

        return call

    def _switch(self, a: SwitchFilter, where: Path_, tpl: Callable[..., Template]) -> Step | None:
        self.switches = True
        if not self.plain_lines:
            self.report("switch_filter works with the line filter (without separator or "
                        "regex) as server.filter", where)  # fmt: skip
            return None
        if a.type == "line":
            for name, default in (("size", None), ("end", "")):
                if getattr(a, name) != default:
                    self.report(f"switch_filter line: {name} is for block filters",
                                (*where, name))  # fmt: skip
            max_length, newline = self.max_length, self.newline
            return lambda s, i, m: s.switch_filter(PullLineFilter(max_length, newline))
        if a.size is None:
            self.report("switch_filter block needs a size (bytes, or a template)", where)
            return None
        end, output, limit = a.end.encode("utf-8", "surrogateescape"), self.output, a.max_size
        if isinstance(a.size, int):
            if not 0 < a.size <= limit:
                self.report(f"size {a.size}: expected 1 to max_size ({limit})", (*where, "size"))
                return None
            fixed = a.size
            return lambda s, i, m: s.switch_filter(BlockFilter(fixed, end, output))
        size = tpl(a.size, "size")

        def switch_to_block(s: Any, i: Any, m: dict[str, Any]) -> None:
            text = size(s, i, m)
            n = int(text) if text.isdigit() else -1
            if not 0 < n <= limit:
                raise ProtocolError(f"block size {text!r}: expected 1 to {limit}")
            s.switch_filter(BlockFilter(n, end, output))

        return switch_to_block

    # -- the state graph ------------------------------------------------------------------

    def _check_graph(self, initial: str | None) -> None:
        # goto chains through enter actions must end: a -> b -> a would never return.
        for start in self.enter_gotos:
            seen, todo = set(), [start]
            while todo:
                state = todo.pop()
                for nxt in self.enter_gotos.get(state, ()):
                    if nxt == start:
                        self.report(
                            f"state {start!r}: goto in enter actions leads back to it "
                            "(an endless loop)",
                            ("states", start, "enter"),
                        )
                        todo = []
                        break
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
        anywhere = {dest for src, dest, _ in self.edges if src is None}
        if initial is None:
            return
        reached: set[str] = {initial}
        todo = [initial]
        while todo:
            state = todo.pop()
            for src, dest, _ in self.edges:
                if src == state and dest not in reached:
                    reached.add(dest)
                    todo.append(dest)
            for dest in anywhere - reached:
                reached.add(dest)
                todo.append(dest)
        for name in self.states:
            where = ("states", name, "<key>")
            if name not in reached:
                self.report(f"state {name!r} is unreachable: no goto leads to it from "
                            f"the initial state {initial!r}", where)  # fmt: skip
            leaves = any(src in (name, None) and dest != name for src, dest, _ in self.edges)
            if not leaves and name not in self.ways_out and None not in self.ways_out:
                self.report(
                    f"state {name!r} has no way out: no goto to another state, close or call "
                    "in its actions or the top-level handlers",
                    where,
                )

    def _transitions(self) -> list[tuple[str, str, str]]:
        out: dict[tuple[str, str], list[str]] = {}
        for src, dest, label in self.edges:
            for state in [src] if src is not None else list(self.states):
                labels = out.setdefault((state, dest), [])
                if label not in labels:
                    labels.append(label)
        return [(src, dest, " | ".join(labels)) for (src, dest), labels in out.items()]

    def _filter_factory(self) -> Callable[[], Filter]:
        max_length, newline = self.max_length, self.newline
        if self.plain_lines and (self.switches or newline != "\n"):
            # Records cut one at a time, so that switch_filter is exact.
            return lambda: PullLineFilter(max_length, newline)
        return make_filter(self.filter_settings, self.schema)

    # -- the handlers a TCPServer takes -------------------------------------------------

    def _fast_path_fits(self, top: dict[str, list[tuple[Test, list[Step]]]]) -> bool:
        if self.has_states or self.named:
            return False
        for event, items in self.spec.handlers.items():
            if event not in ("connected", "input", "disconnected"):
                return False
            if not all(isinstance(a, Reply | Log) and isinstance(a.text, str) for a in items):
                return False
        return True

    def _fast_path(self, program: Program, top: dict[str, Any]) -> None:
        # The echo server's shape: each handler is one generated function with its
        # steps inlined: for the recipe, _PUT_RECORD and ``_w(f"{_s1_0}{s.id!s}...")``
        # (see templates.TemplateCode for why spec text is never code). A call
        # costs about 50 ns here, and the recipe's handler made six per line.
        for event in ("connected", "input", "disconnected"):
            has_input = event == "input"
            values: dict[str, Any] = {"_CLOSED": CLOSED}
            values["_w"] = self.rt.write
            values["_Exception"] = Exception  # the generated code has no builtins
            steps = self._fast_steps(event, values)
            if not steps:
                continue
            source = "def _f(s, i=None, m=None):\n" + _indent(steps, 1)
            program.handlers[event] = build_function(source, values, f"<spec {event}>")
            if has_input and not self.structured:
                # The same steps in a loop over a read's records (see INPUT_BATCH).
                # Structured input goes through _take_invalid first: it keeps the loop.
                before: list[str] = []
                steps = self._fast_steps(event, values, before)
                source = _BATCH.format(before=_indent(before, 1), steps=_indent(steps, 3))
                program.named[INPUT_BATCH] = build_function(source, values, "<spec input>")

    def _fast_steps(
        self, event: str, values: dict[str, Any], before: list[str] | None = None
    ) -> list[str]:
        # The handler's steps as lines of code; with ``before`` (the batch), what a
        # loop over one read's records cannot change is done once, before it: the
        # loop runs only in ``reading`` and its replies and logs never change the
        # connection's state, so put() needs no state test and marks the
        # connection once, and templates render their per-connection parts once.
        has_input = event == "input"
        steps: list[str] = []
        for n, action in enumerate(self.spec.handlers.get(event, [])):
            assert isinstance(action, Reply | Log)  # checked by _fast_path_fits
            assert isinstance(action.text, str)  # checked by _fast_path_fits
            if isinstance(action, Reply) and has_input and is_identity(action.text):
                # The record itself; the filter frames it.
                if before is None:
                    steps.extend(_PUT_RECORD)
                else:
                    if _PUT_BEFORE[0] not in before:
                        before.extend(_PUT_BEFORE)
                    steps.append("_out.append(i)")
                continue
            if isinstance(action, Log) and not self.logs:
                continue
            code = template_code(
                action.text, values, prefix=f"s{n}_", has_input=has_input,
                input_text=self.input_text,
                raw=self.structured and isinstance(action, Reply), hoist=before,
            )  # fmt: skip
            steps.append(f"{'s.put' if isinstance(action, Reply) else '_w'}({code.expr})")
        return steps

    def _handlers(
        self, program: Program, rules: dict[Scope, dict[str, Any]], initial: str | None
    ) -> None:
        rt = self.rt
        events = set(BUILTIN_EVENTS) | self.handled
        for event in sorted(events):
            if event not in self.handled and event not in ("connected", "disconnected"):
                continue  # nothing to do (error: the connection's own logging)
            top = rules[None].get(event, [])
            if self.has_states:
                table = {name: _entry(event, rules[name].get(event, []) + top, self.named)
                         for name in self.states}  # fmt: skip
                handler = _by_state(table)
            else:
                handler = _entry(event, top, self.named)
            if event == "connected":
                handler = self._on_connected(handler, initial)
            elif event == "disconnected":
                handler = self._on_disconnected(handler)
            elif event == "error":
                handler = _on_error(handler)
            if handler is None:
                continue
            if event in BUILTIN_EVENTS:
                program.handlers[event] = handler
            else:
                program.named[event] = handler
        if rt.timeout:
            program.named[STATE_TIMEOUT] = rt.state_timeout

    def _on_connected(
        self, handler: Callable[..., Any] | None, initial: str | None
    ) -> Callable[..., Any] | None:
        if initial is None:
            return handler
        rt = self.rt

        def connected(session: Any) -> None:
            session.protocol_state = initial
            rt.enter_state(session, initial)
            if handler is not None:
                handler(session)

        return connected

    def _on_disconnected(self, handler: Callable[..., Any] | None) -> Callable[..., Any]:
        gone = self.rt.gone

        def disconnected(session: Any) -> None:
            try:
                if handler is not None:
                    handler(session)
            finally:
                gone(session)

        return disconnected


def _entry(
    event: str, rules: list[tuple[Test, list[Step]]], named: set[str]
) -> Callable[..., Any] | None:
    """The handler of one event: try the rules in order, run the first that matches."""
    if not rules:
        return None
    if len(rules) == 1 and rules[0][0] is _always:
        ((_, steps),) = rules
        if event in _INPUT_EVENTS:

            def run_input(session: Any, record: Any) -> None:
                match: dict[str, Any] = {}
                for step in steps:
                    step(session, record, match)

            return run_input
        if event in named:

            def run_named(session: Any, data: Any = "", *_: Any) -> None:
                data = "" if data is None else data if isinstance(data, str) else str(data)
                match: dict[str, Any] = {}
                for step in steps:
                    step(session, data, match)

            return run_named

        def run(session: Any, *_: Any) -> None:
            match: dict[str, Any] = {}
            for step in steps:
                step(session, None, match)

        return run

    def first_match(session: Any, data: Any) -> None:
        for test, steps in rules:
            match = test(data)
            if match is not None:
                for step in steps:
                    step(session, data, match)
                return

    if event in _INPUT_EVENTS:
        return first_match
    if event in named:
        return lambda session, data="", *_: first_match(
            session, "" if data is None else data if isinstance(data, str) else str(data)
        )
    return lambda session, *_: first_match(session, None)


def _walk(items: list[Any], path: Path_) -> Iterator[tuple[Path_, Any]]:
    """Every action in a handler, rules' included, with its path."""
    for i, item in enumerate(items):
        if isinstance(item, Rule):
            yield from _walk(item.do, (*path, i, "do"))
        elif item is not None:
            yield (*path, i), item


# Connection.put(i), inlined (a call and its tuple of records fewer per line): keep
# it in step with put(); tests/test_spec.py checks the two behave alike.
_PUT_RECORD = [
    "if s.state is not _CLOSED:",
    "    s.outbox.append(i)",
    "    if not s.dirty:",
    "        s.kernel.mark_dirty(s)",
]
# Connection.put(i) in a loop over records of a connection in ``reading``: see
# _fast_steps. Marking it before the first reply is harmless (the flush of the
# tick finds the replies, or nothing).
_PUT_BEFORE = [
    "_out = s.outbox",
    "if not s.dirty:",
    "    s.kernel.mark_dirty(s)",
]
_BATCH = """def _f(s, records):
    n = 0
{before}    try:
        for i in records:
{steps}            n += 1
    except _Exception as exc:
        return n, exc
    return n, None
"""


def _indent(lines: list[str], level: int) -> str:
    return "".join("    " * level + line + "\n" for line in lines)


def _invalid_reply(session: Any, reason: str) -> None:
    session.put({"error": reason})


def _take_invalid(program: Program) -> None:
    # A record that failed its schema comes as an InvalidRecord in its place: it
    # goes to `invalid` (by default an error reply), never to the input rules.
    invalid = program.handlers.pop("invalid", None) or _invalid_reply
    handle = program.handlers.get("input")

    def on_input(session: Any, record: Any) -> None:
        if type(record) is InvalidRecord:
            invalid(session, record.error)
        elif handle is not None:
            handle(session, record)

    program.handlers["input"] = on_input


def _by_state(table: dict[str, Callable[..., Any] | None]) -> Callable[..., Any] | None:
    if not any(table.values()):
        return None
    # The per-message path of a spec with states: one dict lookup by the
    # session's protocol state.
    lookup = {name: handler or _nothing for name, handler in table.items()}

    def by_state(session: Any, *args: Any) -> Any:
        return lookup[session.protocol_state](session, *args)

    return by_state


def _nothing(session: Any, *args: Any) -> None:
    pass


def _on_error(handler: Callable[..., Any] | None) -> Callable[..., Any] | None:
    if handler is None:
        return None

    def on_error(session: Any, exc: BaseException) -> None:
        # The connection logs an error only when no handler takes it: log it here
        # too, so a spec's error replies do not hide a Python handler's bug.
        if isinstance(exc, ProtocolError):
            log.warning("session %d: %s; closing", session.id, exc)
        else:
            log.error("session %d (state %s): handler raised %s: %s; closing",
                      session.id, session.protocol_state or session.state,
                      type(exc).__name__, exc, exc_info=exc)  # fmt: skip
        handler(session, exc)

    return on_error


# -- the server -----------------------------------------------------------------------------


def beside_spec(spec: Spec, name: str) -> Path:
    """A file the spec names (``server.tls``, ``server.path``): relative to the spec
    file's folder, as ``call`` modules are found, so the spec runs from anywhere."""
    return Path(spec._base_dir or Path.cwd()) / name


def _tls_context(spec: Spec, tls: TLSSettings) -> ssl.SSLContext:
    """``server.tls``'s context; a file that does not load is one :class:`SpecError` line."""
    files = {
        key: beside_spec(spec, name)
        for key in ("cert", "key", "client_ca")
        if (name := getattr(tls, key)) is not None
    }
    # ssl names no file when one is missing: try each first, to say which.
    for key, file in files.items():
        try:
            file.open("rb").close()
        except OSError as exc:
            raise SpecError(
                f"cannot read server.tls.{key}: {exc.strerror or exc}", str(file)
            ) from None
    try:
        return server_ssl_context(files["cert"], files.get("key"), client_ca=files.get("client_ca"))
    except OSError as exc:  # ssl.SSLError: not PEM, no key, a key that does not match...
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc))
        others = "".join(f", {key} {file}" for key, file in files.items() if key != "cert")
        raise SpecError(
            f"server.tls does not load{others and f' ({others[2:]})'}: {reason}", str(files["cert"])
        ) from None


def build_server(
    spec: Spec,
    kernel: Kernel,
    *,
    host: str | None = None,
    port: int | None = None,
    console: ConsoleLog | None = None,
    on_started: Callable[[TCPServer], Any] | None = None,
    heap: dict[str, Any] | None = None,
) -> TCPServer:
    """Create (and bind) the server a spec declares.

    Args:
        spec: a validated spec (from :func:`~.loader.load_spec`).
        kernel: the kernel to run it in.
        host: overrides ``server.host`` (unused with ``server.path``).
        port: overrides ``server.port`` (unused with ``server.path``).
        console: where ``log`` actions write (stdout by default).
        on_started: called with the server once it is being served.
        heap: overrides of ``server.heap`` values (``run --set NAME=VALUE``).

    Raises:
        SpecError: the spec does not compile (a spec from the loader always does),
            or ``server.tls``'s files do not load (before anything listens).
        OSError: the address or socket path cannot be listened on.
    """
    console = console or ConsoleLog(kernel)
    settings = spec.server
    program = compile_spec(spec, write=console.lines.append)
    handlers = program.handlers
    outbound = None
    if program.clients:
        outbound = Outbound(kernel, program.clients, spec._base_dir or str(Path.cwd()))
        assert program.runtime is not None
        program.runtime.outbound = outbound
        handlers["connected"] = _first(outbound.connected, handlers.get("connected"))
        handlers["disconnected"] = _then(handlers.get("disconnected"), outbound.gone)
    context = None if settings.tls is None else _tls_context(spec, settings.tls)
    server = TCPServer(
        kernel,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        on_input=handlers.get("input"),
        on_connected=handlers.get("connected"),
        on_disconnected=handlers.get("disconnected"),
        on_error=handlers.get("error"),
        on_flushed=handlers.get("flushed"),
        on_high=handlers.get("high"),
        on_low=handlers.get("low"),
        on_timeout=handlers.get("timeout"),
        on_started=on_started,
        filter=program.filter_factory,
        handlers=program.named,
        limits=settings.limits,
        path=None if settings.path is None else beside_spec(spec, settings.path),
        ssl=context,
    )
    # The server-wide heap, {server.NAME}: the server session's own heap.
    server.heap.update(name=settings.name, host=server.host, port=server.port)
    server.heap.update(settings.heap)
    server.heap.update(heap or {})
    if outbound is not None:
        try:
            outbound.start_shared(server)
        except SpecError:
            server.close()  # nothing listens after an error
            raise
    return server


def _first(first: Callable[[Any], None], then: Callable[..., Any] | None) -> Callable[[Any], None]:
    if then is None:
        return first

    def both(session: Any) -> None:
        first(session)
        then(session)

    return both


def _then(first: Callable[..., Any] | None, then: Callable[[Any], None]) -> Callable[[Any], None]:
    if first is None:
        return then

    def both(session: Any) -> None:
        try:
            first(session)
        finally:
            then(session)

    return both
