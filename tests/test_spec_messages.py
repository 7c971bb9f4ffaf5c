"""Spec framings: structured messages with a declared schema, and every filter by name.

Clients here speak each framing with plain sockets and msgspec/json, as a user's
client would, against served specs on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import TIMEOUT

from statemachine_server import Kernel, SpecError, TCPServer
from statemachine_server.language import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parent.parent


async def exchange(server: TCPServer, data: bytes) -> bytes:
    """Send ``data``, half-close, read everything the server sends until it closes."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        writer.write_eof()
        out = await reader.read()
        writer.close()
        return out


def json_lines(*objects: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


async def test_kv_spec_answers_typed_requests_and_refuses_bad_ones(serve_spec: Any) -> None:
    server = await serve_spec(ROOT / "specs" / "kv.yaml")
    out = await exchange(
        server,
        json_lines(
            {"op": "set", "key": "a", "value": 1},
            {"op": "incr", "key": "a"},
            {"op": "incr", "key": "a", "by": 5},
            {"op": "get", "key": "a"},
            {"op": "get"},
            {"op": "incr", "key": "a", "by": "five"},
            {"op": "nope"},
            {"op": "set", "key": "b", "value": {"nested": [1, None, "x"]}},
            {"op": "get", "key": "b"},
            {"op": "get", "key": "a", "extra": True},
        )
        + b"not json\n"
        + json_lines({"op": "keys"}, {"op": "delete", "key": "b"}, {"op": "ping"}),
    )
    replies = [json.loads(line) for line in out.splitlines()]
    session = replies[0]["session"]
    assert replies == [
        {"hello": "kv", "session": session},
        {"ok": True},
        {"key": "a", "value": 2},
        {"key": "a", "value": 7},
        {"key": "a", "value": 7},
        {"error": "Object missing required field `key`"},
        {"error": "Expected `int | null`, got `str` - at `$.by`"},
        {"error": "Invalid value 'nope' - at `$.op`"},
        {"ok": True},
        {"key": "b", "value": {"nested": [1, None, "x"]}},
        {"error": "Object contains unknown field `extra`"},
        {"error": "JSON is malformed: invalid character (byte 4)"},
        {"keys": ["a", "b"]},
        {"deleted": True},
        {"pong": True, "session": session},  # a number: "{session.id}" alone keeps its type
    ]


async def test_kv_store_is_shared_and_bounded(serve_spec: Any) -> None:
    server = await serve_spec(ROOT / "specs" / "kv.yaml", heap={"max_keys": 2})
    await exchange(server, json_lines({"op": "set", "key": "x", "value": "from one"}))
    out = await exchange(
        server,
        json_lines(
            {"op": "get", "key": "x"},
            {"op": "set", "key": "y", "value": 2},
            {"op": "set", "key": "z", "value": 3},
        ),
    )
    assert [json.loads(line) for line in out.splitlines()[1:]] == [
        {"key": "x", "value": "from one"},
        {"ok": True},
        {"error": "store full"},
    ]


MSGPACK_SPEC = """
server:
  filter:
    type: msgpack
    schema:
      messages:
        add: {a: int, b: int}
        greet: {name: str, loud: "bool?"}
handlers:
  input:
    - message: greet
      do: [reply: {greeting: "hello, {match.name}", loud: "{match.loud}"}]
    - message: add
      do: [reply: ["{match.a}", "{match.b}", "{input}"]]
"""


async def test_msgpack_spec_with_a_schema(serve_spec: Any) -> None:
    server = await serve_spec(MSGPACK_SPEC)

    def frame(obj: Any) -> bytes:
        body = msgspec.msgpack.encode(obj)
        return struct.pack(">I", len(body)) + body

    out = await exchange(
        server,
        frame({"type": "greet", "name": "ada"})
        + frame({"type": "add", "a": 2, "b": 3})
        + frame({"type": "add", "a": 2})
        + frame({"type": "greet", "name": "bob", "loud": True}),
    )
    replies = []
    while out:
        (n,) = struct.unpack(">I", out[:4])
        replies.append(msgspec.msgpack.decode(out[4 : 4 + n]))
        out = out[4 + n :]
    assert replies == [
        {"greeting": "hello, ada", "loud": None},
        [2, 3, {"type": "add", "a": 2, "b": 3}],  # {input} alone: the message itself
        {"error": "Object missing required field `b`"},
        {"greeting": "hello, bob", "loud": True},
    ]


async def test_json_without_schema_echoes_any_value(serve_spec: Any) -> None:
    server = await serve_spec(
        "server: {filter: json}\nhandlers:\n  input:\n    - reply: '{input}'\n"
        "    - reply: {got: 'you sent {input}'}\n"
    )
    out = await exchange(server, b'[1, "two", {"3": null}]\n"text"\n')
    assert out.splitlines() == [
        b'[1,"two",{"3":null}]',
        b'{"got":"you sent [1,\\"two\\",{\\"3\\":null}]"}',
        b'"text"',
        b'{"got":"you sent text"}',
    ]


@pytest.mark.parametrize(
    ("filter_", "reply", "sent", "expected"),
    [
        ("{type: line, separator: ';'}", "<{input}>", b"a;b\n;c;", b"<a>;<b\n>;<c>;"),
        (
            "{type: line, regex: '\\r?\\n|;', newline: \"\\r\\n\"}",
            "<{input}>",
            b"a;b\r\nc\n",
            b"<a>\r\n<b>\r\n<c>\r\n",
        ),
        # 3-byte records; replies are records too, so a 5-byte reply is an error
        # for that client (the replies before it still go out).
        ("{type: block, size: 3}", "{input}", b"abcdefgh", b"abcdef"),
        ("{type: block, size: 3}", "<{input}>", b"abc", b""),
        ("{type: block, codec: u8}", "<{input}>", b"\x02hi\x03abc", b"\x04<hi>\x05<abc>"),
        ("{type: block, codec: netstring}", "<{input}>", b"2:hi,", b"4:<hi>,"),
    ],
)
async def test_text_framings_by_name(
    serve_spec: Any, filter_: str, reply: str, sent: bytes, expected: bytes
) -> None:
    server = await serve_spec(
        f"server:\n  filter: {filter_}\nhandlers:\n  input: [reply: '{reply}']\n"
    )
    assert await exchange(server, sent) == expected


async def test_stream_filter_hands_bytes_as_they_come_and_keeps_any_byte(serve_spec: Any) -> None:
    server = await serve_spec("server: {filter: stream}\nhandlers:\n  input: [reply: '{input}']\n")
    payload = bytes(range(256)) * 4
    assert await exchange(server, payload) == payload


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server: {filter: {type: line}}\nhandlers:\n  input:\n    - message: add\n"
            "      do: [close]\n",
            "t.yaml:4:16: `message` needs a schema with tagged messages (server.filter.schema)",
        ),
        (
            "server: {filter: {type: json, schema: {messages: {add: {a: int}}}}}\n"
            "handlers:\n  input:\n    - message: sub\n      do: [close]\n",
            "t.yaml:4:16: unknown message 'sub' (the schema has add)",
        ),
        (
            "server: {filter: {type: json, schema: {messages: {add: {a: int}}}}}\n"
            "handlers:\n  input:\n    - match: x\n      do: [close]\n",
            "t.yaml:4:14: match tests text, and this server's records are messages (json, "
            "msgpack): use `message: KIND`",
        ),
        (
            "server: {filter: {type: json, schema: {messages: {add: {a: int}}}}}\n"
            "handlers:\n  input:\n    - message: add\n      do: [reply: '{match.b}']\n",
            "t.yaml:5:21: match.b: the rule's condition has no group 'b' (its groups: a)",
        ),
        (
            "server: {filter: {type: json, schema: {messages: {add: {a: integer}}}}}\n",
            "t.yaml:1:50: expected a field type: str, int, float, bool, any or list[T]",
        ),
        (
            "server: {filter: {type: json, schema: {messages: {add: {type: int}}}}}\n",
            "t.yaml:1:39: message 'add': 'type' is the tag field",
        ),
        (
            "server: {filter: line}\nhandlers:\n  input: [reply: {a: 1}]\n",
            "t.yaml:3:18: a reply that is a mapping or a list needs a json or msgpack filter",
        ),
        (
            "handlers:\n  invalid: [close]\n",
            "t.yaml:2:3: `invalid` is for json and msgpack filters",
        ),
        (
            "server: {filter: {type: block}}\n",
            "t.yaml:1:18: a block filter needs either size",
        ),
        (
            "server: {filter: {type: line, regex: 'a|'}}\n",
            "t.yaml:1:38: bad regex",
        ),
        (
            "server: {filter: json}\nhandlers:\n  input: [switch_filter: line]\n",
            "t.yaml:3:11: switch_filter works with the line filter",
        ),
        (
            "handlers:\n  input: [send: upstrem]\nclients:\n  upstream: {port: 1}\n",
            "t.yaml:2:17: send to unknown client 'upstrem' (did you mean 'upstream'?)",
        ),
        (
            "clients:\n  up: {host: x}\n",
            "t.yaml:2:7: a client needs either port (with host) or path",
        ),
        (
            "clients:\n  up:\n    port: 1\n    handlers:\n      inptu: [close]\n",
            "t.yaml:5:7: unknown client event 'inptu' (did you mean 'input'?)",
        ),
        (
            "clients:\n  up:\n    port: '{server.x}{input}'\n",
            "t.yaml:3:11: {input} is only available",
        ),
        (
            "states: {a: {handlers: {input: [close]}}}\n"
            "clients:\n  up:\n    port: 1\n    handlers:\n      input: [goto: a]\n",
            "t.yaml:6:15: goto is not available in a client's handlers",
        ),
        (
            "server: {filter: {type: json, schema: {messages: {add: {__dict__: int}}}}}\n",
            "t.yaml:1:50: expected a name (letters, digits and _, starting with a letter)",
        ),
        ("clients:\n  up: {port: 0}\n", "t.yaml:2:14: a client's port must be 1 to 65535"),
        (
            "clients:\n  up:\n    port: 1\n    per: server\n    handlers:\n"
            "      connect_error: [close]\n",
            "t.yaml:6:23: close is not available here: a shared client",
        ),
        (
            "server: {filter: {type: jsn}}\n",
            "t.yaml:1:18: unknown type 'jsn'",
        ),
    ],
)
def test_framing_and_client_errors_at_their_place(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "t.yaml")
    lines = str(info.value).splitlines()
    assert any(line.startswith(expected) for line in lines), lines


