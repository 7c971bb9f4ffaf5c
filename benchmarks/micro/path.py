"""The echo spec's per-message path in process: Python's share, without the sockets.

``python -m benchmarks.micro.path [SPEC] [--lines N] [--reads N] [--size B] [--chunk B]`` builds the
server a spec declares (the built-in echo spec by default) on a kernel whose loop
never runs, gives it 50 connections on in-memory transports, and times the path
a read takes through our code: ``data_received`` (timestamp, framing, post), the
kernel's tick (dispatch, the handler, ``put``), the end-of-tick flush (encoding,
``transport.write``, which only counts bytes here) and the console log (checked,
joined and written to ``/dev/null``). No system call is made for the client's
bytes, so the figure is what the project itself costs per line, the part a change
to our code can move; the harness's throughput scenario adds ``recv()``,
``send()`` and the event loop around it.

``--metrics`` measures the same with metrics served (the bar: at most 3% more
than without). Prints one JSON object: ``{"ns_per_line": best of 7 passes, "lines_per_read": N,
"passes_ns_per_line": [...]}``. Used to compare changes on the hot path side by
side (run it on two checkouts, alternately): far steadier than a socket benchmark
on a shared machine, though it cannot see effects on the system calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from statemachine_server import Kernel
from statemachine_server.console import ConsoleLog
from statemachine_server.language import build_server, builtin_spec_path, load_spec

CONNECTIONS = 50
LINE = b"x" * 63 + b"\n"  # the harness's 64-byte line


class _Transport:
    """What a Connection uses of an asyncio transport, in memory."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(server: Any, count: int, transport: type = _Transport) -> list[tuple[Any, Any]]:
    """``count`` connections of ``server`` on in-memory transports, admitted."""
    conns = []
    for _ in range(count):
        conn = server._connection_factory()
        made = transport()
        conn.connection_made(made)
        conns.append((conn, made))
    kernel = server.kernel
    while kernel.busy():
        kernel.tick()  # admit them
    return conns


def measure(
    spec_path: str,
    lines_per_read: int,
    reads: int,
    *,
    metrics: bool = False,
    size: int = len(LINE),
    chunk: int = 0,
) -> dict[str, Any]:
    """ns per line; ``metrics``: with metrics served (bytes and gotos counted;
    the endpoint is bound and never scraped); ``size``: bytes per line, newline
    included (the line limit is raised to fit it); ``chunk``: the most bytes one
    read delivers, as a loop's read buffer cuts them (0: the whole batch; uvloop
    reads 64 KiB at most, asyncio 256 KiB)."""
    kernel = Kernel()
    # A loop that never runs, as a served kernel has one: its clock is what the
    # connections read, and no tick is scheduled on it (the passes run them).
    kernel._loop = loop = asyncio.new_event_loop()
    with open(os.devnull, "w") as sink:
        console = ConsoleLog(kernel, stream=sink)
        settings: dict[str, Any] = {"metrics": "127.0.0.1:0"} if metrics else {}
        if size > len(LINE):
            settings["filter"] = {"max_length": max(size, 1 << 20)}
        spec = load_spec(spec_path, server=settings or None)
        server = build_server(spec, kernel, port=0, console=console)
        try:
            transports = connect(server, CONNECTIONS)
            batch = (b"x" * (size - 1) + b"\n") * lines_per_read
            step = chunk or len(batch)
            reads_of = [batch[at : at + step] for at in range(0, len(batch), step)]
            ticks = max(1, reads // CONNECTIONS)
            passes = []
            for _ in range(7):
                started = time.perf_counter()
                for _ in range(ticks):
                    for conn, _transport in transports:
                        for data in reads_of:
                            conn.data_received(data)
                    kernel.tick()
                elapsed = time.perf_counter() - started
                passes.append(elapsed / (ticks * CONNECTIONS * lines_per_read) * 1e9)
            # Every connection was answered, in full (the spec must echo).
            expected = 7 * ticks * len(batch)
            if any(t.written < expected for _, t in transports):
                raise SystemExit("the spec did not echo every line: not an echo server?")
        finally:
            server.close()
            if server.metrics is not None:
                server.metrics.close()
            loop.close()
    return {
        "ns_per_line": round(min(passes), 1),
        "lines_per_read": lines_per_read,
        "passes_ns_per_line": [round(p, 1) for p in passes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(builtin_spec_path()))
    parser.add_argument("--lines", type=int, default=16, help="lines per read (default 16)")
    parser.add_argument("--reads", type=int, default=15_000, help="reads per pass")
    parser.add_argument("--metrics", action="store_true", help="with metrics served")
    parser.add_argument(
        "--size", type=int, default=len(LINE), help="bytes per line, newline included (64)"
    )
    parser.add_argument("--chunk", type=int, default=0, help="bytes per read at most (0: all)")
    args = parser.parse_args()
    result = measure(
        args.spec, args.lines, args.reads, metrics=args.metrics, size=args.size, chunk=args.chunk
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
