"""The example specs, end to end, against real clients written by someone else."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from statemachine_server import Kernel
from statemachine_server.language import build_server, load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TIMEOUT = 20.0


@pytest.fixture
def spec_server(serve_spec: Any) -> Callable[..., Any]:
    """``await spec_server("chat.yaml", **build_server kwargs)`` -> a served TCPServer."""
    return lambda name, **kwargs: serve_spec(SPECS / name, **kwargs)


# -- SMTP ------------------------------------------------------------------------------


def _message(n: int, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "ada@example.org"
    msg["To"] = "bob@example.org"
    msg["Subject"] = f"message {n}"
    msg.set_content(body)
    return msg


def _send(port: int, bodies: list[str], tag: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        assert client.noop()[0] == 250
        for n, body in enumerate(bodies):
            refused = client.send_message(
                _message(n, f"{tag}\n{body}"),
                to_addrs=["bob@example.org", f"carol+{tag}@example.org"],
            )
            assert refused == {}
        client.rset()


def _stored(folder: Path) -> list[str]:
    return sorted(p.read_bytes().decode() for p in folder.glob("*.eml"))


async def test_smtp_several_messages_over_one_connection(spec_server: Any, tmp_path: Path) -> None:
    server = await spec_server("smtp-sink.yaml", heap={"folder": str(tmp_path)})
    bodies = ["plain text", ".a line starting with a dot\n..two dots\n.\nend", "x" * 900]
    async with asyncio.timeout(TIMEOUT):
        await asyncio.to_thread(_send, server.port, bodies, "one")
    stored = _stored(tmp_path)
    assert len(stored) == 3
    dotted = next(text for text in stored if "Subject: message 1" in text)
    # Dot-unstuffing gives back exactly what was sent, leading dots included.
    assert "\r\n.a line starting with a dot\r\n..two dots\r\n.\r\nend\r\n" in dotted
    assert dotted.startswith(
        "X-Sink-Mail-From: <ada@example.org>\r\n"
        "X-Sink-Rcpt-To: <bob@example.org>, <carol+one@example.org>\r\n"
    )
    assert not list(tmp_path.glob(".*.tmp"))


async def test_smtp_several_connections_at_once(spec_server: Any, tmp_path: Path) -> None:
    server = await spec_server("smtp-sink.yaml", heap={"folder": str(tmp_path)})
    async with asyncio.timeout(TIMEOUT * 2):
        await asyncio.gather(
            *(asyncio.to_thread(_send, server.port, ["a", ".b", "c"], f"c{n}") for n in range(8))
        )
    stored = _stored(tmp_path)
    assert len(stored) == 24
    for n in range(8):
        mine = [text for text in stored if f"<carol+c{n}@example.org>" in text]
        assert len(mine) == 3 and all(f"\r\n\r\nc{n}\r\n" in text for text in mine)


async def test_smtp_bad_sequence_and_unknown_commands(spec_server: Any, tmp_path: Path) -> None:
    server = await spec_server("smtp-sink.yaml", heap={"folder": str(tmp_path)})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"DATA\r\nHELO me\r\nRCPT TO:<x@y>\r\nFROB\r\nMAIL FROM:<>\r\nQUIT\r\n")
    async with asyncio.timeout(TIMEOUT):
        replies = (await reader.read()).decode().splitlines()
    writer.close()
    assert [r[:3] for r in replies] == ["220", "503", "250", "503", "500", "250", "221"]


# -- memcache --------------------------------------------------------------------------


def _memcache(port: int) -> None:
    from pymemcache.client.base import Client

    client = Client(("127.0.0.1", port), timeout=TIMEOUT, default_noreply=False)
    try:
        values = {
            "plain": b"hello",
            "crlf": b"line one\r\nline two\r\n",
            "lone": b"\r\n",
            "binary": bytes(range(256)),
            "dots": b".\r\n.\r\n",
            "empty-ish": b" ",
        }
        for key, value in values.items():
            assert client.set(key, value) is True
        for key, value in values.items():
            assert client.get(key) == value
        assert client.get_many(["plain", "missing", "crlf"]) == {
            "plain": b"hello",
            "crlf": values["crlf"],
        }
        assert client.delete("plain") is True
        assert client.get("plain") is None
        assert client.delete("plain") is False
        # noreply: pipelined with what follows, no answer expected.
        client.set("quiet", b"q\r\nq", noreply=True)
        assert client.get("quiet") == b"q\r\nq"
        big = b"\r\n".join(b"%d" % i for i in range(20000))
        assert client.set("big", big) is True
        assert client.get("big") == big
    finally:
        client.close()


async def test_memcache_with_pymemcache(spec_server: Any) -> None:
    pytest.importorskip("pymemcache")
    server = await spec_server("memcache-lite.yaml")
    async with asyncio.timeout(TIMEOUT):
        await asyncio.to_thread(_memcache, server.port)
    assert sorted(server.heap["items"]) == [
        "big",
        "binary",
        "crlf",
        "dots",
        "empty-ish",
        "lone",
        "quiet",
    ]


async def test_memcache_pipelined_and_bad_chunk(spec_server: Any) -> None:
    server = await spec_server("memcache-lite.yaml")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    # All in one write: the switch to the block filter happens mid-read.
    writer.write(b"set a 5 0 4\r\na\r\nb\r\nget a\r\nset b 0 0 2\r\nxyz\r\n")
    async with asyncio.timeout(TIMEOUT):
        data = await reader.read()
    writer.close()
    assert data == (b"STORED\r\nVALUE a 5 4\r\na\r\nb\r\nEND\r\nCLIENT_ERROR bad data chunk\r\n")


# -- chat ------------------------------------------------------------------------------


class ChatClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def line(self) -> str:
        async with asyncio.timeout(TIMEOUT):
            return (await self.reader.readline()).decode().rstrip("\n")

    async def until(self, text: str) -> list[str]:
        seen = []
        while (line := await self.line()) != text:
            assert line, f"closed before {text!r}; saw {seen}"
            seen.append(line)
        return seen

    def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n")


async def chat_client(port: int, nick: str) -> ChatClient:
    client = ChatClient(*await asyncio.open_connection("127.0.0.1", port))
    assert await client.line() == "Welcome to chat. Your nick?"
    client.send(nick)
    assert (await client.line()).startswith(f"Hello {nick}, you are in #lobby.")
    return client


async def test_chat_many_concurrent_clients_in_rooms(spec_server: Any) -> None:
    server = await spec_server("chat.yaml")
    n, rooms = 60, 3
    clients = await asyncio.gather(*(chat_client(server.port, f"u{i}") for i in range(n)))

    async def join(i: int, client: ChatClient) -> None:
        client.send(f"/join room{i % rooms}")
        await client.until(
            f"Hello u{i}, you are in #room{i % rooms}. /join ROOM to move, /quit to leave."
        )

    await asyncio.gather(*(join(i, c) for i, c in enumerate(clients)))
    for i, client in enumerate(clients):
        client.send(f"hi from u{i}")

    async def hear(i: int, client: ChatClient) -> None:
        want = {f"<u{j}> hi from u{j}" for j in range(i % rooms, n, rooms)}
        heard: set[str] = set()
        while heard != want:
            line = await client.line()
            assert line, f"u{i} closed early"
            if not line.startswith("*"):  # join/leave notices
                assert line in want, f"u{i} heard {line!r} from another room"
                heard.add(line)

    await asyncio.gather(*(hear(i, c) for i, c in enumerate(clients)))

    async def quit(client: ChatClient) -> None:
        client.send("/quit")
        await client.until("Bye.")
        async with asyncio.timeout(TIMEOUT):
            rest = (await client.reader.read()).decode().splitlines()
        assert all(line.startswith("* ") for line in rest)  # others leaving, then EOF
        client.writer.close()

    await asyncio.gather(*(quit(c) for c in clients))


async def test_chat_commands_and_leaving_notices(spec_server: Any) -> None:
    server = await spec_server("chat.yaml")
    ada = await chat_client(server.port, "ada")
    bob = await chat_client(server.port, "bob")
    assert await ada.line() == "* bob joined #lobby"
    bob.send("/frob")
    assert await bob.line() == "Commands: /join ROOM (once you have a nick), /quit."
    bob.send("/join attic")
    assert await ada.line() == "* bob left #lobby"
    await bob.until("Hello bob, you are in #attic. /join ROOM to move, /quit to leave.")
    ada.send("anyone?")
    assert await ada.line() == "<ada> anyone?"
    bob.send("/join lobby")
    assert await ada.line() == "* bob joined #lobby"
    bob.writer.close()  # without /quit: the disconnected handler tells the room
    assert await ada.line() == "* bob left #lobby"
    ada.send("/quit")
    assert await ada.line() == "Bye."
    assert await ada.line() == ""
    ada.writer.close()


async def test_chat_nick_timeout_and_quit(spec_server: Any) -> None:
    import msgspec

    spec = load_spec(SPECS / "chat.yaml")
    login = spec.states["login"]
    quick = msgspec.structs.replace(
        spec,
        states={
            **spec.states,
            "login": msgspec.structs.replace(
                login, timeout=msgspec.structs.replace(login.timeout, after=0.05)
            ),
        },
    )
    kernel = Kernel()
    started = asyncio.Event()
    server = build_server(quick, kernel, port=0, on_started=lambda s: started.set())
    task = asyncio.create_task(kernel.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            await started.wait()
        slow = ChatClient(*await asyncio.open_connection("127.0.0.1", server.port))
        assert await slow.line() == "Welcome to chat. Your nick?"
        assert await slow.line() == "No nick after 60 seconds. Bye."
        assert await slow.line() == ""  # closed
        slow.writer.close()
        # A nick given in time cancels the state timeout: the client stays.
        fast = await chat_client(server.port, "quick")
        fast.send("/who")
        assert await fast.line() == "Commands: /join ROOM (once you have a nick), /quit."
        fast.send("/quit")
        assert await fast.line() == "Bye."
        assert await fast.line() == ""
        fast.writer.close()
    finally:
        await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(TIMEOUT):
                await task