def test_schema_may_be_a_python_type_beside_the_spec(tmp_path: Path) -> None:
    (tmp_path / "types.py").write_text(
        "import msgspec\n\n"
        "class Add(msgspec.Struct, tag='add'):\n    a: int\n    b: int\n\n"
        "class Neg(msgspec.Struct, tag='neg'):\n    a: int\n\n"
        "Request = Add | Neg\n"
    )
    (tmp_path / "s.yaml").write_text(
        "server: {filter: {type: json, schema: 'types:Request'}}\n"
        "handlers:\n  input:\n    - message: neg\n      do: [reply: {a: '{match.a}'}]\n"
        "    - message: add\n      do: [reply: '{match.b}']\n"
    )
    load_spec(tmp_path / "s.yaml")
    (tmp_path / "bad.yaml").write_text("server: {filter: {type: json, schema: 'types:nope'}}\n")
    with pytest.raises(SpecError, match=r"bad.yaml:1:39: schema 'types:nope': module 'types'"):
        load_spec(tmp_path / "bad.yaml")


async def test_python_example_answers_as_the_spec_does(
    serve_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    path = ROOT / "examples" / "json_service.py"
    module_spec = importlib.util.spec_from_file_location("json_service_example", path)
    assert module_spec is not None and module_spec.loader is not None
    example = importlib.util.module_from_spec(module_spec)
    # msgspec resolves the Structs' annotations through sys.modules.
    monkeypatch.setitem(sys.modules, "json_service_example", example)
    module_spec.loader.exec_module(example)
    requests = json_lines(
        {"op": "set", "key": "a", "value": 1},
        {"op": "incr", "key": "a", "by": 5},
        {"op": "get", "key": "a"},
        {"op": "get"},
        {"op": "keys"},
        {"op": "ping"},
    )
    kernel = Kernel()
    python = example.kv_server(kernel)  # bound already: clients wait in the backlog
    task = asyncio.create_task(kernel.serve())
    try:
        spec = await serve_spec(ROOT / "specs" / "kv.yaml")
        from_spec = [json.loads(x) for x in (await exchange(spec, requests)).splitlines()]
        from_python = [json.loads(x) for x in (await exchange(python, requests)).splitlines()]
        for reply in from_spec + from_python:
            reply.pop("session", None)
        assert from_python == from_spec
        assert from_python[4] == {"error": "Object missing required field `key`"}
    finally:
        async with asyncio.timeout(TIMEOUT):
            await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- outbound connections ---------------------------------------------------------------


async def test_line_proxy_spec_forwards_10000_lines_in_order(serve_spec: Any) -> None:
    upstream = await serve_spec(
        "handlers:\n  input: [reply: 'echo {input}']\n"  # not the proxy's own replies
    )
    proxy = await serve_spec(
        ROOT / "specs" / "line-proxy.yaml", heap={"upstream_port": str(upstream.port)}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=1 << 24)
    lines = [f"line {i} " + "x" * (i % 40) for i in range(10_000)]
    writer.write("".join(line + "\n" for line in lines).encode())
    expected = "".join(f"echo {line}\n" for line in lines).encode()
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(len(expected)) == expected
    writer.close()
    # Its upstream connection ends with it: the upstream server is left with none.
    async with asyncio.timeout(TIMEOUT):
        while upstream.kernel.statistics().sessions > 1:
            await asyncio.sleep(0.01)


async def test_line_proxy_spec_answers_a_client_that_half_closes(serve_spec: Any) -> None:
    # printf 'a\nb\n' | nc: the client's end of input reaches the proxy before the
    # upstream's replies; they are still delivered, then the connection closes.
    upstream = await serve_spec("handlers:\n  input: [reply: 'echo {input}']\n")
    proxy = await serve_spec(
        ROOT / "specs" / "line-proxy.yaml", heap={"upstream_port": str(upstream.port)}
    )
    lines = [f"line {i}" for i in range(2_000)]
    expected = "".join(f"echo {line}\n" for line in lines).encode()
    for early in (True, False):  # before the upstream connection is up, and after
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=1 << 24)
        if not early:
            writer.write(b"first\n")
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readline() == b"echo first\n"
        writer.write("".join(line + "\n" for line in lines).encode())
        writer.write_eof()
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == expected
        writer.close()


