"""What the Redis bus adds to a broadcast: latency across processes, and what receiving costs.

``python -m benchmarks.bus_latency [--samples N] [--warmup N] [--receive N]``
starts a redis-server of its own (on a free 127.0.0.1 port, nothing saved) and two
``statemachine-server run`` processes, A and B, serving one spec with
``server.bus`` pointing at it: every client joins ``room``, and a line is
broadcast to the room's other members. Three clients: a sender and a member on
A, a member on B. Each sample sends one line and times its arrival at both
members (one clock, this process's): A's member gets it straight from A's
handler; B's through A's publisher, Redis and B's subscriber. One line is in
flight at a time; the figures are p50 and p99 over the samples, and the added
latency is, per sample, B's arrival minus A's.

``--receive N`` also times what one subscribed node spends per message it is
sent (redis-py reading it, msgspec decoding it, a look-up of the group): what
*every* node would pay for *every* group's messages with one channel per server,
and what a node pays only for its own groups' messages with one channel per
group (the bus's choice). A publisher process sends N messages; this process
reads them, and its CPU time is the figure.

Prints one JSON object (the machine, the settings, the figures). The servers,
Redis and the clients share the machine's CPUs: on a 2-CPU machine the four
processes take turns, which the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .machine import REPO_ROOT, machine_info

SPEC = """\
version: 1
server:
  name: bus-latency
  port: 0
  bus: {url}
handlers:
  connected:
    - join: room
  input:
    - equals: ready
      do: [reply: ready]
    - do: [broadcast: {{group: room, text: "{{input}}", include_self: false}}]
"""
TIMEOUT = 20.0
_keep: set[asyncio.Task[Any]] = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_redis(redis_server: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--logfile", "", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        while b"Ready to accept connections" not in (line := await proc.stdout.readline()):
            if not line:
                raise RuntimeError("redis-server did not start")
    drain = asyncio.get_running_loop().create_task(proc.stdout.read())  # the rest of its log
    _keep.add(drain)
    drain.add_done_callback(_keep.discard)
    return proc, port


async def start_server(spec: Path) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemachine_server", "run", str(spec), "--loop", "asyncio",
        stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        line = (await proc.stdout.readline()).decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    try:
        async with asyncio.timeout(TIMEOUT):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


class Member:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def join(cls, port: int) -> Member:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ready\n")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readline() == b"ready\n"
        return cls(reader, writer)

    async def arrival(self, expected: bytes) -> float:
        async with asyncio.timeout(TIMEOUT):
            line = await self.reader.readline()
        when = time.perf_counter()
        assert line == expected, (line, expected)
        return when


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_us": round(at(0.50) * 1e6, 1),
        "p99_us": round(at(0.99) * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


async def latency(port_a: int, port_b: int, samples: int, warmup: int) -> dict[str, Any]:
    sender, near, far = [await Member.join(p) for p in (port_a, port_a, port_b)]
    # B subscribed to the room at its member's join. A broadcast from B is
    # published once that subscription is confirmed: when A's members have it,
    # B hears the room.
    far.writer.write(b"hello\n")
    await asyncio.gather(sender.arrival(b"hello\n"), near.arrival(b"hello\n"))
    local: list[float] = []
    remote: list[float] = []
    added: list[float] = []
    for i in range(warmup + samples):
        line = f"sample {i}\n".encode()
        sent = time.perf_counter()
        sender.writer.write(line)
        at_a, at_b = await asyncio.gather(near.arrival(line), far.arrival(line))
        if i >= warmup:
            local.append(at_a - sent)
            remote.append(at_b - sent)
            added.append(at_b - at_a)
    for member in (sender, near, far):
        member.writer.close()
    result = {
        "local": percentiles(local),
        "remote": percentiles(remote),
        "added_per_sample": percentiles(added),
    }
    result["added_p50_us"] = round(result["remote"]["p50_us"] - result["local"]["p50_us"], 1)
    return result


PUBLISHER = """\
import sys, redis
from statemachine_server.bus.wire import Text, encode, Names
client = redis.Redis(port=int(sys.argv[1]))
channel, count = Names("bus-latency").group("elsewhere"), int(sys.argv[2])
payload = encode(Text("0123456789abcdef", "elsewhere", "x" * 40))
pipe = client.pipeline(transaction=False)
for i in range(count):
    pipe.publish(channel, payload)
    if i % 1000 == 999:
        pipe.execute()
pipe.execute()
client.publish(channel, b"end")
"""


async def receive_cost(port: int, count: int) -> dict[str, Any]:
    """CPU time this process spends per message on a subscribed channel."""
    import redis.asyncio as aioredis

    from statemachine_server.bus.wire import Names, WireError, decode

    client = aioredis.Redis(port=port)
    pubsub = client.pubsub()
    await pubsub.subscribe(Names("bus-latency").group("elsewhere"))
    async with asyncio.timeout(TIMEOUT):
        await pubsub.get_message(timeout=None)  # the confirmation
    members: dict[str, Any] = {}
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(count)],
                                 cwd=REPO_ROOT)  # fmt: skip
    received = 0
    started = time.process_time()
    wall = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            while True:
                msg = await pubsub.get_message(timeout=None)
                if msg is None or msg["type"] != "message":
                    continue
                if msg["data"] == b"end":
                    break
                try:
                    message = decode(msg["data"])
                except WireError:
                    continue
                received += 1
                members.get(message.group)  # nobody here: skipped
        cpu = time.process_time() - started
        wall = time.perf_counter() - wall
    finally:
        publisher.wait(TIMEOUT)
        await pubsub.aclose()
        await client.aclose()
    return {
        "messages": received,
        "cpu_us_per_message": round(cpu / max(received, 1) * 1e6, 2),
        "messages_per_s": round(received / wall),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    redis_proc, redis_port = await start_redis(redis_server)
    servers: list[asyncio.subprocess.Process] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            spec = Path(folder) / "bus-latency.yaml"
            spec.write_text(SPEC.format(url=f"redis://127.0.0.1:{redis_port}/0"))
            ports = []
            for _ in range(2):
                proc, port = await start_server(spec)
                servers.append(proc)
                ports.append(port)
            result: dict[str, Any] = {
                "machine": machine_info(),
                "settings": {"samples": args.samples, "warmup": args.warmup},
                "latency": await latency(ports[0], ports[1], args.samples, args.warmup),
            }
        if args.receive:
            result["receive"] = await receive_cost(redis_port, args.receive)
        return result
    finally:
        for proc in servers:
            await stop(proc)
        await stop(redis_proc)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bus_latency")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--receive", type=int, default=0, metavar="N",
                        help="also time receiving N messages on a subscribed channel")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
