"""Compile a :class:`~.model.Spec` into a :class:`~.runtime.Program`, checking what it means.

The middle of the path from a spec file to running handlers: the loader
(:mod:`.loader`) gives a spec whose values are valid; this module walks it,
compiles each handler's rules and conditions (each list of actions in
:mod:`.actions`, echo-shaped handlers as generated source in :mod:`.codegen`),
and assembles the handlers per event and per protocol state that
:func:`~.build.build_server` hands to a server (:mod:`.runtime` says what they
run per message).

The same compiler checks a spec: :func:`compile_spec` reports every error of
meaning (a template name, a regex, a ``goto`` target, a ``call`` that does not
import, an unreachable state...) with the path of the node, and the loader turns
paths into ``FILE:LINE:COLUMN``. So what ``check`` accepts is exactly what runs,
and the loader keeps what it compiled (:attr:`~.model.Spec.program`): a spec is
compiled once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..filters import Filter
from . import codegen
from .actions import RESERVED_EVENTS, ActionCompiler, Scope
from .clients import ClientProgram
from .conditions import Conditions, never
from .data import keep
from .framing import PullLineFilter
from .generated import Sources
from .messages import (
    Messages,
    check_filter,
    is_structured,
    make_filter,
    schema_of,
    structured_input,
)
from .model import (
    BUILTIN_EVENTS,
    CLIENT_EVENTS,
    Broadcast,
    ClientSettings,
    FilterSettings,
    Foreach,
    Goto,
    If,
    Join,
    Leave,
    Log,
    Post,
    Raise,
    Rule,
    Run,
    Send,
    Set,
    Spec,
    Work,
)
from .pycall import Calls
from .report import KEY, Report, SpecPath, dotted
from .runtime import (
    INPUT_EVENTS,
    RUNTIME,
    STATE_TIMEOUT,
    Program,
    Rules,
    Runtime,
    always,
    entry,
    on_connected,
    on_disconnected,
    on_error,
    take_invalid,
)
from .templates import compile_template

__all__ = ["compile_spec", "program_of", "uses_groups"]


def compile_spec(
    spec: Spec, report: Report | None = None, write: Callable[[str], None] | None = None
) -> Program:
    """Compile ``spec``; report each error as ``report(message, path)``.

    Args:
        spec: a spec whose values are valid (from the loader, or made in Python).
        report: where errors go; by default the first raises :class:`SpecError`.
        write: where ``log`` actions write until a server binds the program
            (nowhere by default: a check).

    Returns:
        The program; after errors, an incomplete one that nothing should run.
    """

    def raise_first(message: str, path: SpecPath) -> None:
        raise SpecError(message)

    return _Compiler(spec, report or raise_first, Runtime(write)).compile()


def program_of(spec: Spec) -> Program:
    """The program the loader compiled ``spec`` into, or a new one.

    The loader's is reused if no server runs it yet: its groups and state timers
    are one server's. Otherwise, and for a spec made in Python or changed with
    ``msgspec.structs.replace`` (which have none), the spec is compiled now, and
    the first error raises :class:`SpecError`.
    """
    program: Program | None = spec.program
    if program is None or program.runtime.bound:
        program = compile_spec(spec)
    return program


def uses_groups(spec: Spec) -> bool:
    """Whether ``spec`` joins, leaves or broadcasts to groups anywhere (its
    handlers, states, named actions, clients' handlers): the groups of one process,
    which only ``server.bus`` carries to others (``run --workers``). A
    ``group_size`` without them counts nothing but what this spec's sessions join."""
    lists: list[tuple[SpecPath, list[Any]]] = [
        *((("actions", name), items) for name, items in spec.actions.items()),
        *((("handlers", event), items) for event, items in spec.handlers.items()),
    ]
    for name, state in spec.states.items():
        lists += [(("states", name, "enter"), state.enter), (("states", name, "exit"), state.exit)]
        lists += [(("states", name, "handlers", e), items) for e, items in state.handlers.items()]
        if state.timeout is not None:
            lists.append((("states", name, "timeout"), state.timeout.do))
    for name, client in spec.clients.items():
        lists += [(("clients", name, e), items) for e, items in client.handlers.items()]
    return any(
        isinstance(action, Join | Leave | Broadcast)
        for path, items in lists
        for _, action in _walk(items, path)
    )


class _Compiler(Conditions):
    def __init__(self, spec: Spec, report: Report, rt: Runtime):
        self.spec = spec
        self.errors = 0

        def counted(message: str, path: SpecPath) -> None:
            self.errors += 1
            report(message, path)

        self.report = counted
        self.rt = rt
        self.base_dir = str(spec.base_dir)
        self.calls = Calls(self.base_dir)
        self.sources = Sources(spec.origin)
        self.states = spec.states
        self.has_states = bool(spec.states)
        settings = spec.server.filter
        # Records are decoded values (json, msgpack), not text.
        self.structured = is_structured(settings)
        # Whether input records are messages: the server's, or a client's while
        # its handlers compile (replies still go to the server's client).
        self.records_structured = self.structured
        self.schema, self.messages = self._framing(settings, ("server", "filter"))
        # Named events: listed in `events`, or posted by a `post` action.
        self.named = set(spec.events) | {
            a.event
            for _, a in self._all_actions()
            if isinstance(a, Post | Raise | Broadcast) and a.event is not None
        }
        self.handled = {
            event for scope_handlers in self._handler_maps() for event in scope_handlers[1]
        }
        self.acts = ActionCompiler(spec, self.report, rt, self.calls, self.sources, self.handled)
        self.acts.input_text = structured_input if self.structured else None

    def _framing(self, settings: FilterSettings, where: SpecPath) -> tuple[Any, Messages | None]:
        """Report what is wrong with filter settings; the schema they declare."""
        check_filter(settings, self.report, where)
        try:
            return schema_of(settings, self.calls.type)
        except ValueError as exc:
            self.report(str(exc), (*where, "schema"))
            return Any, None

    # -- walking the spec -------------------------------------------------------------

    def _handler_maps(self) -> Iterator[tuple[SpecPath, dict[str, Any], Scope]]:
        yield ("handlers",), self.spec.handlers, None
        for name, state in self.states.items():
            yield ("states", name, "handlers"), state.handlers, name

    def _all_actions(self) -> Iterator[tuple[SpecPath, Any]]:
        for path, handlers, _ in self._handler_maps():
            for event, items in handlers.items():
                yield from _walk(items, (*path, event))
        for name, items in self.spec.actions.items():
            yield from _walk(items, ("actions", name))
        for name, state in self.states.items():
            yield from _walk(state.enter, ("states", name, "enter"))
            yield from _walk(state.exit, ("states", name, "exit"))
            if state.timeout is not None:
                yield from _walk(state.timeout.do, ("states", name, "timeout", "do"))

    # -- the whole spec ----------------------------------------------------------------

    def compile(self) -> Program:
        rt, acts = self.rt, self.acts
        initial = self._initial()
        program = Program(rt, initial=initial, sources=self.sources.by_name)
        program.bound = self.acts.bounds.of
        for path, handlers, scope in self._handler_maps():
            self._check_events(path, handlers, scope, initial)
        # The echo shape compiles (and checks) its handlers as generated source
        # instead of ops: the program holds only what runs.
        fast = codegen.fits(self.spec, self.named)
        if fast:
            codegen.fast_path(
                self.spec, program, self.sources, self.report, logs=acts.logs,
                structured=self.structured, input_text=acts.input_text,
            )  # fmt: skip
        # Per scope and event: the compiled rules.
        rules: dict[Scope, dict[str, Rules]] = {None: {}}
        for path, handlers, scope in self._handler_maps() if not fast else ():
            compiled = rules.setdefault(scope, {})
            for event, items in handlers.items():
                compiled[event] = self._rules(items, (*path, event), scope, event)
        for name, state in self.states.items():
            path = ("states", name)
            rt.enter[name] = acts.actions(state.enter, (*path, "enter"), name, "enter")
            exits = acts.actions(state.exit, (*path, "exit"), name, "exit")
            if exits:
                # Only states that have some (the runtime reads .get()): each
                # goto asks whether any state does, which stays one look.
                rt.exit[name] = exits
            if state.timeout is not None:
                label = f"after {state.timeout.after:g} s"
                ops = acts.actions(state.timeout.do, (*path, "timeout", "do"), name, label)
                rt.timeout[name] = (state.timeout.after, ops)
        if self.has_states and not acts.bad_gotos:
            self._check_graph(initial)
        program.transitions = self._transitions()
        program.filter_factory = self._filter_factory()
        # Compiled before the error check: their errors are reported with the rest.
        program.clients = [self._client(name, c) for name, c in self.spec.clients.items()]
        if self.errors:
            return program  # reported: nothing will run it
        if not fast:
            self._handlers(program, rules, initial)
        if self.structured:
            take_invalid(program)
        return program

    def _client(self, name: str, c: ClientSettings) -> ClientProgram:
        path: SpecPath = ("clients", name)
        schema, messages = self._framing(c.filter, (*path, "filter"))
        factory = make_filter(c.filter, schema)

        def address(value: Any, key: str) -> Callable[..., Any]:
            if not isinstance(value, str):
                return lambda s, i, m=None: value
            try:
                return compile_template(
                    value, has_input=False, states=self.has_states,
                    sources=self.sources, where=dotted((*path, key)),
                )  # fmt: skip
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
        acts = self.acts
        saved = acts.input_text, self.records_structured, self.messages
        structured = is_structured(c.filter)
        acts.input_text = structured_input if structured else None
        self.records_structured, self.messages = structured, messages
        try:
            for event, items in c.handlers.items():
                where = (*path, "handlers", event)
                if event not in CLIENT_EVENTS:
                    near = acts.hint(event, CLIENT_EVENTS)
                    self.report(f"unknown client event {event!r}{near}: a client has "
                                f"{', '.join(CLIENT_EVENTS)}", (*where, KEY))  # fmt: skip
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
                handler = entry(event, rules, set())
                if handler is not None:
                    program.handlers[event] = handler
        finally:
            acts.input_text, self.records_structured, self.messages = saved
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
                    f"initial state {spec.initial!r} is not declared{self.acts.hint(spec.initial)}",
                    ("initial",),
                )
            return next(iter(self.states), None)
        return spec.initial

    def _check_events(
        self, path: SpecPath, handlers: dict[str, Any], scope: Scope, initial: str | None
    ) -> None:
        for event in handlers:
            where = (*path, event, KEY)
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
                near = self.acts.hint(event, [*BUILTIN_EVENTS, *self.named])
                self.report(
                    f"unknown event {event!r}{near}: not a built-in event, not posted, raised or "
                    "broadcast by any action, not listed in `events`",
                    where,
                )

    # -- handlers and rules ---------------------------------------------------------------

    def _rules(self, items: list[Any], path: SpecPath, scope: Scope, event: str) -> Rules:
        acts = self.acts
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
                    acts.actions([item], path, scope, event)
            return []
        # An unknown event (reported) is taken as a named one: no second error.
        has_input = event in INPUT_EVENTS or event not in BUILTIN_EVENTS
        if present and not isinstance(present[0], Rule):
            return [(always, acts.actions(items, path, scope, event, has_input=has_input))]
        rules: Rules = []
        fallback_at: SpecPath | None = None
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
            if test is always:
                fallback_at = where
            elif test is None:  # reported; its actions are still checked
                test = never
            ops = acts.actions(
                rule.do, (*where, "do"), scope, event, has_input=has_input, groups=groups
            )
            rules.append((test, ops))
        return rules

    # -- the state graph ------------------------------------------------------------------

    def _check_graph(self, initial: str | None) -> None:
        # Each check is linear in states and gotos: a spec of 10,000 states
        # (under the size limit) must check in well under a second.
        acts = self.acts
        # goto chains through enter actions must end: a -> b -> a would never return.
        looping = _on_cycles(acts.enter_gotos)
        for start in acts.enter_gotos:
            if start in looping:
                self.report(
                    f"state {start!r}: goto in enter actions leads back to it (an endless loop)",
                    ("states", start, "enter"),
                )
        # Scope -> the states its gotos lead to; None: the top-level handlers.
        dests: dict[Scope, set[str]] = {}
        for src, dest, _ in acts.edges:
            dests.setdefault(src, set()).add(dest)
        anywhere = dests.get(None, set())
        if initial is None:
            return
        reached = {initial, *anywhere}
        todo = list(reached)
        while todo:
            for dest in dests.get(todo.pop(), ()):
                if dest not in reached:
                    reached.add(dest)
                    todo.append(dest)
        for name in self.states:
            where = ("states", name, KEY)
            if name not in reached and not acts.python_moves:
                self.report(f"state {name!r} is unreachable: no goto leads to it from "
                            f"the initial state {initial!r}", where)  # fmt: skip
            leaves = any(dest != name for dest in anywhere) or any(
                dest != name for dest in dests.get(name, ())
            )
            if not leaves and name not in acts.ways_out and None not in acts.ways_out:
                self.report(
                    f"state {name!r} has no way out: no goto to another state, close or call "
                    "in its actions or the top-level handlers",
                    where,
                )

    def _transitions(self) -> list[tuple[str, str, str]]:
        out: dict[tuple[str, str], list[str]] = {}
        for src, dest, label in self.acts.edges:
            for state in [src] if src is not None else list(self.states):
                labels = out.setdefault((state, dest), [])
                if label not in labels:
                    labels.append(label)
        return [(src, dest, " | ".join(labels)) for (src, dest), labels in out.items()]

    def _filter_factory(self) -> Callable[[], Filter]:
        acts = self.acts
        max_length, newline = acts.max_length, acts.newline
        if acts.plain_lines and (acts.switches or newline != "\n"):
            # Records cut one at a time, so that switch_filter is exact.
            return lambda: PullLineFilter(max_length, newline)
        return make_filter(self.spec.server.filter, self.schema)

    # -- the handlers a TCPServer takes -------------------------------------------------

    def _handlers(
        self, program: Program, rules: dict[Scope, dict[str, Rules]], initial: str | None
    ) -> None:
        rt = self.rt
        events = set(BUILTIN_EVENTS) | self.handled
        # Event -> the states with rules for it, in the states' order.
        own: dict[str, dict[str | None, Rules]] = {}
        for name in self.states:
            for event, state_rules in rules[name].items():
                if state_rules:
                    own.setdefault(event, {})[name] = state_rules
        for event in sorted(events):
            if event not in self.handled and event not in ("connected", "disconnected"):
                continue  # nothing to do (error: the connection's own logging)
            top = rules[None].get(event, [])
            table: dict[str | None, Rules]
            if not self.has_states:
                table = {None: top}
            elif top:
                table = {name: rules[name].get(event, []) + top for name in self.states}
            else:
                # Only the states with rules for it: in any other state the
                # handler does nothing, and a branch per state and event would
                # make the source states x events long.
                table = own.get(event, {})
            # One function: the state's rules, tests and actions inlined (inline.py).
            handler = self.acts.inline.handler(
                event,
                table,
                self.named,
                f"handlers.{event}",
                raises=self.acts.raises or self.acts.python_moves,
            )
            if event == "connected":
                handler = on_connected(rt, handler, initial, self._session_heap())
                if handler is not None and self.acts.raises:
                    # The initial state's enter actions run here too: what they
                    # raise waits for the whole of it (connected's actions included).
                    handler = rt.handled(handler)
            elif event == "disconnected":
                handler = on_disconnected(rt, handler)
            elif event == "error":
                handler = on_error(handler)
            if handler is None:
                continue
            if event in BUILTIN_EVENTS:
                program.handlers[event] = handler
            else:
                program.named[event] = handler
        program.named[RUNTIME] = rt  # type: ignore[index,assignment]  # for goto(), raise_event()
        if rt.timeout:
            timeout = rt.state_timeout
            program.named[STATE_TIMEOUT] = rt.handled(timeout) if self.acts.raises else timeout

    def _session_heap(self) -> Callable[[Any], None] | None:
        """What gives each session its initial heap (the spec's ``heap``)."""
        initial = self.spec.heap
        if not initial:
            return None
        bounds = {name: self.acts.bounds.of(name) for name in initial}

        def fill(session: Any) -> None:
            heap = session.heap
            for name, value in initial.items():
                heap[name] = keep(value, bounds[name])  # a copy each: sessions share nothing

        return fill


