"""Filters turn a byte stream into records and records back into bytes (sans-I/O).

Every filter has the same small contract, POE::Filter's in Python naming:

* ``get(data: bytes) -> list[record]``: feed bytes, get the records they complete;
* ``put(records: list[record]) -> bytes``: encode records for sending;
* ``get_pending() -> bytes``: bytes buffered but not yet a record, for handing to
  another filter when a connection switches framing mid-stream;
* a bound on record size, breached with :class:`~statemachine_server.errors.RecordTooLong`
  (broken framing: :class:`~statemachine_server.errors.ProtocolError`), both carrying
  the complete records that came before.

``docs/filters.md`` describes each filter's framing rules, defaults and limits.
"""

from __future__ import annotations

from typing import Any, Protocol

from .block import DEFAULT_MAX_BLOCK, BlockFilter
from .invalid import InvalidRecord
from .json import DEFAULT_MAX_JSON, JSONFilter
from .line import DEFAULT_MAX_LINE, LineFilter
from .msgpack import DEFAULT_MAX_MSGPACK, MsgPackFilter
from .stack import Stack
from .stream import StreamFilter

__all__ = [
    "DEFAULT_MAX_BLOCK",
    "DEFAULT_MAX_JSON",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_MSGPACK",
    "FILTERS",
    "BlockFilter",
    "Filter",
    "InvalidRecord",
    "JSONFilter",
    "LineFilter",
    "MsgPackFilter",
    "Stack",
    "StreamFilter",
]


class Filter(Protocol):
    """What the connection needs from a filter."""

    def get(self, data: bytes) -> list[Any]: ...

    def put(self, records: list[Any]) -> bytes: ...

    def get_pending(self) -> bytes: ...


#: Filters by name.
FILTERS: dict[str, type] = {
    "block": BlockFilter,
    "json": JSONFilter,
    "line": LineFilter,
    "msgpack": MsgPackFilter,
    "stack": Stack,
    "stream": StreamFilter,
}
