"""Peer ``asyncio-lines``: a hand-written asyncio line echo server.

It splits the input into lines with a buffer and writes each line back with its
own ``transport.write`` call, as the obvious hand-written server would. No logging.

Usage: ``python asyncio_lines.py PORT`` (0 picks a free port). Prints
``listening on HOST:PORT`` once bound; SIGTERM stops it with exit status 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys


class LineEcho(asyncio.Protocol):
    """Echo every complete ``\\n``-terminated line; keep the incomplete tail."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.transport.write(line + b"\n")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await loop.create_server(LineEcho, "127.0.0.1", port)
    host, bound = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{bound}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
