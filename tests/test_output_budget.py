"""Replies held for clients that do not read: bounded per client (``max_output``),
as they are made, and for all clients together (``max_output_total``), so neither
fan-out (one talker, many members that never read) nor amplification (a short
request for a long reply, from several clients) multiplies ``max_output``."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from conftest import TIMEOUT, wait_until

from statemachine_server import Connection
from statemachine_server.limits import Limits

MB = 1_000_000


async def member(port: int) -> socket.socket:
    """A client that connects and never reads (a small receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def small_send_buffer(session: Connection) -> None:
    # The kernel's socket buffers would otherwise absorb megabytes first.
    assert session.transport is not None
    session.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


class Room:
    """The members of a chat room and the commands the talker sends."""

    def __init__(self) -> None:
        self.members: list[Connection] = []
        self.talker: Connection | None = None

    def connected(self, session: Connection) -> None:
        small_send_buffer(session)

    def command(self, session: Connection, line: str) -> None:
        verb, _, rest = line.partition(" ")
        if verb == "join":
            self.members.append(session)
            return
        self.talker = session
        if verb == "all":  # "all N": N bytes to every member, 100 kB at a time
            size = int(rest)
            for m in self.members:
                for _ in range(size // 100_000):
                    m.put("x" * 100_000)
        elif verb == "to":  # "to I N": N bytes to member I, 100 kB at a time
            index, size = map(int, rest.split())
            for _ in range(size // 100_000):
                self.members[index].put("x" * 100_000)
        session.put(str(session.server.statistics().overflows))


async def start_room(serve: Any, limits: Limits, members: int) -> tuple[Any, Room, list[Any]]:
    room = Room()
    server = await serve(on_input=room.command, on_connected=room.connected, limits=limits)
    socks = []
    for _ in range(members):
        sock = await member(server.port)
        await asyncio.get_running_loop().sock_sendall(sock, b"join\n")
        socks.append(sock)
    await wait_until(lambda: len(room.members) == members)
    return server, room, socks


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> int:
    writer.write(line.encode() + b"\n")
    async with asyncio.timeout(TIMEOUT):
        return int(await reader.readline())


async def test_fan_out_to_members_that_never_read_stays_within_max_output_total(
    serve: Any,
) -> None:
    limit = 3 * MB
    server, room, socks = await start_room(
        serve, Limits(max_output=64 * MB, max_output_total=limit), members=5
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for _ in range(20):  # 20 x 5 x 500 kB offered: 50 MB, 10 MB per member
        await ask(reader, writer, "all 500000")
        assert server.statistics().held_output <= limit
    stats = server.statistics()
    # Without the total each member would hold its 10 MB (max_output is 64 MB):
    # the largest backlogs were cut until the rest fit.
    assert stats.overflows >= 4
    assert stats.held_output <= limit
    assert sum(m.state == "closed" or m.transport is None or m.transport.is_closing()
               for m in room.members) == stats.overflows  # fmt: skip
    assert await ask(reader, writer, "ping") == stats.overflows  # the talker is served
    writer.close()
    for sock in socks:
        sock.close()


async def test_the_largest_backlog_is_cut_first(serve: Any) -> None:
    limit = 4 * MB
    server, room, socks = await start_room(
        serve, Limits(max_output=64 * MB, max_output_total=limit), members=2
    )
    big, small = room.members
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await ask(reader, writer, "to 0 3000000")
    await ask(reader, writer, "to 1 800000")
    assert server.statistics().overflows == 0
    assert await ask(reader, writer, "to 1 500000") == 1  # 4.3 MB: over the total
    assert big.transport is None or big.transport.is_closing()
    assert small.transport is not None and not small.transport.is_closing()
    assert server.statistics().held_output <= limit
    writer.close()
    for sock in socks:
        sock.close()


async def test_a_client_that_does_not_read_is_cut_as_replies_are_put(serve: Any) -> None:
    # Past high_water the replies put for it are counted at once: a broadcast of
    # 5 MB to it is cut while the handler makes it, not after the tick's write.
    server, room, socks = await start_room(
        serve, Limits(max_output=2 * MB, max_output_total=64 * MB), members=1
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await ask(reader, writer, "to 0 200000")  # past high_water: now counted
    await wait_until(lambda: room.members[0].flow.reasons)
    assert await ask(reader, writer, "to 0 5000000") == 1  # cut inside that handler
    writer.close()
    for sock in socks:
        sock.close()


async def test_one_huge_reply_to_a_client_that_does_not_read_is_not_copied_whole(
    serve: Any,
) -> None:
    # Amplification: a short request, a 50 MB reply, a client that never reads.
    # Written a max_output slice at a time, it is cut after the first slices
    # instead of being copied whole into the transport's buffer.
    written = []

    def connected(session: Connection) -> None:
        small_send_buffer(session)
        transport = session.transport
        assert transport is not None
        write = transport.write

        def counting(data: Any) -> None:
            written.append(len(data))
            write(data)

        transport.write = counting  # type: ignore[method-assign]

    server = await serve(
        on_input=lambda s, line: s.put("y" * 50 * MB),
        on_connected=connected,
        limits=Limits(max_output=2 * MB),
    )
    sock = await member(server.port)
    await asyncio.get_running_loop().sock_sendall(sock, b"get\n")
    await wait_until(lambda: server.statistics().overflows == 1)
    assert sum(written) <= 2 * 2 * MB
    sock.close()
