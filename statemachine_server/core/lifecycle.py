"""The connection lifecycle: every transition rule, as data, in one place.

Theory of operation
-------------------
Each connection is a session whose lifecycle is this finite-state machine. Kernel
events (queued, FIFO) drive it; the rules below say, for each state and event,
which state comes next and whether the event is handled now or *postponed*.

States:

``accepting``
    The socket is accepted but the session is not admitted yet (the server is at its
    connection limit, POE's ``Concurrency``). Reading is paused.
``reading``
    Ready: each ``input`` event goes to the handler at once, and so does each
    *named* event (one of the application's own, posted by name). A spec's
    protocol states are phases of ``reading``.
``working``
    Chunked work is in progress: ``work`` started it, the kernel steps it in
    slices between ticks (:mod:`statemachine_server.work`), and ``done`` (it
    returned) or ``work_failed`` (it raised, timed out or was cancelled, and the
    session asked to hear of that) ends it. Input is postponed.
``replying``
    Output is backed up past the high-water mark: the client is not reading its
    replies. Socket reading is paused and input is postponed until the backlog
    drains below the low-water mark (``output_low``), POE's HighMark/LowMark.
``closing``
    A close was asked for (by the handler, end of input, an error, a timeout or
    shutdown). Further input is dropped; replies already promised are flushed; then
    the socket is closed.
``closed``
    The socket is gone. The session is freed once its last queued event is handled.

Postponing (gen_statem's ``postpone``): an event that the current state defers is
kept, in order, and replayed as soon as the session is back in ``reading``, before
any event that arrived after it. So input is never dropped nor reordered, and on
end of input (``eof`` is queued behind the last line) every line already received
is answered before the connection closes.

An event with no rule in the current state is ignored (and traced): e.g. ``input``
queued behind a ``close`` is dropped on purpose.

Why a compiled table: ``transitions`` declares, validates and draws this machine,
but one of its triggers costs ~15-20 us and ``add_model`` slows as models pile up.
The per-message path instead looks the rule up in :data:`TABLE`, built from the
very same ``transitions`` machine at import time, so the picture, the checks and
the runtime cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from transitions import Machine

__all__ = [
    "EVENTS",
    "FAST",
    "NAMED",
    "POSTPONE",
    "POSTPONED",
    "STATES",
    "STAY",
    "TABLE",
    "TRANSITIONS",
    "Step",
    "draw",
    "machine",
]

# States. Plain interned strings: compared by identity on the hot path.
ACCEPTING: Final = "accepting"
READING: Final = "reading"
WORKING: Final = "working"
REPLYING: Final = "replying"
CLOSING: Final = "closing"
CLOSED: Final = "closed"
STATES: Final = (ACCEPTING, READING, WORKING, REPLYING, CLOSING, CLOSED)

# Events.
CONNECTED: Final = "connected"  # admitted: the handler's on_connected runs
INPUT: Final = "input"  # one record from the filter
WORK: Final = "work"  # chunked work starts
DONE: Final = "done"  # chunked work returned
WORK_FAILED: Final = "work_failed"  # ... raised, timed out or was cancelled
OUTPUT_HIGH: Final = "output_high"  # transport buffer passed the high-water mark
OUTPUT_LOW: Final = "output_low"  # ... and drained below the low-water mark
FLUSHED: Final = "flushed"  # every reply so far has left our buffers
EOF: Final = "eof"  # the peer half-closed: no more input
CLOSE: Final = "close"  # close, gracefully (handler, shutdown)
TIMEOUT: Final = "timeout"  # a connection timer ran out
ERROR: Final = "error"  # a handler raised, or the peer broke the framing
OVERFLOW: Final = "overflow"  # replies unread past max_output: the socket was aborted
CLOSED_EVENT: Final = "closed"  # the socket is gone (connection_lost)
# Stands for every event of the application's own, posted by name (a spec's
# ``post``, a state timeout, ``session.post("tick")``): any event not listed here.
NAMED: Final = "named"
EVENTS: Final = (
    CONNECTED, INPUT, WORK, DONE, WORK_FAILED, OUTPUT_HIGH, OUTPUT_LOW, FLUSHED,
    EOF, CLOSE, TIMEOUT, ERROR, OVERFLOW, CLOSED_EVENT, NAMED,
)  # fmt: skip

_LIVE = [ACCEPTING, READING, WORKING, REPLYING]
_OPEN = [*_LIVE, CLOSING]

#: Every rule, in the ``transitions`` format: the single source of truth.
TRANSITIONS: Final[list[dict[str, object]]] = [
    {"trigger": CONNECTED, "source": ACCEPTING, "dest": READING},
    {"trigger": INPUT, "source": READING, "dest": READING},
    {"trigger": NAMED, "source": READING, "dest": READING},
    {"trigger": WORK, "source": READING, "dest": WORKING},
    {"trigger": DONE, "source": WORKING, "dest": READING},
    {"trigger": WORK_FAILED, "source": WORKING, "dest": READING},
    {"trigger": OUTPUT_HIGH, "source": READING, "dest": REPLYING},
    # While working, backpressure pauses reading (and later the job) in place.
    {"trigger": OUTPUT_HIGH, "source": WORKING, "dest": WORKING},
    {"trigger": OUTPUT_LOW, "source": REPLYING, "dest": READING},
    # A backlog that drains after the state already moved on needs no change.
    {"trigger": OUTPUT_LOW, "source": [READING, WORKING], "dest": "="},
    {"trigger": FLUSHED, "source": [READING, WORKING, REPLYING], "dest": "="},
    {"trigger": EOF, "source": [ACCEPTING, READING], "dest": CLOSING},
    {"trigger": CLOSE, "source": [ACCEPTING, READING], "dest": CLOSING},
    {"trigger": TIMEOUT, "source": _LIVE, "dest": CLOSING},
    {"trigger": ERROR, "source": _OPEN, "dest": CLOSING},
    # The connection aborted its socket: nothing is left to flush or to handle.
    {"trigger": OVERFLOW, "source": _LIVE, "dest": CLOSING},
    {"trigger": OVERFLOW, "source": CLOSING, "dest": "="},
    {"trigger": CLOSED_EVENT, "source": _OPEN, "dest": CLOSED},
]

#: Events each state defers until the session is back in ``reading``.
POSTPONED: Final[dict[str, frozenset[str]]] = {
    WORKING: frozenset({INPUT, NAMED, EOF, CLOSE}),
    REPLYING: frozenset({INPUT, NAMED, EOF, CLOSE}),
}


class Step(NamedTuple):
    """What one event does in one state: the compiled form of a rule."""

    dest: str
    postpone: bool


def _declare(model: object = None, machine_class: type[Machine] = Machine, **kw: Any) -> Machine:
    return machine_class(
        model=model,
        states=list(STATES),
        transitions=TRANSITIONS,
        initial=ACCEPTING,
        auto_transitions=False,
        **kw,
    )


#: The declared machine (no model: it is never triggered, only read).
machine: Final = _declare()


def _compile(m: Machine) -> dict[str, dict[str, Step]]:
    table: dict[str, dict[str, Step]] = {state: {} for state in STATES}
    for name, event in m.events.items():
        for source, rules in event.transitions.items():
            if len(rules) != 1:
                raise AssertionError(f"lifecycle: {name!r} from {source!r} is ambiguous")
            table[source][name] = Step(rules[0].dest or source, False)
    for state, deferred in POSTPONED.items():
        for name in deferred:
            if name in table[state]:
                raise AssertionError(f"lifecycle: {name!r} in {state!r} both handled and postponed")
            table[state][name] = Step(state, True)
    return table


#: ``TABLE[state][event]``: every rule, compiled.
TABLE: Final = _compile(machine)

#: ``FAST[state][event]``, the same rules in the form the per-message path reads
#: with one lookup and identity tests: :data:`STAY` (handle, state unchanged),
#: :data:`POSTPONE`, or the state to enter. No entry: the event is ignored.
STAY: Final = "="
POSTPONE: Final = "<postpone>"
FAST: Final[dict[str, dict[str, str]]] = {
    state: {
        event: POSTPONE if step.postpone else STAY if step.dest == state else step.dest
        for event, step in rules.items()
    }
    for state, rules in TABLE.items()
}


def draw() -> str:
    """The lifecycle as a Mermaid state diagram (no Graphviz needed)."""
    from transitions.extensions import GraphMachine

    class _Model:
        pass

    model = _Model()
    _declare(model, GraphMachine, graph_engine="mermaid", title="connection lifecycle")
    source = str(model.get_graph().draw(None)).rstrip()  # type: ignore[attr-defined]
    # Postponing is ours, not transitions': add it to the picture as notes.
    notes = [
        f"  note right of {state}: postpones {', '.join(sorted(events))}"
        for state, events in POSTPONED.items()
    ]
    return "\n".join([source, *notes]) + "\n"
