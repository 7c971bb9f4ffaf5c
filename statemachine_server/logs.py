"""The server's logs: how its diagnostics and its spec's log lines are written, and what they hide.

Two streams, kept apart so that a spec's log can be piped on its own:

* **diagnostics**, the server's own (Python :mod:`logging`, logger
  ``statemachine_server``): stderr, at ``--log-level`` (warning by default);
* **log lines**, what a spec's ``log`` actions write: stdout, through the
  :class:`~statemachine_server.console.ConsoleLog` (one write per kernel tick,
  never blocking the server).

Each comes in two formats. ``text``: a diagnostic is ``TIME LEVEL message``, a log
line is the template's text exactly as it renders, nothing added (it costs
nothing per line; ``benchmarks/micro/path.py`` measures it). ``json``: one JSON
object per line for both, with ``time``, ``level``, ``logger`` (``statemachine_server``
or ``spec``), ``message``, and ``session`` and ``state`` where there is one. A
JSON log line is the text line (cleaned and cut as :func:`~.console.clean` does)
as its ``message``: the format is chosen when the spec is loaded, and its ``log``
actions compile to append ``(time, session id, state, text)`` instead of the
text (:class:`LogOps`), turned into JSON when the tick's lines are written.

Time is UTC, ISO 8601 with milliseconds and a ``Z`` (``2026-12-05T10:11:12.345Z``):
one clock for servers in several zones, sortable as text.

Redaction (``server.log.redact``, as gen_statem's ``format_status`` hides a
process's secrets from its crash reports): a ``log`` template's field that reads a
redacted heap name is written as ``[redacted]``, decided when the template is
compiled (:meth:`LogOps.template`); a diagnostic that shows a session's heap
(handler errors, at debug level) shows ``[redacted]`` for those names
(:func:`shown_heap`).
"""

from __future__ import annotations

import ast
import json
import logging
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from json.encoder import encode_basestring as _string  # a str as JSON, in C
from typing import Any, TextIO

__all__ = [
    "CLOCK", "FORMATS", "LEVELS", "REDACTED", "JSONFormatter", "LogOps", "TextFormatter",
    "configure", "iso_time", "json_line", "redacted_template", "shown_heap", "spec_line",
]  # fmt: skip

#: ``--log-level``'s names, most detailed first.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR}  # fmt: skip
#: ``--log-format`` and ``server.log.format``.
FORMATS = ("text", "json")
#: What a redacted value is written as.
REDACTED = "[redacted]"
#: The name generated JSON-mode log ops call the clock by (``time.time``).
CLOCK = "_now"
#: The logger name of a spec's log lines in JSON.
SPEC_LOGGER = "spec"
# A heap value longer than this, as JSON, is cut in a diagnostic: a report must
# stay readable when the heap holds a 64 KiB line or a large map.
_HEAP_VALUE = 200

