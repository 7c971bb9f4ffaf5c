"""The memcache spec's per-command path in process, beside the hand-written asyncio peer.

``python -m benchmarks.micro.memcache [--batches N]`` feeds the same pipelined
batches of memcached commands (the memcache scenario's: groups of one ``set`` of
a 100-byte value and three ``get``, 16 commands per read) to 50 connections of
``specs/memcache-lite.yaml`` on a kernel whose loop never runs (as
``micro.path`` does for the echo spec) and to 50 connections of
``peers/asyncio_memcache.py``'s protocol, both on in-memory transports, passes
alternating. No system call is made, so the figure is each implementation's own
cost per command; the ratio is the scenario's bar without the sockets around it.

Prints one JSON object: ns per command for each (best of 7 passes) and
``ratio`` = asyncio's / ours (the bar: 0.5 or more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from statemachine_server import Kernel
from statemachine_server.console import ConsoleLog
from statemachine_server.language import build_server, load_spec

from ..peers.asyncio_memcache import Memcache
from .path import _Transport as _Memory
from .path import connect

SPEC = Path(__file__).resolve().parent.parent.parent / "specs" / "memcache-lite.yaml"
CONNECTIONS = 50
KEYS = 1000
VALUE = b"v" * 100


def batches(seed: int, count: int = 32) -> list[bytes]:
    """Pipelined batches: four groups of one set and three gets, keys at random."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(4):
            parts.append(b"set key:%d 0 0 %d\r\n%b\r\n" % (rng.randrange(KEYS), len(VALUE), VALUE))
            for _ in range(3):
                parts.append(b"get key:%d\r\n" % rng.randrange(KEYS))
        out.append(b"".join(parts))
    return out


class _Transport(_Memory, asyncio.Transport):
    """In memory, and an asyncio.Transport (the peer checks)."""

    def __init__(self) -> None:
        _Memory.__init__(self)


FILL = b"".join(b"set key:%d 0 0 %d\r\n%b\r\n" % (k, len(VALUE), VALUE) for k in range(KEYS))


def ours(rounds: int) -> tuple[Any, Any]:
    kernel = Kernel()
    kernel._loop = loop = asyncio.new_event_loop()  # never runs: see micro.path
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed by the caller
    console = ConsoleLog(kernel, stream=sink)
    server = build_server(load_spec(SPEC), kernel, port=0, console=console)
    conns = connect(server, CONNECTIONS, _Transport)
    conns[0][0].data_received(FILL)
    while kernel.busy():
        kernel.tick()
    work = [batches(n) for n in range(CONNECTIONS)]

    def run() -> None:
        for r in range(rounds):
            for (conn, _), mine in zip(conns, work, strict=True):
                conn.data_received(mine[r % len(mine)])
            kernel.tick()

    def close() -> None:
        server.close()
        loop.close()
        sink.close()

    return run, close


def theirs(rounds: int) -> tuple[Any, Any]:
    items: dict[bytes, Any] = {}
    cas = [0]
    conns = []
    for _ in range(CONNECTIONS):
        proto = Memcache(items, cas)
        transport = _Transport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        conns.append(proto)
    conns[0].data_received(FILL)
    work = [batches(n) for n in range(CONNECTIONS)]

    def run() -> None:
        for r in range(rounds):
            for proto, mine in zip(conns, work, strict=True):
                proto.data_received(mine[r % len(mine)])

    return run, lambda: None


def measure(rounds: int) -> dict[str, Any]:
    commands = rounds * CONNECTIONS * 16
    results: dict[str, list[float]] = {"ours": [], "asyncio": []}
    runners = {"ours": ours(rounds), "asyncio": theirs(rounds)}
    try:
        for _ in range(7):
            for name, (run, _) in runners.items():
                started = time.perf_counter()
                run()
                results[name].append((time.perf_counter() - started) / commands * 1e9)
    finally:
        for _, close in runners.values():
            close()
    best = {name: min(passes) for name, passes in results.items()}
    return {
        "ours_ns_per_command": round(best["ours"], 1),
        "asyncio_ns_per_command": round(best["asyncio"], 1),
        "ratio": round(best["asyncio"] / best["ours"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="batches per connection a pass")
    args = parser.parse_args()
    print(json.dumps(measure(args.batches)))


if __name__ == "__main__":
    main()
