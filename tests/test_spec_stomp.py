"""specs/stomp.yaml, a STOMP 1.2 broker written in YAML alone, against stomp.py and raw frames.

stomp.py is threaded and blocking: each scenario runs in a thread (``asyncio.to_thread``)
while the kernel serves in the test's loop, and waits for what its listeners receive
(a condition with a timeout), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped]

SPEC = Path(__file__).resolve().parent.parent / "specs" / "stomp.yaml"
TIMEOUT = 20.0
CONNECT = b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00"


class Recorder(stomp.ConnectionListener):  # type: ignore[misc]
    """What one connection received, and a way to wait for some of it."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.connected: list[Any] = []
        self.messages: list[Any] = []
        self.receipts: list[str] = []
        self.errors: list[Any] = []
        self.disconnected = False

    def _add(self, kind: str, item: Any) -> None:
        with self.changed:
            getattr(self, kind).append(item)
            self.changed.notify_all()

    def on_connected(self, frame: Any) -> None:
        self._add("connected", frame)

    def on_message(self, frame: Any) -> None:
        self._add("messages", frame)

    def on_receipt(self, frame: Any) -> None:
        self._add("receipts", frame.headers["receipt-id"])

    def on_error(self, frame: Any) -> None:
        self._add("errors", frame)

    def on_disconnected(self) -> None:
        with self.changed:
            self.disconnected = True
            self.changed.notify_all()

    def wait(self, condition: Callable[[], Any], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, TIMEOUT), f"timed out waiting for {what}"

    def wait_receipt(self, receipt: str) -> None:
        self.wait(lambda: receipt in self.receipts, f"receipt {receipt!r}")

    def wait_messages(self, n: int) -> list[Any]:
        self.wait(lambda: len(self.messages) >= n, f"{n} messages")
        return list(self.messages)

    def bodies(self) -> list[str]:
        return [frame.body for frame in self.messages]


@contextmanager
def clients(port: int, n: int) -> Iterator[list[tuple[Any, Recorder]]]:
    """``n`` connected stomp.py clients, disconnected after."""
    opened: list[tuple[Any, Recorder]] = []
    try:
        for _ in range(n):
            conn = stomp.Connection12([("127.0.0.1", port)], timeout=TIMEOUT)
            recorder = Recorder()
            conn.set_listener("recorder", recorder)
            opened.append((conn, recorder))
            # wait=False: stomp.py would wait for CONNECTED without a time limit.
            conn.connect(wait=False)
            recorder.wait(lambda r=recorder: r.connected, "CONNECTED")  # type: ignore[misc]
        yield opened
    finally:
        for conn, _ in opened:
            if conn.is_connected():
                conn.disconnect()  # a DISCONNECT with a receipt, not waited for


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    async with asyncio.timeout(TIMEOUT * 2):
        return await asyncio.to_thread(fn, *args)


@pytest.fixture
async def port(serve_spec: Callable[..., Any]) -> int:
    server = await serve_spec(SPEC)
    return int(server.port)


# -- with stomp.py ---------------------------------------------------------------------------


def _fan_out(port: int) -> None:
    with clients(port, 4) as [(a1, ra1), (a2, ra2), (b, rb), (sender, rs)]:
        headers = rs.connected[0].headers
        assert (headers["version"], headers["heart-beat"]) == ("1.2", "0,0")
        assert headers["server"].startswith("statemachine-server/")
        a1.subscribe("/topic/a", id="a1", headers={"receipt": "sub-a1"})
        # Two subscriptions in one session, one id that needs escaping (\c).
        a2.subscribe("/topic/a", id="x:1", headers={"receipt": "sub-a2-1"})
        a2.subscribe("/topic/a", id="second", headers={"receipt": "sub-a2-2"})
        b.subscribe("/topic/b", id="b", headers={"receipt": "sub-b"})
        for recorder, receipt in ((ra1, "sub-a1"), (ra2, "sub-a2-2"), (rb, "sub-b")):
            recorder.wait_receipt(receipt)

        sender.send("/topic/a", "hello a", headers={"receipt": "sent-a", "colour": "blue"})
        sender.send("/topic/b", "héllo b", content_type="text/plain", headers={"receipt": "b"})
        rs.wait_receipt("sent-a")
        rs.wait_receipt("b")

        (a1_got,) = ra1.wait_messages(1)
        assert a1_got.headers["subscription"] == "a1"
        assert a1_got.headers["destination"] == "/topic/a"
        assert a1_got.headers["content-length"] == "7"
        assert a1_got.headers["colour"] == "blue"  # SEND's own headers are passed on
        assert a1_got.body == "hello a"
        # One MESSAGE per subscription, each with its own id; one message-id.
        got = ra2.wait_messages(2)
        assert sorted(m.headers["subscription"] for m in got) == ["second", "x:1"]
        assert {m.headers["message-id"] for m in got} == {a1_got.headers["message-id"]}
        assert [m.body for m in got] == ["hello a", "hello a"]
        (b_got,) = rb.wait_messages(1)
        assert b_got.headers["subscription"] == "b"
        assert b_got.headers["destination"] == "/topic/b"
        assert b_got.headers["content-length"] == str(len("héllo b".encode()))
        assert b_got.headers["content-type"] == "text/plain"
        assert b_got.body == "héllo b"
        assert b_got.headers["message-id"] != a1_got.headers["message-id"]

        # Nothing else went to anyone: a last message to each destination is the
        # next one each subscriber sees (deliveries are in order).
        sender.send("/topic/a", "last a")
        sender.send("/topic/b", "last b")
        assert [m.body for m in ra1.wait_messages(2)] == ["hello a", "last a"]
        assert len(ra2.wait_messages(4)) == 4
        assert [m.body for m in rb.wait_messages(2)] == ["héllo b", "last b"]
        # The sender subscribed to nothing and got nothing.
        assert rs.messages == [] and not any(r.errors for r in (ra1, ra2, rb, rs))