# The last second and millisecond written (each one tuple: the watchdog's thread
# logs too). The lines of a tick mostly share their millisecond.
_second: tuple[int, str] = (-1, "")
_milli: tuple[int, str] = (-1, "")


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as ``2026-12-05T10:11:12.345Z``."""
    global _second, _milli
    milli = int(t * 1000)
    last = _milli
    if last[0] == milli:
        return last[1]
    whole, fraction = divmod(milli, 1000)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    text = f"{second[1]}.{fraction:03d}Z"
    _milli = (milli, text)
    return text


def json_line(fields: Mapping[str, Any]) -> str:
    """One JSON object on one line: JSON escapes newlines and control characters;
    other text stays UTF-8; what JSON cannot hold is written as its ``str()``."""
    return json.dumps(fields, ensure_ascii=False, default=str)


def spec_line(entry: Any) -> str:
    """A spec's log line as one JSON object. ``entry`` is what a JSON-mode op
    appends, ``(time, session id, state, text)``, or text written with
    ``ConsoleLog.write`` (a line of no session, timed now); its text is clean
    already (``console.clean``). Written out rather than with ``json.dumps``: a
    log line is made per message, and this costs a third of a dict and dumps."""
    if entry.__class__ is not tuple:
        return (f'{{"time": "{iso_time(time.time())}", "level": "info", "logger": "spec", '
                f'"message": {_string(str(entry))}}}')  # fmt: skip
    t, session, state, text = entry
    state = "null" if state is None else _string(str(state))
    return (f'{{"time": "{iso_time(t)}", "level": "info", "logger": "spec", "message": '
            f'{_string(text)}, "session": {int(session)}, "state": {state}}}')  # fmt: skip


# -- redaction -------------------------------------------------------------------------


def _reads(field: str, redact: Collection[str]) -> bool:
    """Whether the template field ``field`` reads a name of ``redact`` (``NAME``:
    ``heap.NAME``; ``server.NAME``). A field that does not parse is not redacted:
    the template compiler reports it."""
    try:
        tree = ast.parse("(" + field + "\n)", mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            ns, key = node.value.id, node.attr
            if (ns == "heap" and key in redact) or (ns == "server" and f"server.{key}" in redact):
                return True
    return False


def redacted_template(
    parsed: Iterable[tuple[str, str | None, int]], redact: Collection[str]
) -> str | None:
    """A template, as the expression compiler splits it (literal text, field,
    offset), with each field that reads a redacted name replaced by ``[redacted]``:
    the op never reads the value. None: no field does (the template stays as is).

    The rule is the simplest that holds: any field whose expression names a
    redacted heap value, whatever it computes from it (``{len(heap.password)}``
    too). A value copied to another name (``set``, a ``foreach`` variable) is that
    name's, and shown unless that name is redacted as well.
    """
    out: list[str] = []
    hidden = False
    for lit, field, _offset in parsed:
        out.append(lit.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if _reads(field, redact):
            out.append(REDACTED)
            hidden = True
        else:
            out.append("{" + field + "}")
    return "".join(out) if hidden else None


class LogOps:
    """How a spec's ``log`` actions compile, as its ``server.log`` says: the
    statement each becomes, text or JSON, its redacted fields hidden.

    Args:
        settings: the spec's ``server.log``.
        states: whether the spec declares protocol states (the JSON ``state``).
        write: the name generated code calls the console's writer by.
        split: the template splitter (``expressions.split_template``: the
            language is a layer above this module).
    """

    __slots__ = ("enabled", "json", "redact", "split", "states", "write")

    def __init__(
        self,
        settings: Any,
        states: bool,
        write: str,
        split: Callable[[str], Iterable[tuple[str, str | None, int]]],
    ):
        self.enabled: bool = settings.enabled
        self.json = settings.format == "json"
        self.redact = frozenset(settings.redact)
        self.states = states
        self.write = write
        self.split = split

    def template(self, text: str) -> str | None:
        """``text`` with the fields that read a redacted name written as
        ``[redacted]`` (:func:`redacted_template`); None when it has none, or
        does not parse (the template compiler reports that)."""
        if not self.redact:
            return None
        try:
            return redacted_template(self.split(text), self.redact)
        except ValueError:
            return None

    def call(self, expr: str, values: dict[str, Any]) -> str:
        """The statement that writes the line whose expression is ``expr``: the
        text itself, or in JSON format ``(time, session id, state, text)``, its
        state the protocol state in a spec with ``states``, else the lifecycle's
        (the console makes it JSON when it writes the tick's lines)."""
        if not self.json:
            return f"{self.write}({expr})"
        values[CLOCK] = time.time
        state = "s.protocol_state" if self.states else "s.state"
        return f"{self.write}(({CLOCK}(), s.id, {state}, {expr}))"

    def statement(
        self,
        text: str,
        values: dict[str, Any],
        compile: Callable[[str, dict[str, Any]], str | None],
    ) -> str | None:
        """The statement of the action ``log: text``; None when logs are off or
        the template has an error. ``compile(template, values)`` gives a
        template's expression, or None (its error reported). A template with
        redacted fields is compiled as written first, only to be checked: its
        errors are where the spec has them."""
        shown = self.template(text)
        if shown is not None and compile(text, {}) is None:
            return None
        expr = compile(shown or text, values)
        if expr is None or not self.enabled:
            return None  # server.log.enabled: false - no client data in the console
        return self.call(expr, values)


def shown_heap(heap: Mapping[str, Any], redact: Collection[str]) -> dict[str, Any]:
    """A session's heap as a diagnostic shows it: redacted names as ``[redacted]``,
    long values cut (``redact`` as ``server.log.redact``: the session's names are
    the plain ones)."""
    shown: dict[str, Any] = {}
    for name, value in heap.items():
        if name in redact:
            shown[name] = REDACTED
            continue
        if isinstance(value, bool | int | float) or value is None:
            shown[name] = value
            continue
        text = value if isinstance(value, str) else json_line(value)
        if len(text) > _HEAP_VALUE:
            shown[name] = text[: _HEAP_VALUE - 3] + "..."
        else:
            shown[name] = value
    return shown


# -- diagnostics -----------------------------------------------------------------------


class _Formatter(logging.Formatter):
    """What both formats share: the session's heap, shown only at debug level."""

    def __init__(self, redact: Collection[str] = (), show_heap: bool = False):
        super().__init__()
        self.redact = frozenset(redact)
        self.show_heap = show_heap

    def heap(self, record: logging.LogRecord) -> dict[str, Any] | None:
        heap = getattr(record, "heap", None)
        if not self.show_heap or not isinstance(heap, Mapping):
            return None
        return shown_heap(heap, self.redact)


class TextFormatter(_Formatter):
    """``2026-12-05T10:11:12.345Z WARNING message``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record.created)} {record.levelname} {record.getMessage()}"
        heap = self.heap(record)
        if heap is not None:
            line += f" (heap: {json_line(heap)})"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JSONFormatter(_Formatter):
    """One JSON object per record (see the module's docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session", "state"):
            value = getattr(record, key, None)
            if value is not None:
                fields[key] = value
        heap = self.heap(record)
        if heap is not None:
            fields["heap"] = heap
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json_line(fields)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (and replaces when called again)."""


def configure(
    level: str = "warning",
    fmt: str = "text",
    *,
    redact: Collection[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr)
    in format ``fmt``; called again, it replaces what it set up before.

    Args:
        level: one of :data:`LEVELS`.
        fmt: one of :data:`FORMATS`.
        redact: ``server.log.redact``, for the heaps that debug reports show.
        stream: where to write (stderr by default).
    """
    number = LEVELS[level]
    show_heap = number <= logging.DEBUG
    formatter = (JSONFormatter if fmt == "json" else TextFormatter)(redact, show_heap)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
