"""specs/smtp-sink.yaml's ESMTP: AUTH PLAIN, SIZE, bounded recipients and DATA.

The client is Python's own ``smtplib`` wherever it can say what is tested, and a
raw socket where a client must misbehave (a message over the limit without
SIZE) or send everything in one write.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

SPEC = Path(__file__).resolve().parent.parent / "specs" / "smtp-sink.yaml"
TIMEOUT = 20.0
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"


@pytest.fixture
def sink(serve_spec: Any, tmp_path: Path) -> Callable[..., Any]:
    """``await sink(NAME=VALUE...)``: the sink, writing to ``tmp_path``, with
    server-heap overrides given as ``run --set`` gives them (text)."""

    async def start(**heap: Any) -> Any:
        return await serve_spec(SPEC, heap={"folder": str(tmp_path), **heap})

    return start


def _stored(folder: Path) -> list[str]:
    return sorted(p.read_bytes().decode() for p in folder.glob("*.eml"))


def _plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.to_thread(fn, *args)


class Raw:
    """A raw SMTP client: send anything, read whole (multi-line) replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        async with asyncio.timeout(TIMEOUT):
            raw = cls(*await asyncio.open_connection("127.0.0.1", port))
            assert (await raw.reply())[0].startswith("220 ")
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()

    async def reply(self) -> list[str]:
        """One reply's lines: up to the line whose code is followed by a space."""
        lines: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while not lines or lines[-1][3:4] != " ":
                line = await self.reader.readline()
                assert line.endswith(b"\r\n"), f"connection closed after {lines}"
                lines.append(line[:-2].decode())
        return lines

    async def replies(self, count: int) -> list[str]:
        """The last line of each of the next ``count`` replies."""
        return [(await self.reply())[-1] for _ in range(count)]

    async def close(self) -> None:
        self.writer.close()
        async with asyncio.timeout(TIMEOUT):
            await self.writer.wait_closed()


# -- EHLO, HELO ------------------------------------------------------------------------


async def test_ehlo_is_multiline_and_helo_one_line(sink: Any) -> None:
    server = await sink()

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            code, text = smtp.ehlo("me.example")
            assert code == 250 and text.decode().startswith("smtp-sink greets me.example\n")
            features = smtp.esmtp_features
            assert features["size"] == str(10 << 20)
            assert features["auth"].split() == ["PLAIN"]
            assert "pipelining" in features and "enhancedstatuscodes" in features
            assert smtp.helo("me.example") == (250, b"smtp-sink greets me.example")

    await _in_thread(client)


# -- AUTH PLAIN ------------------------------------------------------------------------


async def test_login_then_send(sink: Any, tmp_path: Path) -> None:
    server = await sink(users={"alice": "secret", "bob": "other"})

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            assert smtp.login("alice", "secret")[0] == 235
            assert smtp.docmd("AUTH", "PLAIN " + _plain("alice", "secret"))[0] == 503
            smtp.sendmail("alice@example.org", ["bob@example.org"], "Subject: hi\r\n\r\nhello\r\n")

    await _in_thread(client)
    (stored,) = _stored(tmp_path)
    assert stored == (
        "X-Sink-Mail-From: <alice@example.org>\r\nX-Sink-Rcpt-To: <bob@example.org>\r\n"
        "X-Sink-Auth-User: alice\r\nSubject: hi\r\n\r\nhello\r\n"
    )


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "wrong"), ("carol", "secret"), ("alice", ""), ("", "")]
)
async def test_login_failure(sink: Any, user: str, password: str) -> None:
    server = await sink(users={"alice": "secret"})

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                smtp.login(user, password)
            assert failed.value.smtp_code == 535
            assert failed.value.smtp_error == b"5.7.8 Authentication credentials invalid"
            assert smtp.noop()[0] == 250  # the session goes on

    await _in_thread(client)