async def test_each_subscriber_gets_its_own_subscription_header(port: int) -> None:
    await in_thread(_fan_out, port)


def _unsubscribe(port: int) -> None:
    with clients(port, 2) as [(sub, rsub), (sender, rs)]:
        sub.subscribe("/topic/x", id="x", headers={"receipt": "sub-x"})
        sub.subscribe("/topic/y", id="y", headers={"receipt": "sub-y"})
        rsub.wait_receipt("sub-y")
        sender.send("/topic/x", "first")
        rsub.wait_messages(1)
        sub.unsubscribe("x", headers={"receipt": "unsub-x"})
        rsub.wait_receipt("unsub-x")
        sender.send("/topic/x", "missed", headers={"receipt": "missed"})
        rs.wait_receipt("missed")
        sender.send("/topic/y", "marker")
        rsub.wait_messages(2)
        assert rsub.bodies() == ["first", "marker"]
        # Subscribed again under the same id, it gets messages again.
        sub.subscribe("/topic/x", id="x", headers={"receipt": "again"})
        rsub.wait_receipt("again")
        sender.send("/topic/x", "back")
        rsub.wait_messages(3)
        assert rsub.bodies() == ["first", "marker", "back"]
        assert rsub.messages[-1].headers["subscription"] == "x"


async def test_unsubscribe_stops_delivery(port: int) -> None:
    await in_thread(_unsubscribe, port)


def _disconnect(port: int) -> None:
    with clients(port, 1) as [(conn, recorder)]:
        conn.subscribe("/topic/z", id="z")
        # stomp.py's disconnect(receipt=...) waits for its thread without a time
        # limit: a thread of its own, and this one waits for the listener.
        threading.Thread(target=conn.disconnect, kwargs={"receipt": "bye"}, daemon=True).start()
        recorder.wait(lambda: "bye" in recorder.receipts and recorder.disconnected, "the end")
        assert recorder.errors == []


async def test_disconnect_with_a_receipt(port: int) -> None:
    await in_thread(_disconnect, port)


def _escaping_and_bodies(port: int) -> None:
    odd = "/topic/odd:name\\with\nbreak"
    with clients(port, 2) as [(sub, rsub), (sender, rs)]:
        sub.subscribe(odd, id="id:with\\colons", headers={"receipt": "r:1"})
        rsub.wait_receipt("r:1")  # the receipt-id came back escaped, as it went
        sender.send(odd, "one")
        # A body holding NULs, read as its content-length says (stomp.py sends one).
        sender.send(odd, b"two\x00parts\x00", headers={"receipt": "nul"})
        rs.wait_receipt("nul")
        first, second = rsub.wait_messages(2)
        assert first.headers["destination"] == odd
        assert first.headers["subscription"] == "id:with\\colons"
        assert second.headers["content-length"] == "10"
        assert second.body == "two\x00parts\x00"


async def test_escaped_headers_and_bodies_with_nuls(port: int) -> None:
    await in_thread(_escaping_and_bodies, port)


# -- raw frames ------------------------------------------------------------------------------


