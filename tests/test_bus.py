"""The Redis bus (``server.bus``): servers sharing a real redis-server behave as one for groups.

Each test starts its own redis-server on a free 127.0.0.1 port and stops it by
PID; two servers run on two kernels in this process (and, in one test, as two
``statemachine-server run`` processes), each with its own bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import ROOT, TIMEOUT

from statemachine_server import Kernel, TCPServer
from statemachine_server.bus.redisbus import Bus
from statemachine_server.language import build_server, load_spec, load_spec_text
from statemachine_server.language.runtime import RUNTIME, Runtime

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (the bus tests need a real one; "
    ".ci/run installs it with apt-get install redis-server)",
)
CHAT = ROOT / "specs" / "chat.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own, on a free port: nothing saved to disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--logfile", "",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read_log(self.proc, ready))
        async with asyncio.timeout(TIMEOUT):
            await ready.wait()  # its log says it is ready, or it ended
        assert self.proc.returncode is None, b"".join(self.log).decode(errors="replace")
        assert await self.ping(), "redis-server does not answer PING"

    async def _read_log(self, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():  # read to the end: the pipe never fills
            self.log.append(line)
            if b"Ready to accept connections" in line:
                ready.set()
        ready.set()

    async def ping(self) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"PING\r\n")
            async with asyncio.timeout(TIMEOUT):
                return await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()

    async def stop(self) -> None:
        """Kill it (as a crash would: nothing is said to its clients) and wait for it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(TIMEOUT):
            await proc.wait()
            if self._reader is not None:
                await self._reader


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Node:
    """One server with a bus, on its own kernel."""

    kernel: Kernel
    server: TCPServer
    runtime: Runtime
    #: Its clients, closed when the test ends.
    clients: list[Client] = field(default_factory=list)

    @property
    def bus(self) -> Bus:
        assert self.runtime.bus is not None
        return self.runtime.bus


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def nodes() -> AsyncIterator[StartNode]:
    """``await nodes(spec path or text, bus_url)`` -> a served Node on port 0."""
    running: list[tuple[Kernel, asyncio.Task[None], Node]] = []

    async def start(source: Path | str, url: str, base_dir: Path | None = None) -> Node:
        settings = {"bus": url, "port": 0}
        spec = (
            load_spec(source, server=settings)
            if isinstance(source, Path)
            else load_spec_text(source, "bus.yaml", base_dir=base_dir, server=settings)
        )
        kernel = Kernel()
        started = asyncio.Event()
        server = build_server(spec, kernel, on_started=lambda s: started.set())
        runtime = server.handlers[RUNTIME]  # type: ignore[index]
        node = Node(kernel, server, runtime)
        running.append((kernel, asyncio.create_task(kernel.serve()), node))
        async with asyncio.timeout(TIMEOUT):
            await started.wait()
            await node.bus.wait_subscribed()
        return node

    yield start
    for kernel, task, node in running:
        for client in node.clients:
            client.close()
        async with asyncio.timeout(TIMEOUT):
            await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(TIMEOUT):
                await task
        async with asyncio.timeout(TIMEOUT):
            await node.bus.aclose()


