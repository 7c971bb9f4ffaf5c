"""The TCP client component against real servers on 127.0.0.1: reconnects, TLS, a proxy."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import TIMEOUT, connect

from statemachine_server import (
    Backoff,
    Connection,
    JSONFilter,
    Kernel,
    TCPClient,
    TCPServer,
    server_ssl_context,
)

ROOT = Path(__file__).resolve().parent.parent
FAST = Backoff(initial=0.01, maximum=0.05)


def echo(session: Connection, record: Any) -> None:
    session.put(record)


@contextlib.asynccontextmanager
async def running(kernel: Kernel) -> AsyncIterator[Kernel]:
    """Serve ``kernel`` for the block, then shut it down, bounded in time."""
    task = asyncio.create_task(kernel.serve())
    try:
        yield kernel
    finally:
        async with asyncio.timeout(TIMEOUT):
            await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(TIMEOUT):
                await task


async def started(server: TCPServer) -> None:
    ready = asyncio.Event()
    server.on_started = lambda s: ready.set()
    async with asyncio.timeout(TIMEOUT):
        await ready.wait()


class Events:
    """What the client's handlers saw, awaited in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def handlers(self) -> dict[str, Any]:
        put = self.queue.put_nowait
        return {
            "on_connected": lambda s: put(("connected", s.id)),
            "on_input": lambda s, r: put(("input", r)),
            "on_disconnected": lambda s: put(("disconnected", s.id)),
            "on_connect_error": lambda c, e: put(("connect_error", type(e).__name__)),
        }

    async def next(self, kind: str | None = None) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                got, value = await self.queue.get()
                if kind is None or got == kind:
                    return value


async def test_client_sends_and_receives(serve: Any) -> None:
    server = await serve(on_input=echo)
    events = Events()
    async with running(Kernel()) as kernel:
        client = TCPClient(kernel, port=server.port, **events.handlers())
        await events.next("connected")
        assert client.connected
        client.put("hello", "world")
        assert [await events.next("input"), await events.next("input")] == ["hello", "world"]
        client.close()
        await events.next("disconnected")
        assert not client.connected
    assert kernel.statistics().sessions == 0


async def test_client_reconnects_after_the_server_restarts() -> None:
    events = Events()
    async with running(Kernel()) as first:
        server = TCPServer(first, on_input=echo)
        port = server.port
        await started(server)
        async with running(Kernel()) as kernel:
            client = TCPClient(kernel, port=port, reconnect=FAST, **events.handlers())
            one = await events.next("connected")
            client.put("before")
            assert await events.next("input") == "before"
            await first.shutdown(deadline=1.0)  # the server goes away...
            await events.next("disconnected")
            assert await events.next("connect_error") == "ConnectionRefusedError"
            async with running(Kernel()) as second:  # ...and comes back on the same port
                await started(TCPServer(second, port=port, on_input=echo))
                two = await events.next("connected")
                assert two != one
                client.put("after")
                assert await events.next("input") == "after"
                client.close()


async def test_connect_errors_back_off_and_give_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        events = Events()
        kernel = Kernel()
        client = TCPClient(
            kernel,
            port=probe.getsockname()[1],
            reconnect=Backoff(initial=0.001, attempts=3),
            **events.handlers(),
        )
        async with asyncio.timeout(TIMEOUT):
            await kernel.serve()  # returns once the client, the only session, gives up
        errors = [events.queue.get_nowait() for _ in range(events.queue.qsize())]
        assert errors == [("connect_error", "ConnectionRefusedError")] * 3
        assert client.counts["connect_errors"] == 3


