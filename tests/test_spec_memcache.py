"""specs/memcache-lite.yaml, in YAML alone, against the real pymemcache client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymemcache")
from pymemcache.client.base import Client

SPEC = Path(__file__).resolve().parent.parent / "specs" / "memcache-lite.yaml"
TIMEOUT = 20.0


def client(port: int, **kwargs: Any) -> Client:
    return Client(("127.0.0.1", port), timeout=TIMEOUT, default_noreply=False, **kwargs)


async def in_thread(function: Any, *args: Any) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.to_thread(function, *args)


def _storage_commands(port: int) -> None:
    c = client(port)
    try:
        # Empty values: a data block of 0 bytes, then "\r\n".
        assert c.set("empty", b"") is True
        assert c.get("empty") == b""
        assert c.get_many(["empty", "nope"]) == {"empty": b""}
        # add only when absent, replace only when present.
        assert c.add("k", b"one") is True
        assert c.add("k", b"two") is False
        assert c.get("k") == b"one"
        assert c.replace("k", b"three") is True
        assert c.replace("absent", b"x") is False
        assert c.get("absent") is None
        # append and prepend keep the flags, need the item.
        assert c.set("s", b"middle", expire=0) is True
        assert c.append("s", b">>") is True
        assert c.prepend("s", b"<<") is True
        assert c.get("s") == b"<<middle>>"
        assert c.append("absent", b"x") is False
        # gets: several keys, each with its cas unique, which changes on a write.
        found = c.gets_many(["k", "s", "absent"])
        assert set(found) == {"k", "s"}
        (_, cas_k), (_, cas_s) = found["k"], found["s"]
        assert cas_k != cas_s
        c.set("k", b"four")
        assert c.gets("k")[1] != cas_k
        # incr and decr: numbers in text; decr stops at 0; non-numbers refused.
        assert c.set("n", b"10") is True
        assert c.incr("n", 5) == 15
        assert c.decr("n", 100) == 0
        assert c.incr("missing", 1) is None
        assert c.set("max", b"18446744073709551615") is True
        assert c.incr("max", 2) == 1  # wraps at 2**64
        with pytest.raises(Exception, match="non-numeric"):
            c.incr("s", 1)
    finally:
        c.close()


async def test_storage_commands(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    await in_thread(_storage_commands, server.port)
    assert server.heap["items"]["n"][1] == "0"


def _noreply_and_delete(port: int) -> None:
    c = client(port)
    try:
        # noreply: pipelined with what follows, no answer expected (or read).
        c.set("q1", b"a", noreply=True)
        c.set("q2", b"b", noreply=True)
        c.delete("q1", noreply=True)
        assert c.get_many(["q1", "q2"]) == {"q2": b"b"}
        assert c.delete("q2") is True
        assert c.delete("q2") is False
        c.flush_all()
        assert c.version().startswith(b"1.6")
    finally:
        c.close()


async def test_noreply_delete_flush(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    await in_thread(_noreply_and_delete, server.port)
    # Errors are answered even under noreply: the client must know.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"set a 0 0 1 noreply\r\nx\r\nincr a 1 noreply\r\nget a\r\ndelete a noreply\r\n"
                 b"get a\r\nbogus\r\nget " + b"k" * 251 + b"\r\n")  # fmt: skip
    async with asyncio.timeout(TIMEOUT):
        got = b""
        while got.count(b"\r\n") < 6:
            got += await reader.read(4096)
    writer.close()
    assert got == (
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        b"VALUE a 0 1\r\nx\r\nEND\r\nEND\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n"
    )


async def test_pipelined_storage_is_answered_in_order(serve_spec: Any) -> None:
    server = await serve_spec(SPEC)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    batch = b"".join(b"set k%d 0 0 2\r\nv%d\r\nget k%d\r\n" % (n, n % 10, n) for n in range(200))
    writer.write(batch + b"quit\r\n")
    async with asyncio.timeout(TIMEOUT):
        got = await reader.read(-1)
    writer.close()
    assert got == b"".join(b"STORED\r\nVALUE k%d 0 2\r\nv%d\r\nEND\r\n" % (n, n % 10)
                           for n in range(200))  # fmt: skip


def _least_recently_used(port: int) -> None:
    c = client(port)
    try:
        value = b"v" * 1000
        for n in range(8):
            assert c.set(f"key{n}", value) is True
            assert c.get("key0") == value  # read: key0 stays recent
        # Room for about four items of 1,000 bytes: the oldest unread went first.
        kept = c.get_many([f"key{n}" for n in range(8)])
        assert "key0" in kept and "key7" in kept
        assert "key1" not in kept and "key2" not in kept
        assert len(kept) <= 5
    finally:
        c.close()


async def test_a_memory_bound_evicts_the_least_recently_used(serve_spec: Any) -> None:
    text = SPEC.read_text().replace("max_bytes: 67108864", "max_bytes: 4500")
    assert "max_bytes: 4500" in text
    server = await serve_spec(text)
    await in_thread(_least_recently_used, server.port)
    assert server.heap["items"].used <= 4500