async def test_auth_plain_with_a_continuation_and_the_command_line_account(sink: Any) -> None:
    # --set user=... --set password=...: the account beside (here: instead of) `users`.
    server = await sink(user="ada", password="pw")

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = "ada", "pw"
            # `AUTH PLAIN` alone, then the response after `334 `.
            code, _ = smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=False)
            assert code == 235

    await _in_thread(client)


async def test_malformed_cancelled_and_misplaced_auth(sink: Any) -> None:
    server = await sink(users={"alice": "secret"})
    raw = await Raw.open(server.port)
    await raw.send(b"AUTH PLAIN " + _plain("alice", "secret").encode() + b"\r\n")
    assert await raw.replies(1) == ["503 5.5.1 Bad sequence of commands"]  # before EHLO
    await raw.send(b"EHLO me\r\n")
    assert (await raw.reply())[-1] == "250 ENHANCEDSTATUSCODES"
    for bad in (b"AUTH PLAIN not*base64", b"AUTH PLAIN YWJj=", b"AUTH PLAIN ="):
        await raw.send(bad + b"\r\n")
        assert await raw.replies(1) == ["501 5.5.2 Cannot decode the AUTH response"]
    await raw.send(b"AUTH PLAIN\r\n*\r\nAUTH LOGIN\r\nAUTH\r\n")
    assert await raw.replies(4) == [
        "334 ", "501 5.7.0 Authentication cancelled", "504 5.5.4 Unrecognized authentication type",
        "501 5.5.4 Syntax: AUTH mechanism",
    ]  # fmt: skip
    # An authzid other than the user: refused; the user itself: fine.
    await raw.send(f"AUTH PLAIN {_plain('alice', 'secret', 'root')}\r\n".encode())
    await raw.send(f"AUTH PLAIN {_plain('alice', 'secret', 'alice')}\r\n".encode())
    await raw.send(b"MAIL FROM:<a@b>\r\nAUTH PLAIN\r\nQUIT\r\n")
    assert await raw.replies(5) == [
        "535 5.7.8 Authentication credentials invalid", "235 2.7.0 Authentication successful",
        "250 2.1.0 OK", "503 5.5.1 Bad sequence of commands",
        "221 2.0.0 smtp-sink closing connection",
    ]  # fmt: skip
    await raw.close()


async def test_require_auth(sink: Any, tmp_path: Path) -> None:
    server = await sink(users={"alice": "secret"}, require_auth="true")

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                smtp.sendmail("a@b", ["c@d"], "Subject: x\r\n\r\nx\r\n")
            assert refused.value.smtp_code == 530
            smtp.login("alice", "secret")
            assert smtp.sendmail("a@b", ["c@d"], "Subject: x\r\n\r\nx\r\n") == {}

    await _in_thread(client)
    assert len(_stored(tmp_path)) == 1


# -- SIZE and recipients ---------------------------------------------------------------


async def test_size_declared_over_the_limit_is_refused_at_mail(sink: Any, tmp_path: Path) -> None:
    server = await sink(max_size="1000")  # as `run --set max_size=1000` gives it

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            assert smtp.esmtp_features["size"] == "1000"
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                smtp.sendmail("a@b", ["c@d"], "Subject: big\r\n\r\n" + "x" * 1000 + "\r\n")
            assert refused.value.smtp_code == 552
            assert refused.value.smtp_error == TOO_BIG[4:].encode()
            # Under the limit, on the same connection: stored.
            assert smtp.sendmail("a@b", ["c@d"], "Subject: small\r\n\r\nok\r\n") == {}

    await _in_thread(client)
    (stored,) = _stored(tmp_path)
    assert "Subject: small" in stored


