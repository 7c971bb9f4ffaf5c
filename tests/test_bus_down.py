"""A bus whose Redis cannot be reached: local delivery goes on, publishing is dropped and counted.

No redis-server is needed: the bus points at a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from conftest import TIMEOUT, connect
from test_bus import ROOM  # the room spec: join, broadcast to the others

from statemachine_server import Kernel
from statemachine_server.bus.redisbus import BACKOFF_MIN, Bus, redacted
from statemachine_server.errors import SpecError
from statemachine_server.language import build_server, load_spec_text
from statemachine_server.language.runtime import RUNTIME


def dead_url() -> str:
    with socket.socket() as sock:  # bound, closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


class Nobody:
    def deliver_text(self, group: str, text: str) -> None:
        raise AssertionError("nothing arrives")

    def deliver_event(self, group: str, event: str, data: Any) -> None:
        raise AssertionError("nothing arrives")

    def deliver_post(self, target: int | str, event: str, data: Any) -> bool:
        raise AssertionError("nothing arrives")


async def test_past_its_bound_the_publish_queue_drops_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus(Kernel(), dead_url(), name="t", receiver=Nobody(), queue_size=10)
    try:
        for i in range(15):  # the kernel is not serving: nothing drains the queue
            bus.broadcast_text("room", f"line {i}")
        stats = bus.statistics()
        assert (stats.queued, stats.dropped, stats.published) == (10, 5, 0)
        bus.broadcast_event("room", "note", object())  # cannot be encoded: dropped too
        assert bus.statistics().dropped == 6
    finally:
        await bus.aclose()
    assert bus.statistics().dropped == 16  # what waited is dropped at the close
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "wait for Redis" in w]) == 1, warnings


async def test_with_redis_unreachable_local_members_are_served_and_publishing_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "statemachine_server")
    kernel = Kernel()
    started = asyncio.Event()
    spec = load_spec_text(ROOM, "room.yaml", server={"port": 0, "bus": dead_url()})
    server = build_server(spec, kernel, on_started=lambda s: started.set())
    bus: Bus = server.handlers[RUNTIME].bus  # type: ignore[index]
    serving = asyncio.create_task(kernel.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            await started.wait()
        sender, member = await connect(server), await connect(server)
        for _reader, writer in (sender, member):
            writer.write(b"ready\n")
        for reader, _writer in (sender, member):
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readline() == b"ready\n"
        # 200 lines, each read by the other member before the next is sent.
        for i in range(200):
            sender[1].write(f"m{i}\n".encode())
            async with asyncio.timeout(1.0):  # never waits on Redis
                assert await member[0].readline() == f"m{i}\n".encode()
        # The subscriber keeps trying, the outage is told once.
        async with asyncio.timeout(TIMEOUT):
            while bus.statistics().dropped < 200:
                await asyncio.sleep(BACKOFF_MIN / 2)
        stats = bus.statistics()
        assert (stats.published, stats.dropped, stats.connected, stats.publishing) == (
            0, 200, False, False,
        )  # fmt: skip
        for _reader, writer in (sender, member):
            writer.close()
    finally:
        async with asyncio.timeout(TIMEOUT):
            await kernel.shutdown(deadline=1.0)
        kernel.stop()
        await serving
        await bus.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "cannot publish" in w]) == 1, warnings
    assert len([w for w in warnings if "subscription to" in w]) == 1, warnings
    assert not [w for w in warnings if "again" in w], warnings


def test_a_bus_url_redis_cannot_read_is_a_spec_error() -> None:
    spec = load_spec_text(ROOM, "room.yaml", server={"port": 0, "bus": "redis://host:port/0"})
    with pytest.raises(SpecError, match=r"server\.bus"):
        build_server(spec, Kernel())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@10.0.0.5:6380/2", "redis://10.0.0.5:6380/2"),
        ("rediss://user:secret@redis.example/0", "rediss://redis.example/0"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
    ],
)
def test_logs_name_the_redis_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
