"""specs/kv.yaml written with the Python API: a JSON Lines key-value service.

The request types are msgspec Structs, a tagged union on the ``op`` field; the
filter decodes and validates each line into one of them before the handler runs,
and a line that does not fit arrives as an ``InvalidRecord`` (answered with an
error, the connection goes on). Run it, then talk to it::

    python examples/json_service.py 12347
    printf '%s\\n' '{"op":"set","key":"a","value":[1,2]}' '{"op":"get","key":"a"}' \\
        | nc -q1 127.0.0.1 12347
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from statemachine_server import Connection, InvalidRecord, JSONFilter, Kernel, TCPServer

#: The store's bound: every buffer has one.
MAX_KEYS = 10_000


class Ping(msgspec.Struct, tag_field="op", tag="ping", forbid_unknown_fields=True):
    pass


class Set(msgspec.Struct, tag_field="op", tag="set", forbid_unknown_fields=True):
    key: str
    value: Any


class Get(msgspec.Struct, tag_field="op", tag="get", forbid_unknown_fields=True):
    key: str


class Delete(msgspec.Struct, tag_field="op", tag="delete", forbid_unknown_fields=True):
    key: str


class Incr(msgspec.Struct, tag_field="op", tag="incr", forbid_unknown_fields=True):
    key: str
    by: int = 1


class Keys(msgspec.Struct, tag_field="op", tag="keys", forbid_unknown_fields=True):
    pass


Request = Ping | Set | Get | Delete | Incr | Keys


def kv_server(kernel: Kernel, port: int = 0) -> TCPServer:
    store: dict[str, Any] = {}

    def answer(request: Request) -> dict[str, Any]:
        match request:
            case Ping():
                return {"pong": True}
            case Get(key=key) if key in store:
                return {"key": key, "value": store[key]}
            case Get(key=key):
                return {"key": key, "error": "no such key"}
            case Delete(key=key):
                return {"deleted": store.pop(key, None) is not None}
            case Keys():
                return {"keys": sorted(store)}
        if request.key not in store and len(store) >= MAX_KEYS:
            return {"error": "store full"}
        if isinstance(request, Set):
            store[request.key] = request.value
            return {"ok": True}
        value = store.get(request.key, 0)
        if type(value) is not int:
            return {"key": request.key, "error": "not an integer"}
        store[request.key] = value + request.by
        return {"key": request.key, "value": store[request.key]}

    def on_input(session: Connection, record: Request | InvalidRecord) -> None:
        if isinstance(record, InvalidRecord):
            session.put({"error": record.error})
        else:
            session.put(answer(record))

    return TCPServer(
        kernel,
        port=port,
        filter=lambda: JSONFilter(Request, max_length=65536),
        on_connected=lambda session: session.put({"hello": "kv", "session": session.id}),
        on_input=on_input,
    )


if __name__ == "__main__":
    kernel = Kernel()
    server = kv_server(kernel, int(sys.argv[1]) if len(sys.argv) > 1 else 12347)
    print(f"listening on {server.host}:{server.port}", flush=True)
    kernel.run()