def _on_cycles(graph: dict[str, set[str]]) -> set[str]:
    """The nodes of ``graph`` that lie on a cycle: those in a strongly connected
    component of more than one node, or with an edge to themselves.

    Tarjan's algorithm, with a stack of iterators instead of recursion: a chain
    of 10,000 states is not 10,000 Python frames. Linear in nodes and edges,
    where a search from each node was quadratic in a long chain.
    """
    order: dict[str, int] = {}  # node -> when first seen
    low: dict[str, int] = {}  # the earliest node on the stack it reaches
    stack: list[str] = []
    on_stack: set[str] = set()
    cyclic: set[str] = set()
    for root in graph:
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        path = [(root, iter(graph.get(root, ())))]
        while path:
            node, successors = path[-1]
            for nxt in successors:
                if nxt not in order:
                    order[nxt] = low[nxt] = len(order)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    path.append((nxt, iter(graph.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
            else:
                path.pop()
                if path:
                    parent = path[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == order[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        cyclic.update(component)
    return cyclic


def _walk(items: list[Any], path: SpecPath) -> Iterator[tuple[SpecPath, Any]]:
    """Every action in a handler, rules' included, with its path."""
    for i, item in enumerate(items):
        if isinstance(item, Rule):
            yield from _walk(item.do, (*path, i, "do"))
        elif item is not None:
            yield (*path, i), item
            for key in _NESTED.get(type(item), ()):
                yield from _walk(getattr(item, key), (*path, i, key))


#: Actions holding lists of actions, and where.
_NESTED: dict[type, tuple[str, ...]] = {
    Foreach: ("do",),
    If: ("then", "else_"),
    Work: ("progress", "on_error"),
    Run: ("stdout", "stderr", "on_error"),
}
