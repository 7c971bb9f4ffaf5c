"""Shared fixtures: a kernel served inside the test's own event loop, and a client."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from statemachine_server import Kernel, TCPServer
from statemachine_server.language import build_server, load_spec, load_spec_text

#: Every network test bounds its own time with this, on top of pytest-timeout.
TIMEOUT = 20.0
ROOT = Path(__file__).resolve().parent.parent


async def _served(
    kernels: list[tuple[Kernel, asyncio.Task[None]]],
    make: Callable[..., TCPServer],
    kernel: Kernel | None = None,
    **kwargs: Any,
) -> TCPServer:
    kernel = kernel or Kernel()
    started = asyncio.Event()
    server = make(kernel, port=0, on_started=lambda s: started.set(), **kwargs)
    kernels.append((kernel, asyncio.create_task(kernel.serve())))
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    return server


async def _stop(kernels: list[tuple[Kernel, asyncio.Task[None]]]) -> None:
    for kernel, task in kernels:
        async with asyncio.timeout(TIMEOUT):
            await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(TIMEOUT):
                await task


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(**TCPServer kwargs)`` -> a started server on 127.0.0.1, port 0."""
    kernels: list[tuple[Kernel, asyncio.Task[None]]] = []

    async def start(kernel: Kernel | None = None, **kwargs: Any) -> TCPServer:
        return await _served(kernels, TCPServer, kernel, **kwargs)

    yield start
    await _stop(kernels)


@pytest.fixture
async def serve_spec() -> AsyncIterator[Callable[..., Any]]:
    """``await serve_spec(path or YAML text, **build_server kwargs)`` -> a started
    server on 127.0.0.1, port 0."""
    kernels: list[tuple[Kernel, asyncio.Task[None]]] = []

    async def start(source: Path | str, **kwargs: Any) -> TCPServer:
        spec = load_spec(source) if isinstance(source, Path) else load_spec_text(source, "t.yaml")
        return await _served(kernels, functools.partial(build_server, spec), **kwargs)

    yield start
    await _stop(kernels)


async def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (a counter the server keeps, say) until it holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def run_cli(*args: str) -> tuple[int, str, str]:
    """``statemachine-server ARGS`` from the repository root: status, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine_server", *args],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


async def connect(server: TCPServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 24)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF, bounded in time."""
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()
