"""TLS handshakes in progress: bounded in number (``max_handshakes``) and in time
(``handshake_timeout``), so clients that start a handshake and stop cannot hold
a TLS object and its buffers each for long, nor many of them."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import TIMEOUT, wait_until

from statemachine_server import Connection, server_ssl_context
from statemachine_server.limits import Limits

#: The first 6 bytes of a ClientHello (record header and handshake type): the
#: server's TLS layer waits for the rest.
HELLO_START = b"\x16\x03\x01\x02\x00\x01"


def echo(session: Connection, line: str) -> None:
    session.put(line)


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


async def stall(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends the start of a ClientHello, then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HELLO_START)
    await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(TIMEOUT):
        try:
            return await reader.read() == b""
        except ConnectionResetError:
            return True


async def tls_echo(port: int, ca: trustme.CA) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls(ca), server_hostname="localhost"
    )
    writer.write(b"hello\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"hello\n"
    writer.close()


async def test_handshakes_past_max_handshakes_are_refused(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    server = await serve(
        on_input=echo,
        ssl=server_tls,
        limits=Limits(max_handshakes=2, handshake_timeout=30.0),
    )
    stalled = [await stall(server.port) for _ in range(2)]
    await wait_until(lambda: server.statistics().handshakes == 2)
    reader, writer = await stall(server.port)
    assert await closed_by_server(reader)  # the third is closed at once
    stats = server.statistics()
    assert (stats.refused, stats.handshakes, stats.connections) == (1, 2, 0)
    writer.close()
    # A stalled client that leaves frees its slot: a real client is served.
    for _, w in stalled:
        w.close()
    await wait_until(lambda: server.statistics().handshakes == 0)
    await tls_echo(server.port, ca)
    assert server.statistics().connections in (0, 1)


async def test_a_handshake_that_stalls_is_cut_after_handshake_timeout(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    server = await serve(
        on_input=echo,
        ssl=server_tls,
        limits=Limits(max_handshakes=1, handshake_timeout=0.3),
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await stall(server.port)
    await wait_until(lambda: server.statistics().handshakes == 1)
    assert await closed_by_server(reader)
    assert loop.time() - started < 0.3 + 5.0  # cut by the timeout, not by the test's
    await wait_until(lambda: server.statistics().handshakes == 0)
    writer.close()
    await tls_echo(server.port, ca)  # the slot is free again
    assert server.statistics().refused == 0


async def test_a_failed_handshake_frees_its_slot(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    server = await serve(
        on_input=echo,
        ssl=server_tls,
        limits=Limits(max_handshakes=1, handshake_timeout=30.0),
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the handshake fails at once
    assert await closed_by_server(reader)
    writer.close()
    await wait_until(lambda: server.statistics().handshakes == 0, timeout=10.0)
    await tls_echo(server.port, ca)
    assert server.statistics().refused == 0


async def test_an_established_connection_no_longer_counts_as_a_handshake(
    serve: Any, ca: trustme.CA, server_tls: ssl.SSLContext
) -> None:
    server = await serve(on_input=echo, ssl=server_tls, limits=Limits(max_handshakes=1))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_tls(ca), server_hostname="localhost"
    )
    await wait_until(lambda: server.statistics().connections == 1)
    assert server.statistics().handshakes == 0
    await tls_echo(server.port, ca)  # a second client fits: the first is not counted
    writer.close()
    del reader
