"""Conversation scripts: a test of a spec as the exchange a person would type.

A script is plain text, one step a line, read top to bottom::

    # What a client of the chat server sees.
    spec: ../../specs/chat.yaml
    < Welcome to chat. Your nick?
    > alice
    < /^Hello alice, you are in #lobby/
    [bob]
    < Welcome to chat. Your nick?
    > bob
    @alice < * bob joined #lobby
    ~ 60s
    close

Steps (``docs/testing.md`` has the whole syntax):

========================  ========================================================
``> TEXT``                send a record (``>`` alone: an empty line)
``>> TEXT``               send TEXT as it is, unframed (a part of a record)
``< TEXT``                expect the next record to be exactly TEXT
``< /REGEX/`` (``/i``)    expect the next record to contain a match
``<closed``               expect the server to close the connection
``~ 30s``                 move the clock on (``ms``, ``s``, ``m``, ``h``; bare: seconds)
``open`` / ``close``      connect now (clients connect at their first step) / hang up
``eof``                   end the client's input, and keep reading
``[NAME]``                the steps below are client NAME's
``@NAME STEP``            one step of client NAME
``# ...``                 a comment (blank lines are skipped too)
========================  ========================================================

TEXT in double quotes is a JSON string: ``> "CONNECT\\naccept-version:1.2\\n"``
sends escapes as the characters they stand for (and ``< "/x/"`` is text, not a
regex). For a JSON or MessagePack server, ``< {"ok": true}`` compares the decoded
record with that JSON.

Before the first step, headers say how to run it: ``spec: PATH`` (relative to
the script), ``heap: NAME=VALUE`` (``server.heap``; the value is YAML, and
``{tmp}`` is a fresh folder), ``server: KEY.KEY=VALUE`` (``server:`` settings),
``transport: memory|tcp``, ``clock: virtual|real`` and ``timeout: SECONDS``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import StateMachineServerError

__all__ = [
    "DEFAULT_CLIENT",
    "Script",
    "ScriptError",
    "Step",
    "parse",
    "read_script",
    "render",
]

#: The client a step without ``@NAME`` or ``[NAME]`` belongs to.
DEFAULT_CLIENT = "client"
#: A script is a test, not data: 1 MiB is far more than any.
MAX_SCRIPT_BYTES = 1 << 20

_NAME = r"[A-Za-z0-9_.-]+"
_HEADER = re.compile(r"^(spec|heap|server|transport|clock|timeout):\s*(.*)$")
_BLOCK = re.compile(rf"^\[({_NAME})\]$")
_WHO = re.compile(rf"^@({_NAME})\s+(.*)$")
_REGEX = re.compile(r"^/(.*)/([imsx]*)$")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ScriptError(StateMachineServerError):
    """A script that cannot be read: ``FILE:LINE: what is wrong``."""

    def __init__(self, message: str, file: str, line: int = 0):
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


@dataclass(frozen=True)
class Step:
    """One line of a script.

    Attributes:
        kind: ``send``, ``raw``, ``expect``, ``closed``, ``advance``, ``open``, ``close``
            or ``eof``.
        client: the client it is for.
        value: the text to send, what to expect (text or a compiled regex), or
            the seconds to advance.
        line: its line in the script.
    """

    kind: str
    client: str
    value: Any
    line: int


@dataclass
class Script:
    """A parsed script: its steps, and how to run them."""

    file: str
    steps: list[Step] = field(default_factory=list)
    #: The spec its ``spec:`` header names, relative to the script's folder.
    spec: Path | None = None
    heap: dict[str, str] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    transport: str = "memory"
    clock: str = "virtual"
    timeout: float | None = None

    def where(self, step: Step) -> str:
        return f"{self.file}:{step.line}"


def read_script(path: str | Path) -> Script:
    """Read and parse a script file.

    Raises:
        ScriptError: it cannot be read, or a line is not a step.
    """
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SCRIPT_BYTES + 1)
    except OSError as exc:
        raise ScriptError(f"cannot read script: {exc.strerror or exc}", name) from None
    if len(raw) > MAX_SCRIPT_BYTES:
        raise ScriptError(f"script is larger than {MAX_SCRIPT_BYTES} bytes", name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"script is not UTF-8 (byte {exc.start})", name) from None
    return parse(text, name, Path(path).resolve().parent)


def parse(text: str, file: str = "<script>", base_dir: str | Path | None = None) -> Script:
    """Parse a script's text (``base_dir``: where its ``spec:`` is relative to).

    Raises:
        ScriptError: a line that is not a step or a header, naming its line.
    """
    script = Script(file)
    current = DEFAULT_CLIENT
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER.match(stripped)
        if header is not None and not script.steps:
            _header(script, header[1], header[2].strip(), number, base_dir)
            continue
        block = _BLOCK.match(stripped)
        if block is not None:
            current = block[1]
            continue
        who = _WHO.match(line.lstrip())
        client, body = (who[1], who[2]) if who is not None else (current, line.lstrip())
        script.steps.append(_step(body, client, number, file))
    return script


def _step(body: str, client: str, number: int, file: str) -> Step:
    def fail(message: str) -> ScriptError:
        return ScriptError(message, file, number)

    if body.startswith(">>"):
        return Step("raw", client, _text(body[2:], fail), number)
    if body.startswith(">"):
        return Step("send", client, _text(body[1:], fail), number)
    if body.rstrip().lower() in ("<closed", "<eof"):
        return Step("closed", client, None, number)
    if body.startswith("<"):
        rest = _after_space(body[1:])
        regex = _REGEX.match(rest)
        if regex is not None:
            flags = 0
            for letter in regex[2]:
                flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[letter]
            try:
                return Step("expect", client, re.compile(regex[1], flags), number)
            except re.error as exc:
                raise fail(f"bad regex: {exc}") from None
        return Step("expect", client, _text(body[1:], fail), number)
    if body.startswith("~"):
        duration = _DURATION.match(body[1:].strip())
        if duration is None:
            raise fail(f"expected a duration after ~ (30s, 1.5, 500ms, 2m), not {body[1:]!r}")
        return Step("advance", client, float(duration[1]) * _UNITS[duration[2]], number)
    word = body.strip()
    if word in ("open", "close", "eof"):
        return Step(word, client, None, number)
    raise fail(
        f"not a step: {body!r} (expected > TEXT, >> TEXT, < TEXT, < /REGEX/, <closed, ~ 30s, open, "
        "close, eof, [NAME], @NAME STEP or # comment)"
    )


def _after_space(rest: str) -> str:
    return rest[1:] if rest.startswith(" ") else rest


def _text(rest: str, fail: Any) -> str:
    text = _after_space(rest)
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise fail(f"bad quoted text: {exc}") from None
        if not isinstance(value, str):  # pragma: no cover - a quoted JSON value is text
            raise fail("quoted text must be a JSON string")
        return value
    return text


def _header(script: Script, key: str, value: str, number: int, base_dir: Any) -> None:
    def fail(message: str) -> ScriptError:
        return ScriptError(message, script.file, number)

    if key == "spec":
        if not value:
            raise fail("spec: needs a path")
        script.spec = Path(base_dir or ".") / value
    elif key in ("heap", "server"):
        name, eq, text = value.partition("=")
        if not eq or not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name.strip()
        ):
            raise fail(f"{key}: expects NAME=VALUE, not {value!r}")
        if key == "heap":
            script.heap[name.strip()] = text
        else:
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                raise fail(f"server: {name}: the value is not YAML") from None
            target = script.server
            *parents, last = name.strip().split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
                if not isinstance(target, dict):
                    raise fail(f"server: {name}: {parent} is set to a value already")
            target[last] = parsed
    elif key == "transport":
        if value not in ("memory", "tcp"):
            raise fail(f"transport: memory or tcp, not {value!r}")
        script.transport = value
    elif key == "clock":
        if value not in ("virtual", "real"):
            raise fail(f"clock: virtual or real, not {value!r}")
        script.clock = value
    else:
        try:
            script.timeout = float(value)
        except ValueError:
            raise fail(f"timeout: a number of seconds, not {value!r}") from None
        if not script.timeout > 0:
            raise fail("timeout: must be more than 0")


def render(
    steps: list[tuple[str, Any]],
    *,
    spec: str | None = None,
    heap: dict[str, str] | None = None,
    comment: str = "",
) -> str:
    """A script's text for recorded steps: ``("send", record)``, ``("expect",
    record)``, ``("advance", seconds)``, ``("closed", None)``; reading it back
    gives the same steps (text that would read as something else is quoted)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    if spec is not None:
        lines.append(f"spec: {spec}")
    lines += [f"heap: {name}={value}" for name, value in (heap or {}).items()]
    for kind, value in steps:
        if kind == "send":
            lines.append(f"> {_written(value)}" if value != "" else ">")
        elif kind == "raw":
            lines.append(f">> {_written(value)}")
        elif kind == "expect":
            lines.append(f"< {_written(value)}")
        elif kind == "advance":
            lines.append(f"~ {value:g}s")
        elif kind == "closed":
            lines.append("<closed")
    return "\n".join(lines) + "\n"


def _written(record: Any) -> str:
    if not isinstance(record, str):
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    plain = (
        record.isprintable()
        and record == record.strip()
        and not record.startswith('"')
        and not _REGEX.match(record)
    )
    return record if plain and record else json.dumps(record, ensure_ascii=False)
