"""The file writing of specs/smtp-sink.yaml: the one thing its YAML cannot do.

The spec keeps the envelope and the message in the session's heap (``sender``,
``recipients``, ``lines``, and ``user`` once AUTH succeeded); :func:`save`, a
spec ``call`` target, writes them to a file.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

_numbers = itertools.count(1)


def save(session: Any, line: str, match: dict[str, str]) -> str:
    """Write the message to ``{server.folder}`` (or $SMTP_SINK_FOLDER); return its name."""
    folder = Path(os.environ.get("SMTP_SINK_FOLDER") or session.server.heap["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{session.id}-{next(_numbers)}.eml"
    heap = session.heap
    envelope = [
        f"X-Sink-Mail-From: <{heap['sender']}>",
        f"X-Sink-Rcpt-To: {', '.join('<' + r + '>' for r in heap['recipients'])}",
    ]
    if heap.get("user") is not None:
        envelope.append(f"X-Sink-Auth-User: {heap['user']}")
    text = "\r\n".join([*envelope, *heap["lines"]]) + "\r\n"
    # Written under a temporary name, then renamed: a reader never sees half a message.
    partial = folder / f".{name}.tmp"
    partial.write_bytes(text.encode("utf-8", "surrogateescape"))
    partial.rename(folder / name)
    return name
