"""Chunked work over real sockets: a client that resets mid-job stops it at once;
one that half-closes still gets the job's answer (``nc -N``, ``shutdown(SHUT_WR)``).

TCP cannot tell a half-close from a full close until something is written back:
both arrive as a FIN. A job that writes (progress, say) finds out at its next
write; a silent one runs to its end or its timeout, and its answer is sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

from conftest import TIMEOUT, connect

from statemachine_server import Connection


async def test_client_resetting_mid_job_closes_the_generator(serve: Any) -> None:
    running, finished = asyncio.Event(), asyncio.Event()

    def forever() -> Iterator[None]:
        try:
            while True:
                running.set()
                yield
        finally:
            finished.set()

    def on_input(session: Connection, line: str) -> None:
        session.put("started")
        session.work(forever())

    server = await serve(on_input=on_input)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"go\n")
    async with asyncio.timeout(TIMEOUT):
        await running.wait()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    async with asyncio.timeout(TIMEOUT):
        await finished.wait()
    assert server.kernel.statistics().jobs == 0


async def test_client_half_closing_mid_job_gets_the_answer(serve: Any) -> None:
    def count(n: int) -> Iterator[None]:
        for _ in range(n):
            yield

    def on_input(session: Connection, line: str) -> None:
        session.work(count(int(line)), lambda s, result: s.put(f"done {line}"))

    server = await serve(on_input=on_input)
    reader, writer = await connect(server)
    writer.write(b"200000\n1\n")
    writer.write_eof()
    async with asyncio.timeout(TIMEOUT):
        assert await reader.read() == b"done 200000\ndone 1\n"
    writer.close()


async def test_on_done_that_raises_closes_only_its_connection(serve: Any) -> None:
    def on_input(session: Connection, line: str) -> None:
        if line == "bad":
            session.work(iter([1, 2]), lambda s, result: 1 / 0)
        else:
            session.put(line)

    server = await serve(on_input=on_input)
    bad = await connect(server)
    good = await connect(server)
    bad[1].write(b"bad\n")
    async with asyncio.timeout(TIMEOUT):
        assert await bad[0].read() == b""  # closed
    good[1].write(b"fine\n")
    async with asyncio.timeout(TIMEOUT):
        assert await good[0].readline() == b"fine\n"
    assert server.statistics().handler_errors == 1
    for _, writer in (bad, good):
        writer.close()
