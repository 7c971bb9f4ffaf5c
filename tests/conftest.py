"""Shared fixtures: a kernel served inside the test's own event loop, and a client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from statemachine_server import Kernel, TCPServer

#: Every network test bounds its own time with this, on top of pytest-timeout.
TIMEOUT = 20.0


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(**TCPServer kwargs)`` -> a started server on 127.0.0.1, port 0."""
    kernels: list[tuple[Kernel, asyncio.Task[None]]] = []

    async def start(kernel: Kernel | None = None, **kwargs: Any) -> TCPServer:
        kernel = kernel or Kernel()
        started = asyncio.Event()
        server = TCPServer(kernel, port=0, on_started=lambda s: started.set(), **kwargs)
        task = asyncio.create_task(kernel.serve())
        kernels.append((kernel, task))
        async with asyncio.timeout(TIMEOUT):
            await started.wait()
        return server

    yield start
    for kernel, task in kernels:
        async with asyncio.timeout(TIMEOUT):
            await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(TIMEOUT):
                await task


async def connect(server: TCPServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 24)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF, bounded in time."""
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()