class Client:
    """A line client: ``say`` a line, ``expect`` the next ones."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def to(cls, where: Node | int) -> Client:
        """A client of a node, or of a port."""
        port = where if isinstance(where, int) else where.server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if not isinstance(where, int):
            where.clients.append(client)
        return client

    def say(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\n" for line in lines).encode())

    async def line(self) -> str:
        async with asyncio.timeout(TIMEOUT):
            return (await self.reader.readline()).decode().rstrip("\n")

    async def expect(self, *lines: str) -> None:
        for line in lines:
            assert await self.line() == line

    def close(self) -> None:
        self.writer.close()


async def until(condition: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Until ``condition()`` holds: for what the bus does on a clock (member counts
    are read once a second), where there is nothing to await."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def chatter(node: Node | int, nick: str) -> Client:
    client = await Client.to(node)
    await client.expect("Welcome to chat. Your nick?")
    client.say(nick)
    await client.expect(f"Hello {nick}, you are in #lobby. /join ROOM to move, /quit to leave.")
    return client


async def test_chat_members_on_two_servers_see_each_others_broadcasts(
    redis: RedisServer, nodes: StartNode
) -> None:
    a, b = await nodes(CHAT, redis.url), await nodes(CHAT, redis.url)
    alice = await chatter(a, "alice")
    carol = await chatter(a, "carol")
    await alice.expect("* carol joined #lobby")  # same server: direct
    # a publishes in the background: carol's join must be out before b subscribes
    # (bob's arrival), or bob, who came later, would hear it too.
    await until(lambda: a.bus.published == 2)  # alice's join, carol's
    bob = await chatter(b, "bob")
    await alice.expect("* bob joined #lobby")  # from the other server
    await carol.expect("* bob joined #lobby")

    alice.say("hello bob")
    await bob.expect("<alice> hello bob")
    await carol.expect("<alice> hello bob")
    await alice.expect("<alice> hello bob")
    bob.say("hi both")
    await alice.expect("<bob> hi both")
    await carol.expect("<bob> hi both")
    await bob.expect("<bob> hi both")

    bob.say("/join den")  # bob leaves the lobby for a room nobody else is in yet
    await alice.expect("* bob left #lobby")
    await bob.expect("Hello bob, you are in #den. /join ROOM to move, /quit to leave.")
    async with asyncio.timeout(TIMEOUT):
        await b.bus.wait_subscribed()  # b hears #den from now on
    await carol.expect("* bob left #lobby")
    alice.say("bob is gone")
    await alice.expect("<alice> bob is gone")
    await carol.expect("<alice> bob is gone")
    carol.say("/join den")
    await carol.expect("Hello carol, you are in #den. /join ROOM to move, /quit to leave.")
    # The lobby's talk did not reach bob any more; the den's does.
    await bob.expect("* carol joined #den")
    await alice.expect("* carol left #lobby")
    bob.say("/quit")
    await bob.expect("Bye.")
    await carol.expect("* bob left #den")
    assert a.bus.statistics().dropped == b.bus.statistics().dropped == 0


DESK = """\
version: 1
server:
  name: desk
events: [note]
handlers:
  input:
    - equals: whoami
      do: [call: desk:whoami]
    - match: '^tell (?P<to>\\S+) (?P<text>.*)$'
      do: [call: {function: desk:tell, reply: false}, reply: "sent"]
    - match: '^join (?P<group>\\w+)$'
      do: [join: "{match.group}", reply: "joined {match.group}"]
    - match: '^leave (?P<group>\\w+)$'
      do: [leave: "{match.group}", reply: "left {match.group}"]
    - match: '^size (?P<group>\\w+)$'
      do: [reply: "{group_size(match.group)}"]
    - match: '^shout (?P<group>\\w+) (?P<text>.*)$'
      do: [broadcast: {group: "{match.group}", event: note, input: "{match.text}"}]
  note:
    - do: [reply: "note: {input}"]
"""
DESK_MODULE = """\
from statemachine_server.language.runtime import post_event, runtime_of


def whoami(session, line, match):
    return runtime_of(session).address(session)


def tell(session, line, match):
    post_event(session, match["to"], "note", match["text"])
"""


async def test_a_named_event_reaches_a_session_of_another_server_by_address_or_alias(
    redis: RedisServer, nodes: StartNode, tmp_path: Path
) -> None:
    (tmp_path / "desk.py").write_text(DESK_MODULE)
    a = await nodes(DESK, redis.url, tmp_path)
    b = await nodes(DESK, redis.url, tmp_path)
    sender, far, near = await Client.to(a), await Client.to(b), await Client.to(a)
    far.say("whoami")
    far_address = await far.line()
    near.say("whoami")
    near_address = await near.line()
    # Both servers number their sessions from 1: the address tells them apart.
    assert far_address == f"{b.bus.node}/{far_address.split('/')[1]}"
    assert near_address.split("/")[0] == a.bus.node != b.bus.node

    sender.say(f"tell {far_address} across", f"tell {near_address} beside")
    await sender.expect("sent", "sent")
    await far.expect("note: across")
    await near.expect("note: beside")

    # An alias: found here first, else asked of every other server.
    (far_session,) = [s for s in b.kernel.sessions() if s is not b.server]
    b.kernel.alias_set("front-desk", far_session)
    sender.say("tell front-desk by name")
    await sender.expect("sent")
    await far.expect("note: by name")
    # A session that is gone: nothing arrives, nothing breaks (at most once).
    sender.say(f"tell {b.bus.node}/999 nobody")
    await sender.expect("sent")
    await until(lambda: b.bus.statistics().received == 3)  # it arrived, for no one
    b.kernel.alias_remove("front-desk")  # an alias keeps its session alive


async def test_group_size_counts_the_members_on_both_servers(
    redis: RedisServer, nodes: StartNode, tmp_path: Path
) -> None:
    (tmp_path / "desk.py").write_text(DESK_MODULE)
    a = await nodes(DESK, redis.url, tmp_path)
    b = await nodes(DESK, redis.url, tmp_path)
    members = [await Client.to(node) for node in (a, a, b)]
    for client in members:
        client.say("join room")
        await client.expect("joined room")
    asker_a, asker_b = members[0], members[2]

    async def size_on(client: Client) -> int:
        client.say("size room")
        return int(await client.line())

    sizes: dict[str, int] = {}

    async def settles(expected: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while True:
                sizes["a"], sizes["b"] = await size_on(asker_a), await size_on(asker_b)
                if sizes == {"a": expected, "b": expected}:
                    return
                await asyncio.sleep(0.05)  # counts are read once a second: no event

    await settles(3)
    members[1].close()  # a member on a leaves by disconnecting
    await settles(2)
    asker_b.say("leave room")
    await asker_b.expect("left room")
    await settles(1)
    # A broadcast event reaches the member on the other server, handled there.
    asker_b.say("join room")
    await asker_b.expect("joined room")
    async with asyncio.timeout(TIMEOUT):
        await b.bus.wait_subscribed()
    asker_a.say("shout room anyone?")
    await asker_a.expect("note: anyone?")
    await asker_b.expect("note: anyone?")


ROOM = """\
version: 1
server:
  name: room
