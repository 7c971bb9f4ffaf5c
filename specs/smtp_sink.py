"""Storage for specs/smtp-sink.yaml: the envelope, the message lines, the files.

Each function is a spec ``call`` target: ``function(session, input, match)``.
The protocol (replies, states, dot-unstuffing) is declared in the spec.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

_numbers = itertools.count(1)


def reset(session: Any, line: str | None, match: dict[str, str]) -> None:
    """Forget the envelope and the message so far (HELO, RSET, after a message)."""
    session.heap["recipients"] = []
    session.heap["lines"] = []


def add_recipient(session: Any, line: str, match: dict[str, str]) -> None:
    session.heap.setdefault("recipients", []).append(match["addr"])


def add_line(session: Any, line: str, match: dict[str, str]) -> None:
    # A `prefix: "."` rule gives the line without its first dot as match["rest"].
    session.heap.setdefault("lines", []).append(match.get("rest", line))


def save(session: Any, line: str, match: dict[str, str]) -> str:
    """Write the message to ``{server.folder}`` (or $SMTP_SINK_FOLDER); return its name."""
    folder = Path(os.environ.get("SMTP_SINK_FOLDER") or session.server.heap["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{session.id}-{next(_numbers)}.eml"
    heap = session.heap
    envelope = [
        f"X-Sink-Mail-From: <{heap.get('sender', '')}>",
        f"X-Sink-Rcpt-To: {', '.join('<' + r + '>' for r in heap.get('recipients', []))}",
    ]
    text = "\r\n".join([*envelope, *heap.get("lines", [])]) + "\r\n"
    # Written under a temporary name, then renamed: a reader never sees half a message.
    partial = folder / f".{name}.tmp"
    partial.write_bytes(text.encode("utf-8", "surrogateescape"))
    partial.rename(folder / name)
    return name