def test_backoff_delays_grow_are_capped_and_jittered() -> None:
    b = Backoff(initial=1, factor=2, maximum=10, jitter=0.5)
    assert [b.delay(n, lambda: 0.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert b.delay(2, lambda: 1.0) == 2.0  # at most half taken off
    assert Backoff().delay(10**9, lambda: 0.0) == 120.0  # no overflow


async def test_close_cancels_a_pending_reconnect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        events = Events()
        async with running(Kernel()) as kernel:
            client = TCPClient(
                kernel,
                port=probe.getsockname()[1],
                reconnect=Backoff(initial=3600),
                **events.handlers(),
            )
            await events.next("connect_error")
            assert kernel.statistics().timers_pending == 1  # the hour-long wait
            client.close()
            assert kernel.statistics().timers_pending == 0
            assert kernel.statistics().sessions == 0


async def test_client_over_tls_with_json_records(serve: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "s.pem"))
    server = await serve(
        on_input=echo, ssl=server_ssl_context(tmp_path / "s.pem"), filter=JSONFilter
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    events = Events()
    async with running(Kernel()) as kernel:
        client = TCPClient(
            kernel,
            port=server.port,
            ssl=context,
            server_hostname="localhost",
            filter=JSONFilter,
            **events.handlers(),
        )
        await events.next("connected")
        client.put({"n": 1}, [2, "three"])
        assert await events.next("input") == {"n": 1}
        assert await events.next("input") == [2, "three"]
        client.close()


async def test_failed_tls_handshake_is_a_connect_error(serve: Any) -> None:
    server = await serve(on_connected=lambda s: s.close())  # plain TCP, hangs up at once
    events = Events()
    async with running(Kernel()) as kernel:
        TCPClient(
            kernel,
            port=server.port,
            ssl=ssl.create_default_context(),
            reconnect=None,
            connect_timeout=TIMEOUT / 2,
            **events.handlers(),
        )
        assert await events.next("connect_error") in (
            "SSLError",
            "SSLEOFError",
            "ConnectionResetError",
        )
    assert kernel.statistics().sessions == 0  # the failed attempt left no connection


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("half_close", [False, True])
async def test_line_proxy_forwards_10000_lines_in_order(serve: Any, half_close: bool) -> None:
    # With half_close the client's end of input reaches the proxy before the
    # upstream's replies: they are still all delivered, then the end of output.
    upstream = await serve(on_input=lambda s, line: s.put(f"echo {line}"))
    proxy_module = load_example("line_proxy")
    async with running(Kernel()) as kernel:
        proxy = proxy_module.line_proxy(kernel, ("127.0.0.1", upstream.port))
        await started(proxy)
        reader, writer = await connect(proxy)
        lines = [f"line {i} " + "x" * (i % 40) for i in range(10_000)]
        writer.write("".join(line + "\n" for line in lines).encode())
        expected = "".join(f"echo {line}\n" for line in lines).encode()
        async with asyncio.timeout(TIMEOUT):
            if half_close:
                writer.write_eof()
                assert await reader.read() == expected
            else:
                assert await reader.readexactly(len(expected)) == expected
        writer.close()


@pytest.mark.parametrize("port", [0, 70000])
def test_client_port_is_checked(port: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        TCPClient(Kernel(), port=port)


async def test_connect_timeout_covers_a_handshake_that_never_ends() -> None:
    # A server that accepts and never answers: the TLS handshake waits forever.
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    events = Events()
    try:
        async with running(Kernel()) as kernel:
            TCPClient(
                kernel,
                port=port,
                ssl=ssl.create_default_context(),
                connect_timeout=0.2,  # the behaviour under test, not a wait
                reconnect=None,
                **events.handlers(),
            )
            assert await events.next("connect_error") == "TimeoutError"
        assert kernel.statistics().sessions == 0
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        async with asyncio.timeout(TIMEOUT):
            await silent.wait_closed()


async def test_client_over_a_unix_socket(serve: Any, tmp_path: Path) -> None:
    server = await serve(on_input=echo, path=tmp_path / "s.sock")
    events = Events()
    async with running(Kernel()) as kernel:
        client = TCPClient(kernel, path=server.path, **events.handlers())
        await events.next("connected")
        client.put("over unix")
        assert await events.next("input") == "over unix"
        client.close()