handlers:
  connected:
    - join: room
  input:
    - equals: ready
      do: [reply: ready]
    - do: [broadcast: {group: room, text: "{input}", include_self: false}]
"""


async def read_lines(client: Client, count: int, seen: list[str] | None = None) -> list[str]:
    lines = seen if seen is not None else []
    for _ in range(count):
        lines.append(await client.line())
    return lines


def in_order(lines: list[str], tag: str) -> list[int]:
    numbers = [int(line[len(tag) :]) for line in lines if line.startswith(tag)]
    assert numbers == sorted(numbers), f"{tag} out of order"
    return numbers


async def room_clients(node: Node, count: int) -> list[Client]:
    clients = [await Client.to(node) for _ in range(count)]
    for client in clients:  # each has joined once it answers
        client.say("ready")
        await client.expect("ready")
    return clients


async def test_order_per_publisher_holds_for_1000_messages(
    redis: RedisServer, nodes: StartNode
) -> None:
    a, b = await nodes(ROOM, redis.url), await nodes(ROOM, redis.url)
    sender_a, reader_a = await room_clients(a, 2)
    sender_b, reader_b = await room_clients(b, 2)
    async with asyncio.timeout(TIMEOUT):
        await a.bus.wait_subscribed()
        await b.bus.wait_subscribed()
    # Both publish at once; each reader gets both streams, each in its order.
    n = 1000
    sender_a.say(*(f"a{i}" for i in range(n)))
    sender_b.say(*(f"b{i}" for i in range(n)))
    got_a, got_b = await asyncio.gather(read_lines(reader_a, 2 * n), read_lines(reader_b, 2 * n))
    for lines in (got_a, got_b):
        assert in_order(lines, "a") == list(range(n))
        assert in_order(lines, "b") == list(range(n))
    # The senders heard each other's too (not their own: include_self is false).
    assert in_order(await read_lines(sender_a, n), "b") == list(range(n))
    assert in_order(await read_lines(sender_b, n), "a") == list(range(n))
    for node in (a, b):
        stats = node.bus.statistics()
        assert (stats.published, stats.received, stats.dropped) == (n, n, 0)


async def test_redis_stopped_and_restarted_in_the_middle_of_a_broadcast(
    redis: RedisServer, nodes: StartNode
) -> None:
    a, b = await nodes(ROOM, redis.url), await nodes(ROOM, redis.url)
    sender, local = await room_clients(a, 2)
    (remote,) = await room_clients(b, 1)
    async with asyncio.timeout(TIMEOUT):
        await a.bus.wait_subscribed()
        await b.bus.wait_subscribed()
    remote_lines: list[str] = []
    half = asyncio.Event()

    async def remote_reader() -> None:
        while True:
            remote_lines.append(await remote.line())
            if len(remote_lines) == 300:
                half.set()

    reading = asyncio.create_task(remote_reader())

    async def send(first: int, last: int, during: Callable[[int], Awaitable[None]]) -> None:
        # One at a time, each once the local member has it: the local round trip
        # is timed for every message, and Redis dies between two of them.
        for i in range(first, last):
            sender.say(f"m{i}")
            async with asyncio.timeout(1.0):  # local delivery never waits on Redis
                assert await local.line() == f"m{i}"
            await during(i)

    async def kill_at_half(i: int) -> None:
        if half.is_set() and redis.proc is not None:
            await redis.stop()

    async def nothing(i: int) -> None:
        pass

    try:
        await send(0, 600, kill_at_half)  # Redis is killed once remote has 300
        assert redis.proc is None, "remote never got 300 messages"
        before = len(remote_lines)
        await until(lambda: not a.bus.statistics().publishing)
        assert a.kernel.statistics().stalls == 0
        await redis.start()  # the same port, empty
        await until(lambda: a.bus.statistics().publishing)
        async with asyncio.timeout(TIMEOUT):
            await a.bus.wait_subscribed()
            await b.bus.wait_subscribed()
        await send(600, 900, nothing)
        await until(lambda: len(remote_lines) >= before + 300)
    finally:
        reading.cancel()
    numbers = in_order(remote_lines, "m")
    assert numbers[:300] == list(range(300))
    assert numbers[-300:] == list(range(600, 900))  # remote delivery resumed
    missed = 600 - len(numbers[:-300])
    stats_a, stats_b = a.bus.statistics(), b.bus.statistics()
    print(f"missed {missed} of 600 in the outage; a: {stats_a}; b: {stats_b}")
    # At most once, and counted: each message b missed, a either counted as
    # dropped (Redis unreachable) or published just before Redis died with it.
    assert stats_a.published + stats_a.dropped == 900
    assert stats_b.received == len(remote_lines) <= stats_a.published
    assert missed == stats_a.dropped + (stats_a.published - stats_b.received)
    assert stats_a.dropped > 0
    assert stats_a.reconnects == stats_b.reconnects == 1
    assert stats_a.connected and stats_b.connected and stats_a.queued == 0


async def test_two_run_processes_share_groups(redis: RedisServer, tmp_path: Path) -> None:
    spec = tmp_path / "chat.yaml"
    spec.write_text(CHAT.read_text().replace("  port: 12346", f"  port: 0\n  bus: {redis.url}"))
    procs: list[asyncio.subprocess.Process] = []
    try:
        ports = []
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "statemachine_server", "run", str(spec),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout is not None
            async with asyncio.timeout(TIMEOUT):
                line = (await proc.stdout.readline()).decode()
            assert line.startswith("listening on "), line
            ports.append(int(line.rsplit(":", 1)[1]))
        # a publishes alice's join in the background: it must be out before b
        # subscribes (bob's arrival), or bob, who came later, would hear it too.
        # A client of our own on Redis sees it go by.
        witness = aioredis.Redis.from_url(redis.url)
        pubsub = witness.pubsub()
        await pubsub.psubscribe("statemachine-server:chat:group:*")
        try:
            alice = await chatter(ports[0], "alice")
            async with asyncio.timeout(TIMEOUT):
                while await pubsub.get_message(ignore_subscribe_messages=True, timeout=1) is None:
                    pass  # (the subscription's confirmation, or a second without news)
        finally:
            await pubsub.aclose()
            await witness.aclose()
        bob = await chatter(ports[1], "bob")
        try:
            await alice.expect("* bob joined #lobby")
            alice.say("hello from a")
            await bob.expect("<alice> hello from a")
            bob.say("hello from b")
            await alice.expect("<alice> hello from a", "<bob> hello from b")
        finally:
            alice.close()
            bob.close()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                async with asyncio.timeout(TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0]


async def test_chat_on_two_workers_with_a_bus(redis: RedisServer, tmp_path: Path) -> None:
    # run --workers 2 --bus: clients on one port land on both workers (SO_REUSEPORT)
    # and all see each other's messages, as on one server.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemachine_server", "run", str(CHAT), "--port", "0",
        "--workers", "2", "--bus", redis.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    clients: list[Client] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening on "), line
        port = int(line.rsplit(":", 1)[1])
        clients = [await chatter(port, f"u{k}") for k in range(8)]
        for k, sayer in enumerate(clients):
            # At most once: a member's worker may still be subscribing to the room
            # when the first line goes out, so the sayer says it again until every
            # other member has heard it.
            waiting = [c for c in clients if c is not sayer]
            async with asyncio.timeout(TIMEOUT):
                while waiting:
                    sayer.say(f"hello from u{k}")
                    heard = await asyncio.gather(*(_hears(c, f"<u{k}> hello from u{k}")
                                                   for c in waiting))  # fmt: skip
                    waiting = [c for c, ok in zip(waiting, heard, strict=True) if not ok]
    finally:
        for client in clients:
            client.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(TIMEOUT):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


async def _hears(client: Client, wanted: str, within: float = 0.5) -> bool:
    """Whether ``client`` receives ``wanted`` within ``within`` seconds (other lines,
    such as join notices, are skipped)."""
    try:
        async with asyncio.timeout(within):
            while True:
                if (await client.reader.readline()).decode().rstrip("\n") == wanted:
                    return True
    except TimeoutError:
        return False
