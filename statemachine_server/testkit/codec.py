"""The client's framing: the spec's own filter, seen from the other end.

A test client speaks what the spec's ``server.filter`` declares, with the same
filter classes the server uses (so a framing bug shows on both sides alike, and
the kit has no codec of its own to get wrong): lines end with the spec's
``newline`` or ``separator``, blocks get their length prefix, JSON Lines and
MessagePack records are encoded and decoded. The client's limits are the
largest a filter takes: what the server sends is read whole, however long.

The schema of a structured spec is what the *server* accepts; its replies are
any JSON or MessagePack value, so the client decodes them without it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from ..filters import Filter, InvalidRecord
from ..language.messages import is_structured, make_filter
from ..language.model import FilterSettings, MsgPackFilterSettings, StreamFilterSettings

__all__ = ["Codec", "show"]

#: The client's limit on one record: the largest any filter allows (1 GiB).
_UNBOUNDED = 1 << 30


class Codec:
    """Encode what a test client sends and decode what it receives.

    Args:
        settings: the spec's ``server.filter``.
    """

    def __init__(self, settings: FilterSettings):
        self.settings = settings
        #: Whether records are decoded values (json, msgpack) rather than text.
        self.structured = is_structured(settings)
        if not isinstance(settings, StreamFilterSettings):
            settings = msgspec.structs.replace(settings, max_length=_UNBOUNDED)
        # No schema (Any): replies are whatever the server sends.
        self._factory = make_filter(settings, Any)
        self._in: Filter = self._factory()
        self._out: Filter = self._factory()

    def encode(self, record: Any) -> bytes:
        """One record as the server reads it. Text sent to a JSON server is a
        document as it is written (a test may send broken JSON on purpose); to a
        MessagePack server, JSON text is the value to pack."""
        if isinstance(record, bytes):
            return record
        if self.structured and isinstance(record, str):
            if isinstance(self.settings, MsgPackFilterSettings):
                return self._out.put([json.loads(record)])
            return record.encode("utf-8", "surrogateescape") + b"\n"
        return self._out.put([record])

    def decode(self, data: bytes) -> list[Any]:
        """The records ``data`` completes (the rest waits for more bytes)."""
        return self._in.get(data)

    def pending(self) -> bytes:
        """Bytes received that complete no record yet."""
        return self._in.get_pending()


def show(record: Any) -> str:
    """A received (or expected) record as one readable line."""
    if isinstance(record, re.Pattern):
        return f"/{record.pattern}/"
    if isinstance(record, InvalidRecord):
        return f"<not decodable: {record.error}>"
    if isinstance(record, str):
        return record if record.isprintable() else _escaped(record)
    try:
        return msgspec.json.encode(record).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(record)


def _escaped(text: str) -> str:
    # repr() without its quotes: control characters (a frame's NULs and
    # newlines) show as escapes, and the line stays one line.
    return repr(text)[1:-1]
