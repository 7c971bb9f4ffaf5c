"""Storage for specs/memcache-lite.yaml: items in the server-wide heap.

Each function is a spec ``call`` target, ``function(session, input, match)``;
what it returns is sent as replies (one line per string). Values arrive as ``str``
decoded with ``surrogateescape``, so any bytes survive; lengths are counted in
bytes. Expiry times are accepted and ignored: this is a sketch, not a cache.
"""

from __future__ import annotations

from typing import Any


def _items(session: Any) -> dict[str, tuple[str, str]]:
    items: dict[str, tuple[str, str]] = session.server.heap.setdefault("items", {})
    return items


def store(session: Any, value: str, match: dict[str, str]) -> str | None:
    """The data block of a ``set``: its key and flags were kept by the spec."""
    heap = session.heap
    _items(session)[heap["key"]] = (heap["flags"], value)
    return None if heap["noreply"] else "STORED"


def get(session: Any, line: str, match: dict[str, str]) -> list[str]:
    items = _items(session)
    out = []
    for key in match["keys"].split():
        found = items.get(key)
        if found is not None:
            flags, value = found
            size = len(value.encode("utf-8", "surrogateescape"))
            out += [f"VALUE {key} {flags} {size}", value]
    return [*out, "END"]


def delete(session: Any, line: str, match: dict[str, str]) -> str | None:
    found = _items(session).pop(match["key"], None) is not None
    if match["noreply"]:
        return None
    return "DELETED" if found else "NOT_FOUND"