async def exchange(port: int, data: bytes, chunk: int = 0) -> list[bytes]:
    """Send ``data`` in one write (or in writes of ``chunk`` bytes); the frames
    received until the server closes."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for start in range(0, len(data), chunk or len(data)):
            writer.write(data[start : start + (chunk or len(data))])
            await writer.drain()
        got = await reader.read()
        writer.close()
    assert got.endswith(b"\x00"), got
    return got[:-1].split(b"\x00")


def headers(frame: bytes) -> dict[str, str]:
    head = frame.decode().split("\n\n", 1)[0].split("\n")[1:]
    return dict(line.split(":", 1) for line in head)


@pytest.mark.parametrize("chunk", [0, 1, 7])
async def test_pipelined_frames_with_heart_beats_between(port: int, chunk: int) -> None:
    # In one write (or a few bytes at a time): EOLs (heart-beats) between frames,
    # CRLF line ends, a body holding NULs whose content-length says where it ends,
    # and repeated headers.
    frames = await exchange(
        port,
        b"STOMP\r\naccept-version:1.1,1.2\r\nhost:h\r\n\r\n\x00\n\r\n"
        b"SUBSCRIBE\nid:s\\\\1\ndestination:a\\cb\nreceipt:sub\n\n\x00\n"
        b"SEND\ndestination:a:b\ndestination:ignored\ncontent-length:5\nreceipt:r\\n1\n\n"
        b"x\x00y\x00z\x00\r\n"
        b"UNSUBSCRIBE\nid:s\\\\1\n\n\x00"
        b"SEND\ndestination:a\\cb\n\nnobody\x00\n"
        b"DISCONNECT\nreceipt:bye\n\n\x00\n",
        chunk,
    )
    assert re.fullmatch(
        rb"CONNECTED\nversion:1\.2\nheart-beat:0,0\nserver:statemachine-server/\S+\n"
        rb"session:\d+\n\n",
        frames[0],
    )
    assert frames[1:] == [
        b"RECEIPT\nreceipt-id:sub\n\n",
        # The destination as 1.2 escapes it, whatever the spelling it was sent with.
        b"MESSAGE\nsubscription:s\\\\1\nmessage-id:1\ndestination:a\\cb\ncontent-length:5\n\nx",
        b"y",  # the body's own NULs: split here, not by the server
        b"z",
        b"RECEIPT\nreceipt-id:r\\n1\n\n",
        b"RECEIPT\nreceipt-id:bye\n\n",
    ]


BAD_FRAMES = [
    (b"hello\n\n\x00", "malformed frame"),
    (b"SEND\ndestination:/a\n\x00", "malformed frame"),  # no empty line
    (b"SEND\ndestination:/a\n\nx\x00", "expected CONNECT or STOMP, not SEND"),
    (
        CONNECT + b"SUBSCRIBE\ndestination:/a\nreceipt:77\n\n\x00",
        "SUBSCRIBE needs id and destination headers",
    ),
    (
        CONNECT + b"SUBSCRIBE\nid:1\ndestination:/a\nack:client\n\n\x00",
        "only ack:auto is supported",
    ),
    (
        CONNECT + b"SUBSCRIBE\nid:1\ndestination:/a\n\n\x00SUBSCRIBE\nid:1\ndestination:/b\n\n\x00",
        "subscription id 1 is in use",
    ),
    (CONNECT + b"SUBSCRIBE\nid:1\ndestination:a\\tb\n\n\x00", "malformed header line"),
    (CONNECT + b"SUBSCRIBE\nid:1\ndestination:a\\\n\n\x00", "malformed header line"),
    (CONNECT + b"SUBSCRIBE\nid 1\ndestination:/a\n\n\x00", "malformed header line"),
    (CONNECT + b"SUBSCRIBE\nid:1\ndestination:/a\n\nbody\x00", "SUBSCRIBE frames have no body"),
    (CONNECT + b"UNSUBSCRIBE\nid:nope\n\n\x00", "no subscription nope"),
    (CONNECT + b"SEND\n\nx\x00", "SEND needs a destination header"),
    (
        CONNECT + b"SEND\ndestination:/a\ncontent-length:2\n\nabc\x00",
        "body longer than content-length",
    ),
    (CONNECT + b"SEND\ndestination:/a\ncontent-length:x\n\nabc\x00", "bad content-length"),
    (
        CONNECT + b"SEND\ndestination:/a\ntransaction:t\n\nx\x00",
        "transactions are not supported",
    ),
    (CONNECT + b"BEGIN\ntransaction:t\n\n\x00", "transactions are not supported"),
    (CONNECT + b"ACK\nid:1\n\n\x00", "ACK: subscriptions are ack:auto only"),
    (CONNECT + CONNECT, "already connected"),
    (CONNECT + b"FROB\n\n\x00", "unknown command FROB"),
    (CONNECT + b"SEND\n" + b"h:v\n" * 300 + b"\n\x00", "too many header lines"),
]


@pytest.mark.parametrize(("frame", "message"), BAD_FRAMES, ids=[m for _, m in BAD_FRAMES])
async def test_a_bad_frame_gets_error_then_close(port: int, frame: bytes, message: str) -> None:
    *before, error = await exchange(port, frame)
    assert all(f.startswith(b"CONNECTED\n") for f in before)
    assert error.startswith(b"ERROR\n")
    assert headers(error)["message"] == message
    assert error.endswith(b"\n\n" + message.encode() + b"\n")
    assert headers(error)["content-length"] == str(len(message) + 1)
    if b"receipt:77" in frame:
        assert headers(error)["receipt-id"] == "77"


async def test_other_protocol_versions_are_refused(port: int) -> None:
    for connect in (b"CONNECT\naccept-version:1.0,1.1\n\n\x00", b"CONNECT\n\n\x00"):
        (error,) = await exchange(port, connect)
        assert error.startswith(b"ERROR\n")
        assert headers(error)["version"] == "1.2"


async def test_a_frame_over_the_limit_gets_error(port: int) -> None:
    (error,) = await exchange(port, b"SEND\ndestination:/a\n\n" + b"x" * (1 << 20) + b"\x00")
    assert error.startswith(b"ERROR\nmessage:frame refused\n")
