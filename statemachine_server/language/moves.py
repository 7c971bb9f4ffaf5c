"""The ``goto`` action, compiled: the checks on its target, the edge for the graph,
and the op, inlined as one assignment where nothing runs on the way.

A part of :class:`~.actions.ActionCompiler` (a base class of it, as
:mod:`.outside` is), kept apart because a goto is the one action the graph
checks follow: where it leads is recorded here for them (``edges``,
``enter_gotos``). With metrics served, each goto is counted by the state it
leaves (:meth:`~.runtime.Runtime.goto_site`); without, its code is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .inline import Inliner, Snippet
from .model import Goto
from .report import Report, SpecPath
from .runtime import Op, Runtime

__all__ = ["Moves"]

#: Where actions live: a state's name, or None for the top-level handlers (actions.Scope).
_Scope = str | None


class Moves:
    """``goto``, compiled (see :mod:`.actions`)."""

    report: Report
    rt: Runtime
    inline: Inliner
    has_states: bool
    states: Mapping[str, Any]  # the spec's states, by name
    metered: bool
    bad_gotos: bool
    edges: list[tuple[_Scope, str, str]]
    enter_gotos: dict[str, set[str]]
    hint: Callable[..., str]
    _snippet: Callable[[list[str], dict[str, Any], SpecPath], Op | None]

    def _goto_op(self, a: Goto, where: SpecPath, scope: _Scope, label: str, p: str) -> Op | None:
        """The op of a goto in an action list, inlined by the handler around it."""
        if self._goto(a, where, scope, label) is None:
            return None
        rt = self.rt
        values: dict[str, Any] = {"_rt": rt, f"{p}g": a.state}
        call = [f"_rt.goto(s, {p}g)"]
        count: list[str] = []
        if self.metered:  # counted by the state it leaves, where it is written
            values[f"{p}c"] = rt.goto_site(a.state, label)
            call = [f"_rt.counted_goto(s, {p}g, {p}c)"]
            count = [f"{p}c[s.protocol_state] += 1"]

        def late(target: str = a.state) -> list[str]:
            # Nothing to run or cancel on the way (no exit actions, no state
            # timeouts, no enter actions in the target): just the new state.
            if any(rt.exit.values()) or rt.timeout or rt.enter.get(target):
                return call
            return [*count, f"s.protocol_state = {p}g"]

        op = self._snippet(call, values, where)
        assert op is not None
        snippet: Snippet = self.inline.ops[op]
        snippet.late = late
        return op

    def _goto(self, a: Goto, where: SpecPath, scope: _Scope, label: str) -> Op | None:
        """A goto's checks and graph edge, and an op of its own (enter actions)."""
        if not self.has_states:
            self.report("goto needs protocol states: add `states:`", (*where, "state"))
            return None
        if a.state not in self.states:
            self.report(f"goto: no state {a.state!r}{self.hint(a.state)}", (*where, "state"))
            self.bad_gotos = True
            return None
        if label == "exit":
            self.report("goto is not allowed in exit actions (the state is being left)", where)
            return None
        if label == "enter":
            assert scope is not None
            self.enter_gotos.setdefault(scope, set()).add(a.state)
        self.edges.append((scope, a.state, label))
        target, rt = a.state, self.rt
        if self.metered:
            site = rt.goto_site(target, label)
            return lambda s, i, m: rt.counted_goto(s, target, site)
        return lambda s, i, m: rt.goto(s, target)
