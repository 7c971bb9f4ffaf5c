"""specs/line-proxy.yaml when upstream fails: the client is told something generic
and closed, the details (the upstream's address, the reset) go to the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, TIMEOUT, connect, read_all

PROXY = ROOT / "specs" / "line-proxy.yaml"


async def test_a_connect_error_does_not_tell_the_client_where_upstream_is(
    serve_spec: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gone = await serve_spec("handlers: {}\n")
    port = gone.port
    gone.close()  # nothing listens there now
    proxy = await serve_spec(PROXY, heap={"upstream_port": str(port)})
    caplog.set_level(logging.WARNING, "statemachine_server")
    reader, writer = await connect(proxy)
    writer.write(b"hello\n")
    out = await read_all(reader)
    writer.close()
    assert out == b"upstream unavailable: try again later\n"
    assert f"client 'upstream' cannot connect to 127.0.0.1:{port}" in caplog.text


async def test_an_upstream_reset_mid_line_is_logged_and_told(
    serve_spec: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"half a li")  # no end of line: then a reset (RST, not FIN)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    upstream = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    try:
        proxy = await serve_spec(PROXY, heap={"upstream_port": str(port)})
        caplog.set_level(logging.WARNING, "statemachine_server")
        reader, writer = await connect(proxy)
        writer.write(b"hello\n")
        out = await read_all(reader)
        writer.close()
        assert out == b"proxy error: closing\n"
        assert "client 'upstream': connection lost" in caplog.text
    finally:
        upstream.close()


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port whose connects never complete: a listening socket that accepts
    nothing, its queue (listen(0): one connection) already full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(2):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_a_black_hole_upstream_is_cut_off_by_connect_timeout(serve_spec: Any) -> None:
    text = PROXY.read_text().replace("connect_timeout: 5", "connect_timeout: 0.3")
    assert "connect_timeout: 0.3" in text
    with black_hole() as port:
        proxy = await serve_spec(text, heap={"upstream_port": str(port)})
        started = time.monotonic()
        reader, writer = await connect(proxy)
        writer.write(b"hello\n")
        async with asyncio.timeout(TIMEOUT):
            out = await reader.read()
        writer.close()
    assert out == b"upstream unavailable: try again later\n"
    assert time.monotonic() - started < 3.0  # 0.3 s, not the 300 s idle timeout
