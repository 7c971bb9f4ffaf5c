"""Handlers generated as one Python function each: rules tested and actions inlined.

Each action the compiler turns into an op (:mod:`.actions`) may also leave a
:class:`Snippet`: the statements that do the same, as source of ``s``, ``i``
and ``m`` plus the values its names are bound to. A handler's rules then become
one generated function (:func:`Inliner.handler`): each rule's test, its guard,
and its actions' statements in a row, so a message costs one call, not one per
rule and per action (an op call here is about 0.1 us, and a protocol spec runs
a dozen per command). Actions without a snippet (``call``, ``work``,
``switch_filter``...) are called as their ops, from the same function.

As everywhere in the generated code (:mod:`.templates`), nothing from the spec
is source: its text, names and numbers are values bound to generated names, and
the source is made of fixed fragments. Functions are built by
:class:`~.generated.Sources`, so ``check --show-code`` prints them and a
traceback shows the generated line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .generated import Sources
from .report import SpecPath, dotted
from .runtime import INPUT_EVENTS, WRITE, Op, Rules, Runtime, always

__all__ = ["Inliner", "Snippet", "by_state_table"]


class Snippet:
    """Statements of ``s``, ``i`` and ``m``, and the values their names are bound to.

    ``test`` snippets (a rule's condition) leave ``m``: the match dict, or None.
    """

    __slots__ = ("late", "lines", "put", "values")

    def __init__(
        self,
        lines: list[str],
        values: dict[str, Any],
        late: Callable[[], list[str]] | None = None,
        put: tuple[list[str], str] | None = None,
    ):
        self.lines = lines
        self.values = values
        #: A reply: the statements that compute its record, and the local that
        #: holds it; replies in a row are put together (:meth:`Inliner.body`).
        self.put = put
        #: Gives the lines to inline once the whole spec is compiled (a goto's
        #: depend on every state's enter, exit and timeout actions).
        self.late = late


class Inliner:
    """The snippets of one spec's ops and conditions, and the functions made of them."""

    def __init__(self, sources: Sources, rt: Runtime):
        self.sources = sources
        self.rt = rt
        self.ops: dict[Any, Snippet] = {}
        self.tests: dict[Any, Snippet] = {}
        self.count = 0

    def prefix(self) -> str:
        """A prefix no other snippet's names use."""
        self.count += 1
        return f"_q{self.count}_"

    def op(self, snippet: Snippet, where: SpecPath) -> Op:
        """``snippet`` as an op of its own (where it is not inlined: enter actions,
        continuations, outbound clients' handlers), compiled when first called:
        most snippets are only ever inlined, and a spec of 10,000 states would
        otherwise compile 20,000 functions nothing calls."""
        rt, sources = self.rt, self.sources

        def make() -> Op:
            source = "def _f(s, i, m):\n" + _indent(snippet.lines or ["pass"], 1)
            function: Op = sources.function(source, snippet.values, dotted(where))
            namespace = function.__globals__  # type: ignore[attr-defined]
            rt.generated.append(namespace)
            if WRITE in namespace:
                namespace[WRITE] = rt.write  # bound by now (Runtime.bind)
            return function

        op = _Lazy(make)
        self.ops[op] = snippet
        return op

    def body(self, ops: list[Op], values: dict[str, Any]) -> list[str]:
        """The statements that run ``ops`` in order: snippets inlined, other ops called."""
        lines: list[str] = []
        records: list[str] = []  # replies in a row, not put yet
        for op in ops:
            snippet = self.ops.get(op)
            if snippet is not None and snippet.put is not None:
                values.update(snippet.values)
                computed, record = snippet.put
                lines.extend(computed)
                records.append(record)
                continue
            if records:
                lines += _put(records)
                records = []
            if snippet is not None:
                values.update(snippet.values)
                lines.extend(snippet.late() if snippet.late is not None else snippet.lines)
            else:
                name = f"_op{self.count}_{len(values)}"
                values[name] = op
                lines.append(f"{name}(s, i, m)")
        if records:
            lines += _put(records)
        return lines

    def handler(
        self,
        event: str,
        by_state: dict[str | None, Rules],
        named: set[str],
        where: str,
        raises: bool = False,
    ) -> Callable[..., Any] | None:
        """One event's handler as one function: the rules of the session's
        protocol state (``by_state``; the key None: a spec without states), run as
        :func:`~.runtime.entry` would (the first rule whose test and guard hold
        runs, and no other). With ``raises``, the events its actions raise are
        handled after it (:meth:`~.runtime.Runtime.handled`, inlined)."""
        if not any(by_state.values()):
            return None
        values: dict[str, Any] = {}
        if event in INPUT_EVENTS:
            head = ["def _f(s, i):"]
        elif event in named:
            head = ["def _f(s, i='', *_):", "    if i is None:", "        i = ''"]
        else:
            head = ["def _f(s, *_):", "    i = None"]
        if len(by_state) > _CHAIN:
            # Many states: one function per state, found by a table lookup (a
            # chain of thousands of tests would be slow, and past about 3,000
            # branches Python cannot compile it); each compiled when a session
            # first handles the event in that state (a spec of 10,000 states
            # loads without compiling 10,000 functions).
            table: dict[str | None, Callable[..., Any]] = {}
            for state, rules in by_state.items():
                if rules:
                    table[state] = self._lazy_handler(head, rules, f"{where} in {state}")
            dispatch = by_state_table(table)  # type: ignore[arg-type]
            return self.rt.handled(dispatch) if raises else dispatch
        body: list[str] = []
        if list(by_state) == [None]:
            body = self._rules(by_state[None], values)
        else:
            # The session's protocol state picks the rules: a chain of tests, cheaper
            # than a table lookup and a call for the few states a protocol has.
            word = "if"
            for k, (state, rules) in enumerate(by_state.items()):
                values[f"_st{k}"] = state
                body += [f"{word} s.protocol_state == _st{k}:",
                         *_lines(self._rules(rules, values) or ["pass"], 1)]  # fmt: skip
                word = "elif"
        if raises:
            # Runtime.handled(), inlined: one call fewer per event.
            values.update(_rt=self.rt, _BaseException=BaseException)
            body = [
                "_rt.depth += 1",
                "try:",
                *_lines(body, 1),
                "except _BaseException:",
                "    _rt.forget(s)",
                "    raise",
                "finally:",
                "    _rt.depth -= 1",
                "    if not _rt.depth and _rt.internal and not _rt.draining:",
                "        _rt.drain()",
            ]
        source = "\n".join([*head, *_lines(body, 1)]) + "\n"
        function = self.sources.function(source, values, where)
        self.rt.generated.append(function.__globals__)
        return function

    def _lazy_handler(self, head: list[str], rules: Rules, where: str) -> Callable[..., Any]:
        """One state's handler, its source made now (errors found at load), its
        function compiled when first called."""
        values: dict[str, Any] = {}
        source = "\n".join([*head, *_lines(self._rules(rules, values), 1)]) + "\n"
        sources, rt = self.sources, self.rt
        compiled: list[Callable[..., Any]] = []

        def handle(session: Any, *args: Any) -> Any:
            if not compiled:
                function = sources.function(source, values, where)
                namespace = function.__globals__
                rt.generated.append(namespace)
                if WRITE in namespace:
                    namespace[WRITE] = rt.write  # bound by now (Runtime.bind)
                compiled.append(function)
            return compiled[0](session, *args)

        return handle

    def _rules(self, rules: Rules, values: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        for test, ops in rules:
            body = self.body(ops, values) or ["pass"]
            if test is always:
                lines += ["m = {}", *body, "return"]
                break
            snippet = self.tests.get(test)
            if snippet is not None:
                values.update(snippet.values)
                lines += snippet.lines
            else:
                name = f"_t{self.count}_{len(values)}"
                values[name] = test
                lines.append(f"m = {name}(s, i)")
            lines += ["if m is not None:", *_lines([*body, "return"], 1)]
        return lines


#: Up to this many states, a handler tests the state in a chain of ``if``s.
_CHAIN = 16


def by_state_table(table: dict[str | None, Callable[..., Any] | None]) -> Callable[..., Any]:
    """One handler for many states: a dict lookup by the protocol state (a state
    without rules for the event does nothing)."""
    get = table.get

    def handle_by_state(session: Any, *args: Any) -> Any:
        handler = get(session.protocol_state)
        return None if handler is None else handler(session, *args)

    return handle_by_state


class _Lazy:
    """An op compiled when first called (see :meth:`Inliner.op`)."""

    __slots__ = ("_function", "_make")

    def __init__(self, make: Callable[[], Op]):
        self._make = make
        self._function: Op | None = None

    def __call__(self, s: Any, i: Any, m: dict[str, Any]) -> None:
        function = self._function
        if function is None:
            function = self._function = self._make()
        function(s, i, m)


def _put(records: list[str]) -> list[str]:
    """Connection.put(*records), inlined (see codegen's _PUT_RECORD); one test of
    the state and of ``dirty`` for replies in a row. The names are fixed."""
    add = f"s.outbox.append({records[0]})" if len(records) == 1 else (
        "s.outbox.extend((" + "".join(f"{r}, " for r in records) + "))"
    )  # fmt: skip
    return [
        "if s.state is not _CLOSED:",
        f"    {add}",
        "    if not s.dirty:",
        "        s.kernel.mark_dirty(s)",
    ]


def _lines(lines: list[str], level: int) -> list[str]:
    return ["    " * level + line for line in lines]


def _indent(lines: list[str], level: int) -> str:
    return "".join("    " * level + line + "\n" for line in lines)