async def test_data_over_the_limit_keeps_nothing_and_is_refused_at_the_end(
    sink: Any, tmp_path: Path
) -> None:
    limit = 10_000
    server = await sink(max_size=limit)
    raw = await Raw.open(server.port)
    # No SIZE: the client says nothing of the size, then sends 50 times the limit.
    await raw.send(b"EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    assert (await raw.replies(4))[1:] == [
        "250 2.1.0 OK", "250 2.1.5 OK", "354 End data with <CR><LF>.<CR><LF>",
    ]  # fmt: skip
    line = b"x" * 998 + b"\r\n"
    for _ in range(500):
        await raw.send(line)
    (session,) = [s for s in server.kernel.sessions() if "recipients" in s.heap]
    await wait_until(lambda: session.heap["size"] == 500 * len(line))
    # Counted to the end, but what was kept is let go and nothing more is kept.
    assert "lines" not in session.heap
    await raw.send(b".\r\n")
    assert await raw.replies(1) == [TOO_BIG]
    assert not _stored(tmp_path)
    # Back to ready, the envelope gone: a new transaction works.
    await raw.send(b"RCPT TO:<c@d>\r\nMAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\nok\r\n.\r\n")
    got = await raw.replies(5)
    assert got[:4] == ["503 5.5.1 Bad sequence of commands", "250 2.1.0 OK", "250 2.1.5 OK",
                       "354 End data with <CR><LF>.<CR><LF>"]  # fmt: skip
    assert got[4].startswith("250 2.0.0 OK: queued as ")
    assert session.heap["size"] == 0 and not session.heap["lines"]
    await raw.close()
    (stored,) = _stored(tmp_path)
    assert stored == "X-Sink-Mail-From: <e@f>\r\nX-Sink-Rcpt-To: <g@h>\r\nok\r\n"


async def test_data_exactly_at_the_limit_is_accepted(sink: Any, tmp_path: Path) -> None:
    server = await sink(max_size=100)
    raw = await Raw.open(server.port)
    await raw.send(b"HELO me\r\n")
    await raw.replies(1)
    # 48 + 2 bytes per line: two lines are exactly 100 bytes; a byte more is over.
    for body, code in ((b"a" * 48, "250"), (b"a" * 49, "552"), (b"." + b"a" * 48, "552")):
        await raw.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        await raw.send(b"a" * 48 + b"\r\n" + body + b"\r\n.\r\n")
        assert [r[:3] for r in await raw.replies(4)] == ["250", "250", "354", code]
    await raw.close()
    assert _stored(tmp_path) == ["X-Sink-Mail-From: <a@b>\r\nX-Sink-Rcpt-To: <c@d>\r\n"
                                 + ("a" * 48 + "\r\n") * 2]  # fmt: skip


async def test_too_many_recipients(sink: Any, tmp_path: Path) -> None:
    server = await sink(max_recipients="3")

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as smtp:
            rcpts = [f"r{n}@example.org" for n in range(5)]
            refused = smtp.sendmail("a@b", rcpts, "Subject: x\r\n\r\nx\r\n")
            assert refused == {r: (452, b"4.5.3 Too many recipients") for r in rcpts[3:]}

    await _in_thread(client)
    (stored,) = _stored(tmp_path)
    assert "X-Sink-Rcpt-To: <r0@example.org>, <r1@example.org>, <r2@example.org>\r\n" in stored


# -- pipelining ------------------------------------------------------------------------


async def test_pipelined_commands_are_answered_in_order(sink: Any, tmp_path: Path) -> None:
    server = await sink(users={"alice": "secret"})
    raw = await Raw.open(server.port)
    good, bad = _plain("alice", "secret"), _plain("alice", "nope")
    await raw.send(
        f"EHLO me\r\nAUTH PLAIN {bad}\r\nAUTH PLAIN\r\n{good}\r\nAUTH PLAIN {good}\r\n"
        "MAIL FROM:<a@b> SIZE=20\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n"
        "..one\r\ntwo\r\n.\r\nNOOP\r\nQUIT\r\n".encode()
    )
    got = await raw.replies(12)
    await raw.close()
    assert [r[:3] for r in got] == [
        "250", "535", "334", "235", "503", "250", "250", "250", "354", "250", "250", "221",
    ]  # fmt: skip
    (stored,) = _stored(tmp_path)
    assert stored == (
        "X-Sink-Mail-From: <a@b>\r\nX-Sink-Rcpt-To: <c@d>, <e@f>\r\n"
        "X-Sink-Auth-User: alice\r\n.one\r\ntwo\r\n"
    )
