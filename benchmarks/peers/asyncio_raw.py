"""Peer ``asyncio-raw``: an asyncio echo server that writes back whole chunks.

It never looks for line boundaries: whatever ``data_received`` gets goes straight
back. This is the ceiling for an asyncio server on this machine, and the
baseline of every ratio the harness reports. No logging.

Usage: ``python asyncio_raw.py PORT [uvloop]`` (0 picks a free port; ``uvloop``:
on uvloop's loop, the peer ``asyncio-raw-uvloop``). Prints ``listening on
HOST:PORT`` once bound; SIGTERM stops it with exit status 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast


class ChunkEcho(asyncio.Protocol):
    """Echo every received chunk as it is."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await loop.create_server(ChunkEcho, "127.0.0.1", port)
    host, bound = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{bound}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if sys.argv[2:] == ["uvloop"]:
        import uvloop

        uvloop.run(main(port))
    else:
        asyncio.run(main(port))
