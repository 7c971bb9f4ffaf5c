"""Each action of a spec to an op, ``op(session, input, match)``, with the checks that are its own.

The compiler (:mod:`.compile`) walks handlers and rules; each list of actions
comes here. An action becomes one :data:`~.runtime.Op`: a closure over what it
needs, templates compiled once (:mod:`.templates`), Python targets imported once
(:mod:`.pycall`). What an action means is checked here too (a ``goto`` to no
such state, a ``post`` nobody handles, a ``call`` that does not import...), and
reported at its node's path. The ``goto`` edges, and the actions that may leave
a state some other way, are recorded for the compiler's graph checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.lifecycle import CLOSED, EVENTS
from ..errors import ProtocolError
from ..logs import LogOps
from .assign import Bounds, compile_append, compile_set, compile_unset
from .expressions import ExprError, Names, Typed, compile_expression, split_template
from .framing import PullBlockFilter, PullLineFilter
from .functions import as_int, kind
from .generated import Sources
from .inline import Inliner, Snippet
from .messages import compile_value, is_structured
from .model import (
    BUILTIN_EVENTS,
    Action,
    Append,
    Broadcast,
    Call,
    Close,
    Foreach,
    Goto,
    If,
    Join,
    Leave,
    LineFilterSettings,
    Log,
    Post,
    Raise,
    Reply,
    Run,
    Send,
    Set,
    Spec,
    SwitchFilter,
    Unset,
    Use,
    Work,
    Write,
)
from .moves import Moves
from .outside import OutsideActions
from .pycall import Calls
from .report import Report, SpecPath, dotted, hint, inside
from .runtime import (
    INPUT_EVENTS,
    WRITE,
    Op,
    Runtime,
)
from .templates import Template, TemplateCode, compile_template, template_code

__all__ = ["RESERVED_EVENTS", "ActionCompiler", "Scope"]

#: Where actions live: a state's name, or None for the top-level handlers.
Scope = str | None

#: Names a spec's own events may not take: the lifecycle's and the kernel's.
RESERVED_EVENTS = frozenset(EVENTS) | {"started", "stopped", "shutdown"}


def each(value: Any) -> list[Any]:
    """What ``foreach`` runs over: a list's items or a map's keys, taken when the
    loop starts (its body may change the original); nothing for null."""
    if value is None:
        return []
    if not isinstance(value, list | dict):
        raise TypeError(f"foreach takes a list or a map, not {kind(value)}")
    return list(value)


#: Each action type's fields that hold lists of actions.
_NESTED: dict[type, tuple[str, ...]] = {}
_NESTING = ("do", "then", "else_", "progress", "on_error", "stdout", "stderr")


def _actions_of(spec: Spec) -> list[Any]:
    """Every action of the spec, nested ones too (for what the compiler must know first)."""
    found: list[Any] = []
    todo: list[Any] = [a for items in spec.actions.values() for a in items]
    for handlers in [spec.handlers, *(state.handlers for state in spec.states.values())]:
        for items in handlers.values():
            todo.extend(items)
    for state in spec.states.values():
        todo += [*state.enter, *state.exit, *(state.timeout.do if state.timeout else [])]
    while todo:
        item = todo.pop()
        if item is None:
            continue
        found.append(item)
        keys = _NESTED.get(type(item))
        if keys is None:
            keys = _NESTED[type(item)] = tuple(k for k in _NESTING if hasattr(item, k))
        for key in keys:
            todo.extend(getattr(item, key) or ())
    return found


def _size(value: Any) -> int:
    """A block's size from a template's value: ASCII digits only (int() would read
    "٣" or "²"), -1 for anything else (refused by the caller)."""
    return -1 if isinstance(value, bool) else int(as_int(value, -1))


def _indented(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


class ActionCompiler(Moves, OutsideActions):
    """Compiles lists of actions for one spec.

    Args:
        spec: the spec.
        report: where errors of meaning go.
        rt: the runtime the ops share.
        calls: the spec's Python targets.
        sources: the spec's generated functions (templates join them).
        handled: the events some handler handles (``post`` must name one).
    """

    def __init__(
        self,
        spec: Spec,
        report: Report,
        rt: Runtime,
        calls: Calls,
        sources: Sources,
        handled: set[str],
    ):
        self.spec = spec
        self.report = report
        self.rt = rt
        self.calls = calls
        self.sources = sources
        self.handled = handled
        self.states = spec.states
        self.has_states = bool(spec.states)
        self.logs = spec.server.log.enabled
        self.log = LogOps(spec.server.log, self.has_states, WRITE, split_template)
        settings = spec.server.filter
        # Records are decoded values (json, msgpack), not text.
        self.structured = is_structured(settings)
        #: Metrics are served: every goto is counted by from, to and event (and
        #: none is when they are not: no cost at all then).
        self.metered = rt.metered = spec.server.metrics is not None
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
        #: How ``{input}`` is written: None for text; the compiler sets it for each
        #: client's handlers, whose records are framed by the client's filter.
        self.input_text: Callable[[Any], str] | None = None
        # What the compiler's graph checks read:
        #: goto edges, (from scope, to state, label).
        self.edges: list[tuple[Scope, str, str]] = []
        #: State -> the states its enter actions goto.
        self.enter_gotos: dict[str, set[str]] = {}
        #: Scopes with a close, a call or a work: a way out the checks cannot follow.
        self.ways_out: set[Scope] = set()
        #: A goto to no such state was reported: the graph checks would only echo it.
        self.bad_gotos = False
        #: Some call or work runs Python, which may goto any state (then a state
        #: no goto reaches is not an error).
        every = _actions_of(spec)
        self.python_moves = any(isinstance(a, Call | Work) for a in every)
        #: Some action switches the filter (then lines are cut one at a time).
        self.switches = False
        self.hints = 0  # "did you mean" hints given (see hint())
        #: Some action raises an event (then handlers drain them: Runtime.handled).
        self.raises = False
        #: Snippets of the ops, for handlers generated as one function each.
        self.inline = Inliner(sources, rt)
        #: The longest record a handler is given: a line, or the largest block
        #: a switch_filter allows (text that long needs no check when stored).
        self.record_limit = max(
            [line.max_length if self.plain_lines else 1 << 62]
            + [a.max_size for a in every if isinstance(a, SwitchFilter)]
        )
        #: The bounds of the heaps' collections (``collections``).
        self.bounds = Bounds(spec.collections, report)
        #: The runtime's functions an expression may call.
        self.extra: dict[str, Any] = rt.functions()

    def hint(self, name: str, choices: Any = None) -> str:
        """`` (did you mean ...?)``, among the states by default: for the first
        errors only (only the first 50 are shown, and each hint compares with
        every name: a spec full of errors would cost time quadratic in its size)."""
        self.hints += 1
        if self.hints > 100:
            return ""
        return hint(name, self.states if choices is None else choices)

    def actions(
        self,
        actions: list[Any],
        path: SpecPath,
        scope: Scope,
        label: str,
        *,
        has_input: bool = False,
        groups: frozenset[str] | None = None,
        start: int = 0,
        result: bool = False,
        local: frozenset[str] = frozenset(),
        paths: list[SpecPath] | None = None,
    ) -> list[Op]:
        """The ops of a list of actions (each ``use`` replaced by the actions it names).

        Args:
            actions: the list (None items: already reported by the loader).
            path: its path.
            scope: the state it belongs to (None: the top-level handlers).
            label: the event, ``enter``, ``exit`` or a timeout's label (graph edges).
            has_input: whether ``{input}`` exists here.
            groups: the rule's ``{match.NAME}`` names (None: no such condition).
            start: compile from this index (a work or run's continuation).
            result: whether ``{result}`` exists already.
            local: the ``foreach`` variables in scope.
            paths: each action's own path, once ``use`` is expanded (None: ``path``
                and its index).
        """
        if paths is None and any(isinstance(a, Use) for a in actions):
            actions, paths = self._expand(actions, path, ())
        ops: list[Op] = []
        has_result = result
        for i, action in enumerate(actions):
            if action is None or i < start:
                continue
            where = paths[i] if paths is not None else (*path, i)

            names = Names(
                has_input=has_input, groups=groups, has_result=has_result,
                states=self.has_states, text_input=self.input_text is None, locals=local,
                extra=self.extra, typed_input=has_input and label not in INPUT_EVENTS,
            )  # fmt: skip

            def tpl(
                text: str,
                *at: str,
                _where: SpecPath = where,
                _names: Names = names,
                raw: bool = False,
            ) -> Template:
                try:
                    return compile_template(
                        text, input_text=self.input_text, raw=raw, sources=self.sources,
                        where=dotted((*_where, *at)), names=_names,
                    )  # fmt: skip
                except ValueError as exc:
                    self.report(str(exc), inside((*_where, *at), exc))
                    return lambda s, i, m=None: ""

            def code(
                text: str,
                values: dict[str, Any],
                prefix: str,
                *at: str,
                _where: SpecPath = where,
                _names: Names = names,
                raw: bool = False,
                setup: list[str] | None = None,
            ) -> str | None:
                """A template's expression, for a snippet (None: reported);
                ``setup`` gets the statements that must run first."""
                try:
                    return template_code(
                        text, values, prefix=prefix, input_text=self.input_text, raw=raw,
                        names=_names, setup=setup,
                    ).expr  # fmt: skip
                except ValueError as exc:
                    self.report(str(exc), inside((*_where, *at), exc))
                    return None

            if isinstance(action, Work | Run):
                # The actions after it run when it is done: compiled as its
                # continuation, with {result}; nothing more runs now.
                def nested(items: list[Any], key: str, _where: SpecPath = where) -> list[Op]:
                    return self.actions(
                        items, (*_where, key), scope, label,
                        has_input=has_input, groups=groups, result=True, local=local,
                    )  # fmt: skip

                then = self.actions(
                    actions, path, scope, label,
                    has_input=has_input, groups=groups, start=i + 1, result=True, local=local,
                    paths=paths,
                )  # fmt: skip
                op = None
                if local:
                    self.report(f"{type(action).__name__.lower()} is not allowed in foreach "
                                "(the loop would go on while it runs)", where)  # fmt: skip
                elif label == "exit":
                    self.report(f"{type(action).__name__.lower()} is not allowed in exit "
                                "actions (the state is being left)", where)  # fmt: skip
                elif isinstance(action, Work):
                    self.ways_out.add(scope)  # Python runs: not followed by the checks
                    op = self._work(action, where, then, nested)
                else:
                    op = self._run(action, where, tpl, then, nested)
                if op is not None:
                    ops.append(op)
                break
            if isinstance(action, If):
                op = self._if(action, where, names, scope, label, has_input, groups,
                              has_result, local)  # fmt: skip
            elif isinstance(action, Foreach):
                op = self._foreach(action, where, names, scope, label, has_input, groups,
                                   has_result, local)  # fmt: skip
            elif isinstance(action, Set | Append | Unset):
                op = self._write_heap(action, where, names)
            else:
                op = self._action(action, where, scope, label, tpl, code)
            if op is not None:
                ops.append(op)
            if isinstance(action, Call):
                has_result = True
        return ops

    def _expand(
        self, items: list[Any], path: SpecPath, chain: tuple[str, ...]
    ) -> tuple[list[Any], list[SpecPath]]:
        """``items`` with each ``use: NAME`` replaced by the named actions (errors in
        them are reported where they are written, under ``actions``)."""
        out: list[Any] = []
        where: list[SpecPath] = []
        for i, item in enumerate(items):
            at: SpecPath = (*path, i)
            if not isinstance(item, Use):
                out.append(item)
                where.append(at)
                continue
            body = self.spec.actions.get(item.name)
            if body is None:
                near = self.hint(item.name, self.spec.actions)
                known = ", ".join(self.spec.actions) or "none"
                self.report(f"use: no actions named {item.name!r}{near} (the top-level "
                            f"`actions` has: {known})", (*at, "name"))  # fmt: skip
            elif item.name in chain:
                loop = " -> ".join([*chain, item.name])
                self.report(f"use: {item.name!r} uses itself ({loop})", (*at, "name"))
            else:
                inner, paths = self._expand(body, ("actions", item.name), (*chain, item.name))
                out += inner
                where += paths
        return out, where

    def _expression(self, text: str, names: Names, values: dict[str, Any], p: str,
                    where: SpecPath) -> str | None:  # fmt: skip
        """An expression's source for a snippet (None: reported)."""
        typed = self._typed(text, names, values, p, where)
        return None if typed is None else typed.source

    def _typed(self, text: str, names: Names, values: dict[str, Any], p: str,
               where: SpecPath) -> Typed | None:  # fmt: skip
        code = TemplateCode(values, p)
        try:
            return compile_expression(text, names, code.name)
        except ExprError as exc:
            self.report(str(exc), inside(where, exc))
            return None

    def _if(
        self, a: If, where: SpecPath, names: Names, scope: Scope, label: str,
        has_input: bool, groups: frozenset[str] | None, has_result: bool, local: frozenset[str],
    ) -> Op | None:  # fmt: skip
        p = self.inline.prefix()
        values: dict[str, Any] = {}
        text = a.if_ if isinstance(a.if_, str) else str(a.if_).lower()  # YAML true: "true"
        test = self._expression(text, names, values, p, (*where, "if"))
        then, other = (
            self.actions(
                items,
                (*where, key),
                scope,
                label,
                has_input=has_input,
                groups=groups,
                result=has_result,
                local=local,
            )
            for items, key in ((a.then, "then"), (a.else_, "else"))
        )
        if test is None:
            return None
        lines = [f"if {test}:", *_indented(self.inline.body(then, values) or ["pass"])]
        if other:
            lines += ["else:", *_indented(self.inline.body(other, values))]
        return self._snippet(lines, values, where)

    def _foreach(
        self, a: Foreach, where: SpecPath, names: Names, scope: Scope, label: str,
        has_input: bool, groups: frozenset[str] | None, has_result: bool, local: frozenset[str],
    ) -> Op | None:  # fmt: skip
        p = self.inline.prefix()
        values: dict[str, Any] = {"_each": each}
        typed = self._typed(a.in_, names, values, p, (*where, "in"))
        items = None if typed is None else typed.source
        name = a.as_
        if name in ("input", "result", "remote_ip", "remote_port", "heap", "server", "match",
                    "session", "true", "false", "null"):  # fmt: skip
            self.report(f"foreach as {name!r}: that name is the language's own", (*where, "as"))
            return None
        body = self.actions(
            a.do, (*where, "do"), scope, label, has_input=has_input, groups=groups,
            result=has_result, local=local | {name},
        )  # fmt: skip
        if items is None:
            return None
        values[f"{p}k"] = name
        # The item is m[NAME] (as a match group is): the body reads it there.
        # A list a function or a literal just made needs no copy (nothing else
        # can change it); anything else is taken as it is when the loop starts.
        fresh = typed is not None and typed.type == "list" and not items.startswith("s.")
        lines = [
            f"for {p}x in {items if fresh else f'_each({items})'}:",
            f"    m[{p}k] = {p}x",
            *_indented(self.inline.body(body, values)),
        ]
        return self._snippet(lines, values, where)

    def _write_heap(self, a: Set | Append | Unset, where: SpecPath, names: Names) -> Op | None:
        p = self.inline.prefix()
        if isinstance(a, Set):
            snippet = compile_set(
                a.values, names, self.bounds, self.report, where, p, self.record_limit
            )
        elif isinstance(a, Append):
            snippet = compile_append(a.values, names, self.bounds, self.report, where, p)
        else:
            snippet = compile_unset(a.names, names, self.report, where, p)
        return None if snippet is None else self.inline.op(snippet, where)

    def _snippet(self, lines: list[str], values: dict[str, Any], where: SpecPath) -> Op | None:
        """An op made of statements, which handlers inline (:mod:`.inline`)."""
        return self.inline.op(Snippet(lines, values), where)

    def _action(
        self,
        a: Action,
        where: SpecPath,
        scope: Scope,
        label: str,
        tpl: Callable[..., Template],
        code: Callable[..., str | None],
    ) -> Op | None:
        rt = self.rt
        p = self.inline.prefix()
        values: dict[str, Any]
        if isinstance(a, Reply):
            if self.structured:
                # Values keep their types: {"count": "{match.n}"} sends a number.
                value = compile_value(a.text, lambda text: tpl(text, "text", raw=True))
                return lambda s, i, m: s.put(value(s, i, m))
            if not isinstance(a.text, str):
                self.report("a reply that is a mapping or a list needs a json or msgpack "
                            "filter (server.filter)", (*where, "text"))  # fmt: skip
                return None
            values = {"_CLOSED": CLOSED}
            setup: list[str] = []
            expr = code(a.text, values, p, "text", setup=setup)
            if expr is None:
                return None
            # Connection.put(x), inlined: see codegen's _PUT_RECORD.
            op = self._snippet([
                *setup,
                f"{p}r = {expr}",
                "if s.state is not _CLOSED:",
                f"    s.outbox.append({p}r)",
                "    if not s.dirty:",
                "        s.kernel.mark_dirty(s)",
            ], values, where)  # fmt: skip
            self.inline.ops[op].put = ([*setup, f"{p}r = {expr}"], f"{p}r")
            return op
        if isinstance(a, Log):  # the server's writer is bound after compiling (Runtime.bind)
            values = {WRITE: rt.write}
            line = self.log.statement(a.text, values, lambda t, v: code(t, v, p, "text"))
            return None if line is None else self._snippet([line], values, where)
        if isinstance(a, Write):
            if self.structured:
                self.report("write sends text as it is: not with a json or msgpack filter "
                            "(reply sends a structure)", where)  # fmt: skip
                return None
            values = {}
            expr = code(a.text, values, p, "text")
            return None if expr is None else self._snippet([f"s.write({expr})"], values, where)
        if isinstance(a, Raise):
            return self._raise(a, where, code, p)
        if isinstance(a, Goto):
            return self._goto_op(a, where, scope, label, p)
        if isinstance(a, Close):
            self.ways_out.add(scope)
            return self._snippet(["s.close()"], {}, where)
        if isinstance(a, Post):
            return self._post(a, where, tpl)
        if isinstance(a, Broadcast):
            return self._broadcast(a, where, tpl)
        if isinstance(a, Join):
            group = tpl(a.group, "group")
            return lambda s, i, m: rt.join(s, group(s, i, m))
        if isinstance(a, Leave):
            group = tpl(a.group, "group")
            return lambda s, i, m: rt.leave(s, group(s, i, m))
        if isinstance(a, Call):
            return self._call(a, where, scope)
        if isinstance(a, SwitchFilter):
            return self._switch(a, where, code)
        if isinstance(a, Send):
            return self._send(a, where, tpl)
        raise AssertionError(f"unknown action {a!r}")  # pragma: no cover - a closed union

    def _post(self, a: Post, where: SpecPath, tpl: Callable[..., Template]) -> Op | None:
        if a.event not in self.handled:
            near = self.hint(a.event, self.handled - set(BUILTIN_EVENTS))
            self.report(f"post: no handler for event {a.event!r}{near}", (*where, "event"))
            return None
        if a.event in RESERVED_EVENTS or a.event in BUILTIN_EVENTS:
            self.report(f"post: {a.event!r} is not a named event", (*where, "event"))
            return None
        event, render, after = a.event, tpl(a.input, "input"), a.after
        if after is None:
            return lambda s, i, m: s.kernel.enqueue(s, event, (render(s, i, m),))
        return lambda s, i, m: s.kernel.delay(after, event, render(s, i, m), session=s)

    def _raise(
        self, a: Raise, where: SpecPath, code: Callable[..., str | None], p: str
    ) -> Op | None:
        if a.event not in self.handled:
            near = self.hint(a.event, self.handled - set(BUILTIN_EVENTS))
            self.report(f"raise: no handler for event {a.event!r}{near}", (*where, "event"))
            return None
        if a.event in RESERVED_EVENTS or a.event in BUILTIN_EVENTS:
            self.report(f"raise: {a.event!r} is not a named event", (*where, "event"))
            return None
        self.raises = True
        values: dict[str, Any] = {"_rt": self.rt, f"{p}e": a.event}
        expr = code(a.input, values, p, "input", raw=True)
        if expr is None:
            return None
        return self._snippet([f"_rt.raise_event(s, {p}e, {expr})"], values, where)

    def _broadcast(self, a: Broadcast, where: SpecPath, tpl: Callable[..., Template]) -> Op | None:
        rt, include_self = self.rt, a.include_self
        group = tpl(a.group, "group")
        if (a.text is None) == (a.event is None):
            self.report("broadcast takes text (sent to each member) or event (posted to "
                        "each), one of them", where)  # fmt: skip
            return None
        if a.event is not None:
            if a.event not in self.handled or a.event in BUILTIN_EVENTS:
                near = self.hint(a.event, self.handled - set(BUILTIN_EVENTS))
                self.report(f"broadcast: no handler for event {a.event!r}{near}",
                            (*where, "event"))  # fmt: skip
                return None
            event, value = a.event, tpl(a.input, "input", raw=True)
            return lambda s, i, m: rt.broadcast_event(
                s, group(s, i, m), event, value(s, i, m), include_self
            )
        text = tpl(a.text, "text")
        return lambda s, i, m: rt.broadcast(s, group(s, i, m), text(s, i, m), include_self)

    def _send(self, a: Send, where: SpecPath, tpl: Callable[..., Template]) -> Op | None:
        client = self.spec.clients.get(a.to)
        if client is None:
            near = self.hint(a.to, self.spec.clients)
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
            assert rt.outbound is not None  # bound by build_server
            rt.outbound.send(s, to, value(s, i, m))

        return send

    def _switch(
        self, a: SwitchFilter, where: SpecPath, code: Callable[..., str | None]
    ) -> Op | None:
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
        once = a.once
        max_length, newline = self.max_length, self.newline

        def to_block(s: Any, n: Any) -> None:
            # ASCII digits only: int() would read "٣" or "²" as a number.
            if n.__class__ is not int:
                n = -1 if isinstance(n, bool) else as_int(n, -1)
            if not 0 <= n <= limit:
                raise ProtocolError(f"block size {str(n)[:40]!r}: expected 0 to {limit}")
            if not once:
                s.switch_filter(PullBlockFilter(n, end, output))
            elif not s.expect_block(n, end):
                # One block, then lines: the line filter cuts it itself (from a
                # block filter, to a line filter first).
                s.switch_filter(PullLineFilter(max_length, newline))
                s.expect_block(n, end)

        p = self.inline.prefix()
        values: dict[str, Any] = {"_to_block": to_block, "_int": int}
        if isinstance(a.size, int):
            if not 0 <= a.size <= limit:
                self.report(f"size {a.size}: expected 0 to max_size ({limit})", (*where, "size"))
                return None
            values[f"{p}n"] = a.size
            size: str | None = f"{p}n"
        else:
            size = code(a.size, values, p, "size", raw=True)
            if size is None:
                return None
        if once:
            # The common case inline: a valid size, and a line filter that cuts
            # the block itself (Connection.expect_block).
            values.update(_end=end, _limit=limit, _size=_size)
            return self._snippet([
                f"{p}v = {size}",
                f"if {p}v.__class__ is not _int:",
                f"    {p}v = _size({p}v)",
                f"if not (0 <= {p}v <= _limit and s.expect_block({p}v, _end)):",
                f"    _to_block(s, {p}v)",
            ], values, where)  # fmt: skip
        return self._snippet([f"_to_block(s, {size})"], values, where)
