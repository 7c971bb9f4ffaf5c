"""Hostile clients and faults: each affects only its own connection, within bounds.

Every test uses 127.0.0.1 and port 0 and bounds its own time. The heavier ones run
the server in its own process, to read its memory from /proc or to give it a small
file descriptor limit.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import random
import resource
import signal
import socket
import sys
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from conftest import TIMEOUT, connect, read_all, wait_until

from statemachine_server import Connection
from statemachine_server.limits import Limits

ROOT = Path(__file__).resolve().parent.parent


def echo(session: Connection, line: str) -> None:
    session.put(line)


async def assert_serving(server: Any) -> None:
    """Another client is served correctly right now."""
    reader, writer = await connect(server)
    writer.write(b"still serving\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"still serving\n"
    writer.close()


# -- slow, silent and idle clients ---------------------------------------------------------


async def test_silent_client_is_closed_by_the_first_byte_timeout(serve: Any) -> None:
    said: list[str] = []
    server = await serve(
        on_input=echo,
        on_timeout=lambda s, reason: (said.append(reason), s.put("bye")),
        limits=Limits(first_byte_timeout=0.2, idle_timeout=30),
    )
    reader, writer = await connect(server)
    assert await read_all(reader) == b"bye\n"  # a last word, then closed
    assert said == ["no data within 0.2 s"]
    assert server.statistics().timeouts == 1
    writer.close()


async def test_slowloris_is_served_while_it_sends_and_cut_when_it_stops(serve: Any) -> None:
    server = await serve(on_input=echo, limits=Limits(first_byte_timeout=0.3, idle_timeout=0.3))
    reader, writer = await connect(server)
    for byte in b"slow line\n":  # a byte every 0.1 s: never idle for 0.3 s
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
        await assert_serving(server) if byte == ord("w") else None
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"slow line\n"
    assert await read_all(reader) == b""  # then idle: closed
    assert server.statistics().timeouts == 1
    writer.close()


async def test_idle_timeout_does_not_cut_a_working_session(serve: Any) -> None:
    def on_input(session: Connection, line: str) -> None:
        def job() -> Any:
            deadline = session.kernel.time() + 0.5
            while session.kernel.time() < deadline:
                yield
            return "done"

        session.work(job(), lambda s, result: s.put(result))

    server = await serve(on_input=on_input, limits=Limits(idle_timeout=0.2))
    reader, writer = await connect(server)
    writer.write(b"go\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"done\n"  # 0.5 s of work outlived 0.2 s idle
    assert await read_all(reader) == b""  # and idle afterwards: closed
    writer.close()


async def test_idle_timeout_reads_the_clock_of_a_loop_with_its_own_time(serve: Any) -> None:
    # A loop whose time() is not monotonic() (here replaced on the instance, 1000 s
    # behind): "last heard" must come from that clock too, or the deadline would
    # lie 1000 s ahead and the client would never be cut off.
    loop = asyncio.get_running_loop()
    loop.time = lambda: time.monotonic() - 1000.0  # type: ignore[method-assign]
    try:
        server = await serve(on_input=echo, limits=Limits(idle_timeout=0.2))
        reader, writer = await connect(server)
        writer.write(b"hello\n")
        async with asyncio.timeout(5):
            assert await reader.readline() == b"hello\n"
            assert await reader.read() == b""  # idle for 0.2 s: closed
        assert server.statistics().timeouts == 1
        writer.close()
    finally:
        del loop.time  # type: ignore[method-assign]


# -- floods and big inputs ---------------------------------------------------------------


async def test_flood_from_a_client_that_never_reads_stays_bounded(serve: Any) -> None:
    server = await serve(on_input=echo)
    flood = socket.create_connection(("127.0.0.1", server.port))
    flood.setblocking(False)
    chunk = (b"x" * 999 + b"\n") * 100
    sent = 0
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT):
        while sent < 50_000_000:  # until the server stops reading (or 50 MB)
            try:
                await asyncio.wait_for(loop.sock_sendall(flood, chunk), 0.5)
            except TimeoutError:
                break
            sent += len(chunk)
    assert sent < 50_000_000, "the server never pushed back"
    conns = [s for s in server.kernel.sessions() if isinstance(s, Connection)]
    await wait_until(lambda: any(c.state == "replying" for c in conns))
    (conn,) = conns
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() <= server.limits.max_output
    await assert_serving(server)
    flood.close()
    await wait_until(lambda: server.kernel.statistics().sessions == 1)


async def test_replies_past_max_output_abort_only_that_client(serve: Any) -> None:
    server = await serve(
        on_input=lambda s, line: s.put("y" * 300_000 if line == "more" else line),
        limits=Limits(high_water=65536, low_water=16384, max_output=1_000_000),
    )
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"more\n" * 100)  # 30 MB of replies in one tick, none read
    await wait_until(lambda: server.statistics().overflows == 1)
    await assert_serving(server)
    await wait_until(lambda: server.kernel.statistics().sessions == 1)
    sock.close()


async def test_a_10_mb_line_closes_only_its_client(serve: Any) -> None:
    server = await serve(on_input=echo)
    reader, writer = await connect(server)
    writer.write(b"fine\n" + b"z" * 10_000_000 + b"\n")
    assert await read_all(reader) == b"fine\n"
    assert server.statistics().protocol_errors == 1
    await assert_serving(server)
    writer.close()


async def test_binary_garbage_echoes_byte_for_byte(serve: Any) -> None:
    server = await serve(on_input=echo)
    rng = random.Random(7)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(200))).replace(b"\n", b"")
             for _ in range(2000)]  # fmt: skip
    lines = [line.rstrip(b"\r") for line in lines]
    payload = b"".join(line + b"\n" for line in lines)
    reader, writer = await connect(server)
    writer.write(payload)
    writer.write_eof()
    assert await read_all(reader) == payload
    writer.close()


async def test_half_close_after_pipelining_10000_lines_answers_all(serve: Any) -> None:
    server = await serve(on_input=echo)
    reader, writer = await connect(server)
    payload = b"".join(b"%05d\n" % i for i in range(10_000))
    writer.write(payload)
    writer.write_eof()
    assert await read_all(reader) == payload
    writer.close()


# -- disconnects and resets ---------------------------------------------------------------


def rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


async def test_reset_right_after_connect(serve: Any) -> None:
    server = await serve(on_input=echo)
    for _ in range(50):
        rst(socket.create_connection(("127.0.0.1", server.port)))
    await assert_serving(server)
    await wait_until(lambda: server.kernel.statistics().sessions == 1)


@pytest.mark.parametrize("state", ["accepting", "reading", "working", "replying", "closing"])
async def test_client_disconnect_in_every_lifecycle_state(serve: Any, state: str) -> None:
    gone: list[int] = []

    def on_input(session: Connection, line: str) -> None:
        if line == "work":
            session.work(iter(lambda: None, 1))  # works until cut off
        elif line == "flood":
            session.put("y" * 1_000_000)
        elif line == "close":
            session.put("y" * 50_000_000)  # a close that waits on a reader
            session.close()
        else:
            session.put(line)

    server = await serve(
        on_input=on_input,
        on_disconnected=lambda s: gone.append(s.id),
        limits=Limits(max_connections=1 if state == "accepting" else 10, max_output=1 << 30),
    )
    keeper = None
    if state == "accepting":
        keeper = await connect(server)
        keeper[1].write(b"hold\n")
        async with asyncio.timeout(TIMEOUT):
            await keeper[0].readline()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    command = {
        "reading": b"x\n",
        "working": b"work\n",
        "replying": b"flood\n" * 30,
        "closing": b"close\n",
    }
    if state in command:
        sock.sendall(command[state])

    def reached() -> bool:
        return any(s.state == state for s in server.kernel.sessions() if isinstance(s, Connection))

    try:
        await wait_until(reached, 3)
    except TimeoutError:
        raise AssertionError(
            [(s, getattr(s, "_paused", None)) for s in server.kernel.sessions()]
        ) from None
    rst(sock)
    if keeper is not None:
        keeper[1].close()
    await wait_until(lambda: server.kernel.statistics().sessions == 1)
    await assert_serving(server)
    assert server.statistics().connections <= 1


async def test_10000_connections_come_and_go_and_leave_nothing(serve: Any) -> None:
    server = await serve(on_input=echo)
    kernel = server.kernel
    refs: list[weakref.ref[Any]] = []
    seen = asyncio.Event()

    def connected(session: Connection) -> None:
        if len(refs) < 10:
            refs.append(weakref.ref(session))
        seen.set()

    server.handlers["connected"] = connected
    server.dispatch["connected"] = Connection._on_connected

    async def client(n: int) -> None:
        reader, writer = await connect(server)
        writer.write(b"%d\n" % n)
        writer.write_eof()
        assert await read_all(reader) == b"%d\n" % n
        writer.close()

    async with asyncio.timeout(TIMEOUT * 6):
        for start in range(0, 10_000, 200):
            await asyncio.gather(*(client(n) for n in range(start, start + 200)))
    await wait_until(lambda: kernel.statistics().sessions == 1)
    stats = kernel.statistics()
    assert (stats.timers_pending, stats.queue_depth) == (0, 0)
    assert server.statistics().accepted == 10_000
    gc.collect()
    assert len(refs) == 10 and all(ref() is None for ref in refs)


# -- whole-process faults --------------------------------------------------------------------

SERVER = """
import resource, sys
from statemachine_server import Kernel, TCPServer
from statemachine_server.limits import Limits
if int(sys.argv[1]):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
kernel = Kernel()
server = TCPServer(kernel, on_input=lambda s, line: s.put(line))
print(f"listening on {server.host}:{server.port}", flush=True)
kernel.run(drain_timeout=1.0, loop=sys.argv[2])
"""
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


@asynccontextmanager
async def server_process(
    fds: int = 0, loop: str = "asyncio"
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(fds), loop,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            first = (await proc.stdout.readline()).decode()
        yield proc, int(first.rsplit(":", 1)[1])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_memory_stays_bounded_under_a_flood_and_comes_back() -> None:
    async with server_process() as (proc, port):
        start = rss(proc.pid)
        floods = []
        for _ in range(20):  # 20 clients that send and never read
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            floods.append(sock)
        chunk = (b"f" * 999 + b"\n") * 64
        peak = start
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(TIMEOUT * 2):
            for _ in range(100):
                for sock in floods:
                    with suppress(BlockingIOError):
                        sock.send(chunk)
                peak = max(peak, rss(proc.pid))
                await asyncio.sleep(0.005)
        await loop.run_in_executor(None, lambda: None)
        for sock in floods:
            rst(sock)
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"after\n")
            assert await reader.readline() == b"after\n"
            writer.close()
        await asyncio.sleep(0.5)
        end = rss(proc.pid)
    print(f"figures: flood RSS start {start >> 20} MiB, peak {peak >> 20} MiB, end {end >> 20} MiB")
    # 20 clients x (64 KiB high-water mark + a read or two of input) is a few MB.
    assert peak - start < 64 << 20, (start, peak)
    assert end - start < 32 << 20, (start, end)


@pytest.mark.parametrize(
    "loop",
    [
        "asyncio",
        pytest.param(
            "uvloop", marks=pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop not installed")
        ),
    ],
)
async def test_out_of_file_descriptors_then_recovers(loop: str) -> None:
    async with server_process(64, loop) as (proc, port):  # room for ~55 clients
        socks = []
        for _ in range(80):  # the kernel completes these handshakes; accept() fails
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
        await asyncio.sleep(0.3)
        for sock in socks:
            sock.close()
        freed = time.perf_counter()
        async with asyncio.timeout(TIMEOUT):
            while True:
                # asyncio leaves a client waiting in the backlog and retries accept
                # after 1 s; uvloop (libuv) accepts and closes the clients that come
                # while it is out of descriptors, until the closes above free them.
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"recovered\n")
                try:
                    line = await reader.readline()
                except ConnectionResetError:
                    assert loop == "uvloop"
                    line = b""
                writer.close()
                if line:
                    break
                assert loop == "uvloop"  # asyncio never refuses it
                await asyncio.sleep(0.05)
        assert line == b"recovered\n"
        print(f"figures: EMFILE: served again {time.perf_counter() - freed:.2f} s after fds freed")
        proc.terminate()
        async with asyncio.timeout(TIMEOUT):
            _, err = await proc.communicate()
    assert proc.returncode == 0
    if loop == "asyncio":  # (libuv reports nothing to uvloop)
        assert b"Too many open files" in err or b"out of system resource" in err


SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


@pytest.mark.skipif(HARD != resource.RLIM_INFINITY and HARD < 10_300, reason="fd limit too low")
async def test_10000_concurrent_connections() -> None:
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (HARD if HARD != resource.RLIM_INFINITY else 65536, HARD)
    )
    try:
        async with server_process(11000) as (proc, port):
            conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            async with asyncio.timeout(TIMEOUT * 6):
                for _ in range(20):  # 20 x 500 = 10,000 held open at once
                    conns += await asyncio.gather(
                        *(asyncio.open_connection("127.0.0.1", port) for _ in range(500))
                    )

                async def talk(i: int) -> None:
                    reader, writer = conns[i]
                    writer.write(b"c%d\n" % i)
                    assert await reader.readline() == b"c%d\n" % i

                for start in range(0, 10_000, 1000):
                    await asyncio.gather(*(talk(i) for i in range(start, start + 1000)))
                held = rss(proc.pid)
                print(f"figures: 10,000 concurrent connections: server RSS {held >> 20} MiB")
                assert held < 1 << 30
                for _, writer in conns:
                    writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"after\n")
                assert await reader.readline() == b"after\n"
                writer.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


async def test_second_signal_stops_at_once() -> None:
    script = (
        "from statemachine_server import Kernel, TCPServer\n"
        "kernel = Kernel()\n"
        # A reply the client never reads: the graceful close waits for it.
        "server = TCPServer(kernel, on_input=lambda s, l: s.put('x' * (8 << 20)))\n"
        "print(f'listening on {server.host}:{server.port}', flush=True)\n"
        "kernel.run(drain_timeout=60)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            port = int((await proc.stdout.readline()).decode().rsplit(":", 1)[1])
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"busy forever\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)  # graceful: would wait up to 60 s
            await asyncio.sleep(0.2)
            assert proc.returncode is None
            proc.send_signal(signal.SIGTERM)  # the second one: now
            assert await proc.wait() == 0
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
