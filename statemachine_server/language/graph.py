"""A spec's whole machine, the lifecycle plus its protocol states, as one picture.

Drawn from the data connections run: the lifecycle's compiled rules
(:data:`~statemachine_server.core.lifecycle.TABLE`) and the ``goto`` edges the
compiler found (:attr:`~.runtime.Program.transitions`). The protocol states are
drawn inside the lifecycle's ``reading``, each under its own name: its node is
``reading_NAME``, which no lifecycle state's node starts with. The top-level
handlers apply in every state, so their gotos are drawn once, from a pseudo-state
``any state``, rather than from each state.

Both formats are written here. Mermaid follows the layout of ``transitions``'
own Mermaid output (that of :func:`~statemachine_server.core.lifecycle.draw`),
but ``transitions`` names a nested state by joining names with its separator,
``_``, and splits names there again: a state ``user_ok`` came out as ``ok``
inside an invented ``user``. :func:`declare` still gives the machine as a
``transitions`` machine, with a separator no state name can hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from msgspec import Struct

from ..core import lifecycle
from .compile import program_of
from .model import Goto, Spec
from .runtime import Program

__all__ = ["declare", "draw"]

#: The separator of :func:`declare`'s nested states: state names are identifiers.
_SEP = "."
#: The pseudo-state the top-level handlers' gotos leave from: not a lifecycle
#: state, and not ``reading_NAME``, so no state's node.
_ANY = "any_state"
_ANY_LABEL = "any state"

#: The node styles of ``transitions``' Mermaid output, as the lifecycle's picture has them.
_MERMAID_STYLES = [
    "classDef s_default fill:white,color:black",
    "classDef s_inactive fill:white,color:black",
    "classDef s_parallel color:black,fill:white",
    "classDef s_active color:red,fill:darksalmon",
    "classDef s_previous color:blue,fill:azure",
]


def declare(spec: Spec, model: Any = None, **kw: Any) -> Any:
    """The spec's whole machine as a ``transitions`` (graph) machine.

    Its protocol states are children of ``reading``, named ``reading.NAME``; the
    top-level handlers' gotos are transitions from every protocol state.
    """
    # Imported only here: serving a spec does not pay for transitions' import.
    from transitions.extensions import HierarchicalGraphMachine
    from transitions.extensions.nesting import NestedState

    class State(NestedState):
        separator = _SEP  # transitions' "_" would split names such as user_ok

    class Machine(HierarchicalGraphMachine):
        state_cls = State

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
    return Machine(
        model=model,
        states=states,
        transitions=transitions,
        initial=lifecycle.ACCEPTING,
        auto_transitions=False,
        **kw,
    )


def draw(spec: Spec, fmt: str = "mermaid") -> str:
    """The spec's machine as Mermaid (default) or Graphviz DOT source."""
    program = program_of(spec)
    edges = _edges(spec, program)
    if fmt == "dot":
        return _dot(spec, edges)
    return _mermaid(spec, program, edges)


# -- the edges ----------------------------------------------------------------------------


def _node(state: str) -> str:
    return f"{lifecycle.READING}_{state}"


def _edges(spec: Spec, program: Program) -> list[tuple[str, str, str]]:
    """(source node, dest node, label), grouped by source in the states' order."""
    edges: list[tuple[str, str, str]] = []
    for state in lifecycle.STATES:
        dests: dict[str, list[str]] = {}
        for event, step in lifecycle.TABLE[state].items():
            if not step.postpone:
                dests.setdefault(step.dest, []).append(event)
        edges += [(state, dest, " | ".join(events)) for dest, events in dests.items()]
        if state == lifecycle.READING:
            edges += _protocol_edges(spec, program)
    return edges


def _protocol_edges(spec: Spec, program: Program) -> list[tuple[str, str, str]]:
    # program.transitions has the top-level gotos from every state: each is
    # drawn once, from _ANY, and is taken out of a state's edge unless the
    # state's own handlers for that event goto there too.
    anywhere: dict[str, list[str]] = {}
    for event, items in spec.handlers.items():
        for dest in _gotos(items):
            events = anywhere.setdefault(dest, [])
            if event not in events:
                events.append(event)
    edges = []
    for source, dest, label in program.transitions:
        handlers = spec.states[source].handlers
        labels = [
            event
            for event in label.split(" | ")
            if event not in anywhere.get(dest, ()) or dest in _gotos(handlers.get(event, []))
        ]
        if labels:
            edges.append((_node(source), _node(dest), " | ".join(labels)))
    edges += [(_ANY, _node(dest), " | ".join(events)) for dest, events in anywhere.items()]
    return edges


def _gotos(items: list[Any]) -> Iterator[str]:
    """The states a list of actions goes to, in rules, work and run included."""
    for item in items:
        if isinstance(item, Goto):
            yield item.state
        elif isinstance(item, Struct):
            for name in item.__struct_fields__:
                value = getattr(item, name)
                if isinstance(value, list):
                    yield from _gotos(value)


# -- the formats --------------------------------------------------------------------------


def _mermaid(spec: Spec, program: Program, edges: list[tuple[str, str, str]]) -> str:
    lines = ["---", spec.server.name, "---", "stateDiagram-v2", "  direction LR"]
    lines += [f"  {style}" for style in _MERMAID_STYLES]
    lines.append("  ")
    for state in lifecycle.STATES:
        active = "active" if state == lifecycle.ACCEPTING else "default"
        lines += [f'  state "{state}" as {state}', f"  Class {state} s_{active}"]
        if state == lifecycle.READING and spec.states:
            lines.append(f"  state {state} {{")
            if program.initial is not None:
                lines.append(f"    [*] --> {_node(program.initial)}")
            lines += [f'    state "{name}" as {_node(name)}' for name in spec.states]
            if any(source == _ANY for source, _, _ in edges):
                lines.append(f'    state "{_ANY_LABEL}" as {_ANY}')
            lines.append("  }")
    lines.append("  ")
    lines += [f"  {source} --> {dest}: {label}" for source, dest, label in edges]
    lines.append(f"  [*] --> {lifecycle.ACCEPTING}")
    lines += [
        f"  note right of {state}: postpones {', '.join(sorted(events))}"
        for state, events in lifecycle.POSTPONED.items()
    ]
    return "\n".join(lines) + "\n"


def _dot(spec: Spec, edges: list[tuple[str, str, str]]) -> str:
    def node(name: str) -> str:
        return '"' + name.replace('"', r"\"") + '"'

    lines = [f"digraph {node(spec.server.name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    if spec.states:
        lines.append(f"  subgraph cluster_{lifecycle.READING} {{")
        lines.append(f"    label={node(lifecycle.READING)};")
        for state in spec.states:
            lines.append(f"    {node(_node(state))} [label={node(state)}];")
        if any(source == _ANY for source, _, _ in edges):
            lines.append(f"    {node(_ANY)} [label={node(_ANY_LABEL)}, style=dashed];")
        lines.append("  }")
    for source, dest, label in edges:
        lines.append(f"  {node(source)} -> {node(dest)} [label={node(label)}];")
    lines.append(f"  start [shape=point]; start -> {node(lifecycle.ACCEPTING)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
