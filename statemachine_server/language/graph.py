"""A spec's whole machine, the lifecycle plus its protocol states, as one picture.

The machine is declared with ``transitions`` (a hierarchical machine: the spec's
protocol states are children of the lifecycle's ``reading``), from the same data
connections run: :data:`~statemachine_server.core.lifecycle.TRANSITIONS` and the
``goto`` edges the compiler found (:attr:`~.runtime.Program.transitions`). It is
only declared and drawn here, never triggered: connections follow compiled dicts.
"""

from __future__ import annotations

from typing import Any

from ..core import lifecycle
from .compile import program_of
from .model import Spec

__all__ = ["declare", "draw"]

_SEP = "_"  # transitions' default separator for nested states


def declare(spec: Spec, model: Any = None, **kw: Any) -> Any:
    """The spec's whole machine as a ``transitions`` (graph) machine."""
    # Imported only to draw: serving a spec does not pay for transitions' import.
    from transitions.extensions import HierarchicalGraphMachine

    program = program_of(spec)
    reading: Any = lifecycle.READING
    if spec.states:
        reading = {"name": lifecycle.READING, "children": list(spec.states),
                   "initial": program.initial}  # fmt: skip
    states = [reading if s == lifecycle.READING else s for s in lifecycle.STATES]
    transitions = [dict(t) for t in lifecycle.TRANSITIONS]
    for source, dest, label in program.transitions:
        transitions.append({
            "trigger": label,
            "source": f"{lifecycle.READING}{_SEP}{source}",
            "dest": f"{lifecycle.READING}{_SEP}{dest}",
        })  # fmt: skip
    return HierarchicalGraphMachine(
        model=model,
        states=states,
        transitions=transitions,
        initial=lifecycle.ACCEPTING,
        auto_transitions=False,
        **kw,
    )


def draw(spec: Spec, fmt: str = "mermaid") -> str:
    """The spec's machine as Mermaid (default) or Graphviz DOT source."""

    class _Model:
        pass

    if fmt == "dot":
        return _dot(declare(spec), spec)
    model = _Model()
    declare(spec, model, graph_engine="mermaid", title=f"{spec.server.name}")
    source = str(model.get_graph().draw(None)).rstrip()  # type: ignore[attr-defined]
    notes = [
        f"  note right of {state}: postpones {', '.join(sorted(events))}"
        for state, events in lifecycle.POSTPONED.items()
    ]
    return "\n".join([source, *notes]) + "\n"


def _dot(machine: Any, spec: Spec) -> str:
    # DOT written from the declared machine's own events: no Graphviz package needed.
    def node(name: str) -> str:
        return '"' + name.replace('"', r"\"") + '"'

    lines = [f"digraph {node(spec.server.name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    if spec.states:
        lines.append(f"  subgraph cluster_{lifecycle.READING} {{")
        lines.append(f"    label={node(lifecycle.READING)};")
        for state in spec.states:
            lines.append(f"    {node(lifecycle.READING + _SEP + state)} [label={node(state)}];")
        lines.append("  }")
    edges: dict[tuple[str, str], list[str]] = {}
    for name, event in machine.events.items():
        for source, rules in event.transitions.items():
            for rule in rules:
                labels = edges.setdefault((source, rule.dest or source), [])
                if name not in labels:
                    labels.append(name)
    for (source, dest), labels in edges.items():
        lines.append(f"  {node(source)} -> {node(dest)} [label={node(' | '.join(labels))}];")
    lines.append(f"  start [shape=point]; start -> {node(lifecycle.ACCEPTING)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
