"""The Python side of specs/kv.yaml: the store, shared by every client.

Each function gets the session, the request (a typed message: the schema in the
spec made it a msgspec Struct, so its fields are there and of the declared types)
and the rule's match; what it returns is sent as the reply.
"""

from __future__ import annotations

from typing import Any


def _store(session: Any) -> dict[str, Any]:
    # The server-wide heap is shared by all sessions: one store per server.
    return session.server.heap.setdefault("store", {})  # type: ignore[no-any-return]


def put(session: Any, request: Any, match: dict[str, Any]) -> dict[str, Any]:
    store = _store(session)
    if request.key not in store and len(store) >= int(session.server.heap["max_keys"]):
        return {"error": "store full"}
    store[request.key] = request.value
    return {"ok": True}


def get(session: Any, request: Any, match: dict[str, Any]) -> dict[str, Any]:
    store = _store(session)
    if request.key not in store:
        return {"key": request.key, "error": "no such key"}
    return {"key": request.key, "value": store[request.key]}


def delete(session: Any, request: Any, match: dict[str, Any]) -> dict[str, Any]:
    return {"deleted": _store(session).pop(request.key, None) is not None}


def incr(session: Any, request: Any, match: dict[str, Any]) -> dict[str, Any]:
    store = _store(session)
    value = store.get(request.key, 0)
    if type(value) is not int:
        return {"key": request.key, "error": "not an integer"}
    if request.key not in store and len(store) >= int(session.server.heap["max_keys"]):
        return {"error": "store full"}
    store[request.key] = value + (1 if request.by is None else request.by)
    return {"key": request.key, "value": store[request.key]}


def keys(session: Any, request: Any, match: dict[str, Any]) -> dict[str, Any]:
    return {"keys": sorted(_store(session))}
