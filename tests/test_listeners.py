"""Listening on IPv6, on a Unix domain socket, and with TLS; all on this machine only."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import TIMEOUT, read_all, wait_until

from statemachine_server import Connection, server_ssl_context
from statemachine_server.limits import Limits


def echo(session: Connection, line: str) -> None:
    session.put(line)


async def echo_through(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(100))
    writer.write(lines)
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(len(lines)) == lines


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_echo(serve: Any) -> None:
    server = await serve(on_input=echo, host="::1")
    assert server.host == "::1" and server.port > 0
    reader, writer = await asyncio.open_connection("::1", server.port)
    await echo_through(reader, writer)
    writer.write_eof()
    assert await read_all(reader) == b""
    writer.close()


async def test_unix_socket_echo(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    server = await serve(on_input=echo, path=path)
    assert server.path == str(path) and path.is_socket()
    reader, writer = await asyncio.open_unix_connection(path)
    await echo_through(reader, writer)
    writer.close()
    server.close()
    assert not path.exists()  # the socket file goes with the server


async def test_unix_socket_left_by_a_dead_server_is_replaced(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))
    assert path.is_socket()
    server = await serve(on_input=echo, path=path)
    reader, writer = await asyncio.open_unix_connection(server.path)
    await echo_through(reader, writer)
    writer.close()


async def test_unix_socket_path_that_is_a_regular_file_is_not_replaced(tmp_path: Path) -> None:
    from statemachine_server import Kernel, TCPServer

    path = tmp_path / "data.txt"
    path.write_text("keep me")
    with pytest.raises(OSError):
        TCPServer(Kernel(), path=path)
    assert path.read_text() == "keep me"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return server_ssl_context(pem)


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_echo(serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext) -> None:
    server = await serve(on_input=echo, ssl=server_tls)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    await echo_through(reader, writer)
    writer.write(b"\xff\x00 bytes\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"\xff\x00 bytes\n"
    writer.close()


async def test_failed_tls_handshake_leaves_no_session(
    serve: Any, server_tls: ssl.SSLContext
) -> None:
    server = await serve(on_input=echo, ssl=server_tls)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the handshake fails
    await read_all(reader)  # the server hung up
    writer.close()
    # Only the server's own session: no connection was made for that client.
    assert server.kernel.statistics().sessions == 1


async def test_tls_client_certificate_can_be_required(
    serve: Any, ca: trustme.CA, tmp_path: Path
) -> None:
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = server_ssl_context(tmp_path / "server.pem", client_ca=tmp_path / "ca.pem")
    server = await serve(on_input=echo, ssl=context)
    with_cert = client_tls(ca)
    ca.issue_cert("client@example.org").configure_cert(with_cert)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=with_cert, server_hostname="localhost"
    )
    await echo_through(reader, writer)
    writer.close()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    # TLS 1.3 completes the client's handshake before the server checks the
    # certificate: the refusal shows as an alert or EOF on the first read.
    with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
        writer.write(b"hello\n")
        async with asyncio.timeout(TIMEOUT):
            await reader.readexactly(6)
    writer.close()


async def test_tls_client_closing_is_not_a_warning(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    gone = asyncio.Event()
    server = await serve(on_input=echo, ssl=server_tls, on_disconnected=lambda s: gone.set())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    await echo_through(reader, writer)
    writer.close()  # sends close_notify: the server sees end of input
    async with asyncio.timeout(TIMEOUT):
        await gone.wait()
    assert "WARNING" not in caplog.text


async def test_tls_replies_past_max_output_abort_only_that_client(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    # Over TLS the transport's buffer size is what TLS holds back once the socket
    # below it is full: the bound holds there too.
    server = await serve(
        on_input=lambda s, line: s.put("y" * 300_000 if line == "more" else line),
        ssl=server_tls,
        limits=Limits(high_water=65536, low_water=16384, max_output=1_000_000),
    )
    _, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    writer.write(b"more\n" * 100)  # 30 MB of replies, and this client reads none
    await wait_until(lambda: server.statistics().overflows == 1)
    other = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    await echo_through(*other)  # and the other clients are served
    other[1].close()
    writer.close()


async def test_tls_client_that_reads_may_get_more_than_max_output_at_once(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    # The bound is on what the client leaves unread, not on what one tick sends:
    # a reply past max_output to a client that reads it is delivered whole.
    size = 1_000_000 + 1000
    server = await serve(
        on_input=lambda s, line: s.put("z" * size),
        ssl=server_tls,
        limits=Limits(high_water=65536, low_water=16384, max_output=1_000_000),
    )
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    writer.write(b"go\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(size + 1) == b"z" * size + b"\n"
    assert server.statistics().overflows == 0
    writer.close()