async def test_line_proxy_spec_tells_the_client_when_upstream_is_down(serve_spec: Any) -> None:
    gone = await serve_spec("handlers: {}\n")
    port = gone.port
    gone.close()  # nothing listens there now
    proxy = await serve_spec(ROOT / "specs" / "line-proxy.yaml", heap={"upstream_port": str(port)})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"hello\n")
    async with asyncio.timeout(TIMEOUT):
        out = await reader.read()
    assert out.startswith(b"upstream unavailable: ")
    writer.close()


async def test_a_shared_client_feeds_every_session(serve_spec: Any) -> None:
    # A gateway: one upstream connection for the whole server, its lines broadcast.
    feed = await serve_spec(
        "server: {filter: json}\nhandlers:\n  input: [reply: {feed: '{input}'}]\n"
    )
    gateway = await serve_spec(
        f"""
clients:
  feed:
    port: {feed.port}
    per: server
    filter: json
    handlers:
      input: [broadcast: {{text: "{{input}}", group: all}}]
handlers:
  connected: [join: all]
  input:
    - send: {{to: feed, text: {{from: "{{session.id}}", said: "{{input}}"}}}}
"""
    )
    a_reader, a_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    b_reader, b_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    async with asyncio.timeout(TIMEOUT):
        while gateway.kernel.statistics().sessions < 4:  # server, feed client, a, b
            await asyncio.sleep(0.01)
    a_writer.write(b"hi\n")
    async with asyncio.timeout(TIMEOUT):
        got_a = await a_reader.readline()
        got_b = await b_reader.readline()
    assert got_a == got_b
    assert got_a.startswith(b'{"feed":{"from":') and got_a.endswith(b',"said":"hi"}}\n')
    a_writer.close()
    b_writer.close()


