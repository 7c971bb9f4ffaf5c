"""The TCP server over real sockets on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from conftest import TIMEOUT, connect, read_all

from statemachine_server import Connection, Kernel, TCPServer
from statemachine_server.limits import Limits


def echo(session: Connection, line: str) -> None:
    session.client.put(line)


async def test_port_zero_reports_the_bound_port(serve: Any) -> None:
    server = await serve(on_input=echo)
    assert server.host == "127.0.0.1"
    assert server.port > 0


async def test_default_address_is_loopback_only() -> None:
    server = TCPServer(Kernel())
    try:
        assert server.host == "127.0.0.1"
    finally:
        server.close()


async def test_200_clients_x_200_lines_all_echoed_in_order(serve: Any) -> None:
    server = await serve(on_input=echo)

    async def client(n: int) -> None:
        reader, writer = await connect(server)
        lines = [f"client {n} line {i} " + "x" * (i % 50) for i in range(200)]
        for start in range(0, 200, 50):  # pipelined, in a few bursts
            writer.write("".join(line + "\n" for line in lines[start : start + 50]).encode())
            await writer.drain()
        writer.write_eof()
        assert (await read_all(reader)).decode().splitlines() == lines
        writer.close()

    async with asyncio.timeout(TIMEOUT * 3):
        await asyncio.gather(*(client(n) for n in range(200)))


async def test_invalid_utf8_and_nul_bytes_echo_byte_for_byte(serve: Any) -> None:
    server = await serve(on_input=echo)
    reader, writer = await connect(server)
    payload = b"\xff\xfe\x00\xc3(\xed\xa0\x80 ok\n\x80\n"
    writer.write(payload)
    writer.write_eof()
    assert await read_all(reader) == payload
    writer.close()


async def test_half_close_after_1000_lines_gets_all_1000(serve: Any) -> None:
    server = await serve(on_input=echo)
    reader, writer = await connect(server)
    data = b"".join(b"line %d\n" % i for i in range(1000))
    writer.write(data)
    writer.write_eof()
    assert await read_all(reader) == data
    writer.close()


async def test_overlong_line_closes_only_that_client(serve: Any, caplog: Any) -> None:
    server = await serve(on_input=echo)
    r1, w1 = await connect(server)
    r2, w2 = await connect(server)
    w1.write(b"fine\n" + b"x" * (64 * 1024 + 10) + b"\n")
    assert await read_all(r1) == b"fine\n"  # earlier line answered, then EOF
    w2.write(b"still here\n")
    async with asyncio.timeout(TIMEOUT):
        assert await r2.readline() == b"still here\n"
    assert "line longer than 65536 bytes; closing" in caplog.text
    w1.close()
    w2.close()


async def test_handler_that_raises_affects_only_its_client(serve: Any) -> None:
    def on_input(session: Connection, line: str) -> None:
        if line == "crash":
            raise RuntimeError("bug in handler")
        session.put(line)

    server = await serve(on_input=on_input)
    r1, w1 = await connect(server)
    r2, w2 = await connect(server)
    w1.write(b"before\ncrash\nafter\n")
    assert await read_all(r1) == b"before\n"
    w2.write(b"ok\n")
    async with asyncio.timeout(TIMEOUT):
        assert await r2.readline() == b"ok\n"
    assert server.kernel.statistics().handler_errors == 1
    w1.close()
    w2.close()


async def test_callbacks_see_session_heap_and_address(serve: Any) -> None:
    events: list[Any] = []
    gone = asyncio.Event()

    def connected(session: Connection) -> None:
        session.heap["count"] = 0
        events.append(("connected", session.state, session.remote_ip))
        session.put(f"welcome {session.id}")

    def on_input(session: Connection, line: str) -> None:
        session.heap["count"] += 1
        session.put(f"{session.heap['count']}: {line}")

    def disconnected(session: Connection) -> None:
        events.append(("disconnected", session.state, session.heap["count"]))
        gone.set()

    server = await serve(on_input=on_input, on_connected=connected, on_disconnected=disconnected)
    reader, writer = await connect(server)
    writer.write(b"a\nb\n")
    writer.write_eof()
    lines = (await read_all(reader)).decode().splitlines()
    assert lines[0].startswith("welcome ") and lines[1:] == ["1: a", "2: b"]
    async with asyncio.timeout(TIMEOUT):
        await gone.wait()
    assert events == [("connected", "reading", "127.0.0.1"), ("disconnected", "closed", 2)]
    writer.close()


async def test_client_reset_mid_stream_leaves_the_server_serving(serve: Any) -> None:
    server = await serve(on_input=echo)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"x\n" * 1000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    reader, writer = await connect(server)
    writer.write(b"alive\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"alive\n"
    writer.close()


async def test_concurrency_limit_parks_instead_of_refusing(serve: Any) -> None:
    server = await serve(on_input=echo, limits=Limits(max_connections=1))
    r1, w1 = await connect(server)
    w1.write(b"first\n")
    async with asyncio.timeout(TIMEOUT):
        assert await r1.readline() == b"first\n"
    r2, w2 = await connect(server)  # accepted, but waiting for a slot
    w2.write(b"second\n")
    await asyncio.sleep(0.05)  # give it a chance to be (wrongly) served
    assert server.statistics().pending == 1
    w1.close()  # frees the slot
    async with asyncio.timeout(TIMEOUT):
        assert await r2.readline() == b"second\n"
    assert server.statistics().connections == 1
    w2.close()


async def test_sessions_are_freed_after_clients_leave(serve: Any) -> None:
    server = await serve(on_input=echo)
    kernel = server.kernel
    for _ in range(20):
        reader, writer = await connect(server)
        writer.write(b"hi\n")
        writer.write_eof()
        assert await read_all(reader) == b"hi\n"
        writer.close()
    async with asyncio.timeout(TIMEOUT):
        while kernel.statistics().sessions != 1:  # the listener alone
            await asyncio.sleep(0.01)
    assert server.statistics().connections == 0


async def test_graceful_shutdown_answers_received_input(serve: Any) -> None:
    server = await serve(on_input=echo)
    reader, writer = await connect(server)
    writer.write(b"one\ntwo\n")
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"one\n"
        await server.kernel.shutdown(deadline=TIMEOUT)
    assert b"two\n" in (await read_all(reader))  # answered, then EOF
    assert server.kernel.statistics().sessions == 0
    writer.close()


async def test_backpressure_from_a_client_that_does_not_read(serve: Any) -> None:
    server = await serve(
        on_input=lambda s, line: s.put("y" * 10_000),
        limits=Limits(high_water=32_768, low_water=8192),
    )
    reader, writer = await connect(server)
    states: set[str] = set()
    writer.write(b"go\n" * 2000)  # asks for 20 MB of replies; we read none yet
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        while "replying" not in states:
            states = {s.state for s in server.kernel.sessions()}
            await asyncio.sleep(0.01)
    got = 0
    async with asyncio.timeout(TIMEOUT):
        while got < 2000 * 10_001:
            chunk = await reader.read(1 << 20)
            assert chunk
            got += len(chunk)
    assert got == 2000 * 10_001
    writer.close()


async def test_shutdown_past_its_deadline_cuts_off_busy_clients(serve: Any) -> None:
    def slow(session: Connection, line: str) -> None:
        session.work(iter(range(10**9)))  # never finishes on its own

    server = await serve(on_input=slow)
    reader, writer = await connect(server)
    writer.write(b"go\n")
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        while not any(s.state == "working" for s in server.kernel.sessions()):
            await asyncio.sleep(0.01)
        await server.kernel.shutdown(deadline=0.2)
        assert await reader.read() == b""  # cut off, not left hanging
    writer.close()


async def test_put_from_outside_a_handler_is_sent(serve: Any) -> None:
    sessions: list[Connection] = []
    server = await serve(on_connected=sessions.append)
    reader, writer = await connect(server)
    async with asyncio.timeout(TIMEOUT):
        while not sessions:
            await asyncio.sleep(0.01)
        sessions[0].put("pushed by a task")  # no kernel event involved
        assert await reader.readline() == b"pushed by a task\n"
    writer.close()


async def test_accepted_sockets_send_small_replies_at_once(serve: Any) -> None:
    # Nagle's algorithm would hold a small reply until the peer's ACK (up to 40 ms
    # with delayed ACKs): asyncio turns it off only on sockets that say IPPROTO_TCP.
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connected(session: Connection) -> None:
        assert session.transport is not None
        sock = session.transport.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = await serve(on_connected=connected)
    _, writer = await connect(server)
    async with asyncio.timeout(TIMEOUT):
        assert await seen != 0
    writer.close()
