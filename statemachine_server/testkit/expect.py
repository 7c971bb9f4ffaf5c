"""What a test expects of a record, and a failure that says what came instead.

An expectation is text (the record is exactly that), a compiled regular
expression (``re.search`` finds it in the record's text: anchor it with ``^``
and ``$`` to match whole lines), or, for a JSON or MessagePack server, a value
(a dict, a list, a number...) the decoded record equals. Text expected of a
structured record is read as JSON when it parses, so ``'{"ok": true}'`` and
``{"ok": True}`` expect the same record.

A failure is an :class:`AssertionError` (pytest shows it as any assert), whose
message puts the expected and the received record one above the other, with
the last records the client received before it and, where the kit could tell,
the spec rule that answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .codec import show
from .observe import Point

__all__ = ["ExpectationFailed", "describe", "matches"]

#: How many records before the failing one a failure shows.
CONTEXT = 5


class ExpectationFailed(AssertionError):
    """A client did not receive what the test expected (or no close, or nothing)."""


def matches(expected: Any, record: Any) -> bool:
    """Whether ``record`` is what ``expected`` describes (see the module docstring)."""
    if isinstance(expected, re.Pattern):
        return expected.search(record if isinstance(record, str) else show(record)) is not None
    if isinstance(expected, str) and not isinstance(record, str):
        try:
            return bool(json.loads(expected) == record)
        except ValueError:
            return show(record) == expected
    return bool(expected == record)


def describe(
    who: str,
    *,
    expected: str,
    received: str,
    history: Sequence[tuple[Any, Point | None]],
    answered: Point | None = None,
    state: str | None = None,
    hint: str = "",
    where: str = "",
) -> str:
    """A failure's message.

    Args:
        who: the client, as the test named it.
        expected: what was expected, shown.
        received: what came instead, shown (or why nothing did).
        history: the client's records received before this one, oldest first.
        answered: the rule that answered, if known.
        state: the client's session's protocol state, if known.
        hint: one more line, if there is something to suggest.
        where: where the expectation was written (``FILE:LINE`` of a script).
    """
    head = f"{where}: " if where else ""
    lines = [
        f"{head}{who} did not receive what was expected",
        f"  expected: {expected}",
        f"  received: {received}",
    ]
    if answered is not None:
        lines.append(f"  answered by: {answered}")
    if state is not None:
        lines.append(f"  protocol state now: {state}")
    if history:
        shown = history[-CONTEXT:]
        skipped = len(history) - len(shown)
        lines.append(
            f"  last records {who} received"
            + (f" ({skipped} before these)" if skipped else "")
            + ":"
        )
        lines += [f"    {show(record)}" for record, _ in shown]
    else:
        lines.append(f"  {who} had received nothing before")
    if hint:
        lines.append(f"  {hint}")
    return "\n".join(lines)