async def test_a_client_speaks_tls_to_its_upstream(serve_spec: Any, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    (tmp_path / "upstream.yaml").write_text(
        "server: {tls: {cert: server.pem}}\nhandlers:\n  input: [reply: 'tls {input}']\n"
    )
    upstream = await serve_spec(tmp_path / "upstream.yaml")
    (tmp_path / "proxy.yaml").write_text(
        f"clients:\n  up:\n    port: {upstream.port}\n    tls: {{ca: ca.pem}}\n"
        "    handlers:\n      input: [reply: '{input}']\n"
        "      connect_error: [reply: 'no: {input}', close]\n"
        "handlers:\n  input: [send: up]\n"
    )
    proxy = await serve_spec(tmp_path / "proxy.yaml")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a\nb\n")
    async with asyncio.timeout(TIMEOUT):
        assert [await reader.readline() for _ in range(2)] == [b"tls a\n", b"tls b\n"]
    writer.close()
    # A certificate from an authority it does not trust: refused, and the client told.
    (tmp_path / "other.yaml").write_text(
        (tmp_path / "proxy.yaml").read_text().replace("{ca: ca.pem}", "{}")
    )
    other = await serve_spec(tmp_path / "other.yaml")
    reader, writer = await asyncio.open_connection("127.0.0.1", other.port)
    writer.write(b"a\n")
    async with asyncio.timeout(TIMEOUT):
        assert (await reader.read()).startswith(b"no: [SSL: CERTIFICATE_VERIFY_FAILED]")
    writer.close()


async def test_a_held_end_of_input_waits_behind_work_and_its_sends(
    serve_spec: Any, tmp_path: Path
) -> None:
    # The end of input arrives while the session works: it waits in order, so the
    # lines sent upstream after the work are not cut off by the half-close.
    (tmp_path / "slow.py").write_text(
        "import time\n\ndef nap(line, match):\n    time.sleep(0.05)\n    return line\n"
    )
    upstream = await serve_spec("handlers:\n  input: [reply: 'echo {input}']\n")
    (tmp_path / "s.yaml").write_text(
        f"clients:\n  up:\n    port: {upstream.port}\n    handlers:\n"
        "      input: [reply: '{input}']\n"
        "handlers:\n  input:\n    - work: {function: 'slow:nap', in: thread}\n    - send: up\n"
    )
    proxy = await serve_spec(tmp_path / "s.yaml")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a\nb\n")
    writer.write_eof()
    async with asyncio.timeout(TIMEOUT):
        assert await reader.read() == b"echo a\necho b\n"
    writer.close()


async def test_a_shared_client_hears_its_disconnect_and_shares_the_server_heap(
    serve_spec: Any,
) -> None:
    feed = await serve_spec("handlers:\n  connected: [reply: hi, close]\n")
    lines: list[str] = []

    class Console:
        def __init__(self) -> None:
            self.lines = self

        def append(self, line: str) -> None:
            lines.append(line)

    gateway = await serve_spec(
        f"""
server: {{heap: {{greeting: hello}}}}
clients:
  feed:
    port: {feed.port}
    per: server
    reconnect: {{initial: 30}}
    handlers:
      input: [set: {{server.last: "{{input}}"}}, log: "feed said {{input}} ({{server.greeting}})"]
      disconnected: [log: "feed gone"]
handlers:
  input: [reply: "last: {{server.last}}"]
""",
        console=Console(),
    )
    async with asyncio.timeout(TIMEOUT):
        while "feed gone" not in lines:
            await asyncio.sleep(0.01)
    assert lines == ["feed said hi (hello)", "feed gone"]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"?\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"last: hi\n"
    writer.close()


async def test_msgpack_values_json_cannot_show_are_logged_not_fatal(serve_spec: Any) -> None:
    server = await serve_spec(
        "server: {filter: msgpack}\nhandlers:\n  input:\n    - log: 'got {input}'\n"
        "    - reply: ok\n"
    )
    ext = msgspec.msgpack.encode(msgspec.msgpack.Ext(5, b"xy"))
    tuple_key = b"\x81\x92\x01\x02\xa1v"  # {[1, 2]: "v"}
    after = msgspec.msgpack.encode("after")
    out = await exchange(
        server, b"".join(struct.pack(">I", len(d)) + d for d in (ext, tuple_key, after))
    )
    assert out.count(b"\xa2ok") == 3  # all three answered, the connection kept


async def test_message_fields_in_a_text_are_written_as_json(serve_spec: Any) -> None:
    server = await serve_spec(
        "server:\n  filter:\n    type: json\n    schema:\n      messages:\n"
        "        m: {flag: bool, tags: 'list[str]', n: 'int?', name: str}\n"
        "handlers:\n  input:\n    - message: m\n"
        "      do: [reply: 'flag={match.flag} tags={match.tags} n={match.n} name={match.name}']\n"
    )
    out = await exchange(
        server, json_lines({"type": "m", "flag": True, "tags": ["a"], "name": "x"})
    )
    assert json.loads(out) == 'flag=true tags=["a"] n=null name=x'
