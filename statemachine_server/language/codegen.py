"""The echo shape's fast path: a spec's handlers generated as Python source, one function each.

A spec with no states, no named events, and handlers that are plain lists of
``reply`` and ``log`` (the echo server) compiles here instead of to lists of
ops (:mod:`.actions`), its templates checked here too: each handler is one
generated function with its actions inlined, ``s.put(...)`` or
:data:`~.runtime.WRITE` of one f-string (see
:class:`~.templates.TemplateCode` for why spec text is never code), and the
input handler also becomes a loop over one read's records (``INPUT_BATCH``). A
call costs about 50 ns here, and the op-list handler made six per line; this
keeps the spec within a few percent of the same server written with the Python
API (``benchmarks/scenarios/spec_vs_python.py``). The source becomes functions
in :mod:`.generated`, so ``check --show-code`` prints it and tracebacks show it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.lifecycle import CLOSED
from ..logs import LogOps
from ..net.connection import INPUT_BATCH
from .expressions import Names, split_template
from .generated import Sources
from .model import Log, Reply, Spec
from .report import Report, inside
from .runtime import WRITE, Program, Runtime
from .templates import is_identity, template_code

__all__ = ["FAST_EVENTS", "fast_path", "fits"]

#: The events a fast-path spec may handle.
FAST_EVENTS = ("connected", "input", "disconnected")

# Connection.put(i), inlined (a call and its tuple of records fewer per line): keep
# it in step with put(); tests/test_spec.py checks the two behave alike.
_PUT_RECORD = [
    "if s.state is not _CLOSED:",
    "    s.outbox.append(i)",
    "    if not s.dirty:",
    "        s.kernel.mark_dirty(s)",
]
# Connection.put(i) in a loop over records of a connection in ``reading``: see
# _lines. Marking it before the first reply is harmless (the flush of the tick
# finds the replies, or nothing).
_PUT_BEFORE = [
    "_out = s.outbox",
    "if not s.dirty:",
    "    s.kernel.mark_dirty(s)",
]
_BATCH = """def _f(s, records):
    n = 0
{before}    try:
        for i in records:
{lines}            n += 1
    except _Exception as exc:
        return n, exc
    return None
"""


def fits(spec: Spec, named: set[str]) -> bool:
    """Whether ``spec`` has the echo shape (``named``: its named events)."""
    if spec.states or named or spec.heap:
        return False
    for event, items in spec.handlers.items():
        if event not in FAST_EVENTS:
            return False
        if not all(isinstance(a, Reply | Log) and isinstance(a.text, str) for a in items):
            return False
    return True


def fast_path(
    spec: Spec,
    program: Program,
    sources: Sources,
    report: Report,
    *,
    logs: bool,
    structured: bool,
    input_text: Callable[[Any], str] | None,
) -> None:
    """Generate ``spec``'s handlers into ``program`` (``spec`` :func:`fits`).

    A template's error is reported, at its node, and its handler not generated
    (the program will not run).

    Args:
        logs: whether ``log`` actions write (``server.log.enabled``).
        structured: whether records are decoded values (json, msgpack).
        input_text: how ``{input}`` is written for structured records (None: text).
    """
    rt: Runtime = program.runtime
    for event in FAST_EVENTS:
        has_input = event == "input"
        values: dict[str, Any] = {"_CLOSED": CLOSED, WRITE: rt.write}
        values["_Exception"] = Exception  # the generated code has no builtins
        lines = _lines(
            spec, event, values, logs, structured, input_text, report, extra=rt.functions()
        )
        if not lines:
            continue  # no actions, or an error reported
        source = "def _f(s, i=None, m=None):\n" + _indent(lines, 1)
        function = sources.function(source, values, f"handlers.{event}")
        rt.generated.append(function.__globals__)
        program.handlers[event] = function
        if has_input and not structured:
            # The same actions in a loop over a read's records (see INPUT_BATCH).
            # Structured input goes through take_invalid first: it keeps the loop.
            before: list[str] = []
            lines = _lines(
                spec, event, values, logs, structured, input_text, report, before, rt.functions()
            )
            assert lines is not None  # its templates compiled above
            source = _BATCH.format(before=_indent(before, 1), lines=_indent(lines, 3))
            batch = sources.function(source, values, "handlers.input (batch)")
            rt.generated.append(batch.__globals__)
            program.named[INPUT_BATCH] = batch


def _lines(
    spec: Spec,
    event: str,
    values: dict[str, Any],
    logs: bool,
    structured: bool,
    input_text: Callable[[Any], str] | None,
    report: Report,
    before: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[str] | None:
    # The handler's actions as lines of code; with ``before`` (the batch), what a
    # loop over one read's records cannot change is done once, before it: the
    # loop runs only in ``reading`` and its replies and logs never change the
    # connection's state, so put() needs no state test and marks the
    # connection once, and templates render their per-connection parts once.
    has_input = event == "input"
    log = LogOps(spec.server.log, False, WRITE, split_template)  # the echo shape has no states
    lines: list[str] = []
    for n, action in enumerate(spec.handlers.get(event, [])):
        assert isinstance(action, Reply | Log)  # checked by fits()
        assert isinstance(action.text, str)  # checked by fits()
        if isinstance(action, Reply) and has_input and is_identity(action.text):
            # The record itself; the filter frames it.
            if before is None:
                lines.extend(_PUT_RECORD)
            else:
                if _PUT_BEFORE[0] not in before:
                    before.extend(_PUT_BEFORE)
                lines.append("_out.append(i)")
            continue
        is_log = isinstance(action, Log)
        silent = is_log and not logs  # compiled only to be checked
        shown = log.template(action.text) if is_log else None
        try:
            names = Names(has_input=has_input, text_input=input_text is None, extra=extra or {})
            if shown is not None:  # checked as written: errors where the spec has them
                template_code(action.text, {}, input_text=input_text, names=names)
            code = template_code(
                shown or action.text, {} if silent else values, prefix=f"s{n}_",
                input_text=input_text, raw=structured and not is_log, hoist=before, names=names,
            )  # fmt: skip
        except ValueError as exc:
            report(str(exc), inside(("handlers", event, n, "text"), exc))
            return None
        if silent:
            continue  # server.log.enabled: false - no client data in the console
        lines.append(log.call(code.expr, values) if is_log else f"s.put({code.expr})")
    return lines


def _indent(lines: list[str], level: int) -> str:
    return "".join("    " * level + line + "\n" for line in lines)
