"""Filters turn a byte stream into records and records back into bytes (sans-I/O).

Every filter has the same small contract, POE::Filter's in Python naming:

* ``get(data: bytes) -> list[record]``: feed bytes, get the records they complete;
* ``put(records: list[record]) -> bytes``: encode records for sending;
* ``get_pending() -> bytes``: bytes buffered but not yet a record;
* a bound on record size, breached with :class:`~statemachine_server.errors.RecordTooLong`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .line import DEFAULT_MAX_LINE, LineFilter

__all__ = ["DEFAULT_MAX_LINE", "FILTERS", "Filter", "LineFilter"]


class Filter(Protocol):
    """What the connection needs from a filter."""

    def get(self, data: bytes) -> list[Any]: ...

    def put(self, records: list[Any]) -> bytes: ...

    def get_pending(self) -> bytes: ...


#: Filters a spec can name, by name.
FILTERS: dict[str, type] = {"line": LineFilter}
