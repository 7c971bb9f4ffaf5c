"""One process's node on a Redis bus: groups, broadcasts and posts across processes.

Theory of operation
-------------------
Local delivery stays direct: a broadcast reaches this process's members in the
handler that makes it, as without a bus. Then it is *also* encoded
(:mod:`.wire`) and appended to the publish queue, and that is all the
per-message path does: nothing on it awaits Redis.

Three tasks talk to Redis, on the kernel's loop:

- the **publisher** drains the queue in order, up to :data:`BATCH` messages per
  pipeline (one round trip), on one connection at a time: what one process
  publishes arrives everywhere in the order it was published;
- the **subscriber** holds one pub/sub connection, subscribed to the channel of
  each group with members here, to this node's channel (posts by id) and to the
  channel of every node (posts by alias). It delivers what other nodes published
  straight to the members (a text to their replies, an event to the kernel's
  queue) and skips this node's own messages;
- the **refresher** keeps the member counts (:mod:`.sizes`).

A group's channel is subscribed to when its first member here joins, and left
when its last one leaves. Before publishing, the publisher waits (at most
:data:`SUBSCRIBE_WAIT`) for the subscriptions asked for so far to be confirmed:
so a session that joins a group and then speaks in it hears the answers.

The promise is **at most once**. Redis pub/sub keeps nothing: a message
published while a node is not subscribed (Redis restarting, the node
reconnecting, its first member of a group joining a moment later) never reaches
that node's members. While Redis is unreachable, local delivery goes on,
publishing is dropped (counted in ``dropped``, logged once per outage), the
subscriber reconnects every :data:`BACKOFF_MIN` to :data:`BACKOFF_MAX` seconds,
doubling, and the publisher probes as often. The queue is bounded
(:data:`QUEUE_SIZE` messages, :data:`QUEUE_BYTES` bytes): past either, a message
is dropped and counted.

Every command is bounded in time (:data:`COMMAND_TIMEOUT`), and the pub/sub
connection is pinged when quiet (:data:`PING_EVERY`): silence for
:data:`SILENCE` is a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .sizes import MARK, REFRESH, TTL, Sizes, field
from .wire import Event, Message, Names, Post, Text, WireError, decode, encode, new_node

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = [
    "BACKOFF_MAX", "BACKOFF_MIN", "BATCH", "COMMAND_TIMEOUT", "PING_EVERY", "QUEUE_BYTES",
    "QUEUE_SIZE", "SILENCE", "SUBSCRIBE_WAIT", "Bus", "BusStatistics", "Receiver", "redacted",
]  # fmt: skip

log = logging.getLogger("statemachine_server")

#: Messages waiting to be published at most: about a second of a busy chat
#: server's broadcasts (10,000 a second), enough to ride out a slow round trip.
QUEUE_SIZE = 10_000
#: Bytes waiting at most: Redis's own soft limit on a pub/sub client's output
#: buffer (``client-output-buffer-limit pubsub 32mb 8mb 60``); a subscriber that
#: far behind is being cut off by Redis anyway.
QUEUE_BYTES = 8 << 20
#: Messages per pipeline: one round trip each; more would hold the others'
#: turns on the loop longer while it is encoded.
BATCH = 512
#: Reconnection delays: the first, doubled at each failure up to the last.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
#: Seconds any one command (or connecting) may take.
COMMAND_TIMEOUT = 2.0
#: Seconds the publisher waits for the subscriptions asked for before it.
SUBSCRIBE_WAIT = 0.5
#: A quiet pub/sub connection is pinged this often; silence this long is a loss.
PING_EVERY = 5.0
SILENCE = 3 * PING_EVERY
#: Seconds closing waits for the tasks to end once cancelled.
CLOSE_TIMEOUT = 1.0

_LOST = (RedisError, OSError, TimeoutError)


class Receiver(Protocol):
    """Where the bus delivers what other processes published: a spec's runtime."""

    def deliver_text(self, group: str, text: str) -> None: ...

    def deliver_event(self, group: str, event: str, data: Any) -> None: ...

    def deliver_post(self, target: int | str, event: str, data: Any) -> bool: ...


class BusStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a bus's counters (see :meth:`Bus.statistics`)."""

    #: This process's node name.
    node: str
    #: Whether the subscription is up (other nodes' messages arrive).
    connected: bool
    #: Whether publishing goes on (false while Redis is unreachable).
    publishing: bool
    #: Messages Redis accepted from this node.
    published: int
    #: Messages from other nodes delivered here.
    received: int
    #: Messages this node did not publish: Redis unreachable, the queue full, or
    #: an event's input that MessagePack cannot carry.
    dropped: int
    #: Times the subscription came back after it was lost.
    reconnects: int
    #: Messages waiting to be published.
    queued: int
    #: Groups subscribed to (those with members here).
    groups: int


def redacted(url: str) -> str:
    """``url`` without its user name and password (for logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Bus:
    """This process's node on the Redis bus at ``url``, for the server ``name``.

    Made by :func:`~statemachine_server.language.build.build_server` when the
    spec has ``server.bus``; it starts when the kernel serves and closes when the
    kernel is done.

    Args:
        kernel: the kernel whose loop runs the bus, and whose end closes it.
        url: ``redis://HOST:PORT/DB`` (``rediss://`` for TLS).
        name: the server's name: the channels and keys are its own.
        receiver: where other nodes' messages go.
        queue_size: messages waiting to be published at most.
        refresh: seconds between member count refreshes.

    Raises:
        ValueError: ``url`` is not a Redis URL.
    """

    def __init__(
        self,
        kernel: Kernel,
        url: str,
        *,
        name: str,
        receiver: Receiver,
        queue_size: int = QUEUE_SIZE,
        refresh: float = REFRESH,
    ):
        self.node = new_node()
        self.name = name
        self.names = Names(name)
        self.url = url
        self.receiver = receiver
        self.queue_size = queue_size
        self.refresh = refresh
        options: dict[str, Any] = {
            "socket_connect_timeout": COMMAND_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),  # our own loops retry, with backoff and counts
            "client_name": f"statemachine-server:{name}:{self.node}",
        }
        #: Commands: publishing, member counts.
        self.client: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=COMMAND_TIMEOUT, **options
        )
        # The subscription: it waits for messages as long as it takes (whether a
        # quiet connection is alive, pings tell), its commands bounded one by one.
        self._listener: aioredis.Redis = aioredis.from_url(url, socket_timeout=None, **options)
        self.sizes = Sizes(ttl=TTL)
        self.connected = False  # the subscription is up
        self.publishing = True  # until a publish fails
        self.published = self.received = self.dropped = self.reconnects = 0
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queued_bytes = 0
        self._full = False  # the queue overflowed (logged once until it drains)
        self._bad_input = False  # an event's input could not be encoded (logged once)
        self._pending = asyncio.Event()  # the queue has something
        self._refresh_now = asyncio.Event()
        # Subscription changes for the subscriber: (subscribe?, channel), in order.
        self._changes: deque[tuple[bool, bytes]] = deque()
        self._changed = asyncio.Event()
        # Channels asked for and confirmed so far (the publisher's wait).
        self._asked = self._confirmed = 0
        self._confirmation = asyncio.Event()
        self._heard = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        # Each loop ends when it sees this, besides being cancelled: redis-py may
        # turn a cancellation that lands while it reads into a ConnectionError
        # (it disconnects first), which the loops take for an outage.
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._kernel = kernel
        self._leaving = False
        kernel.on_serve(self._start)
        kernel.on_shutdown(self._leave)
        kernel.on_finish(self._finish)

    # -- the per-message path: never awaits -----------------------------------------

    def broadcast_text(self, group: str, text: str) -> None:
        """Have the other nodes' members of ``group`` get ``text``."""
        self._send(self.names.group(group), Text(self.node, group, text))

    def broadcast_event(self, group: str, event: str, data: Any) -> None:
        """Have the other nodes' members of ``group`` handle ``event`` (input ``data``)."""
        self._send(self.names.group(group), Event(self.node, group, event, data))

    def post(self, node: str, session_id: int, event: str, data: Any) -> None:
        """Have session ``session_id`` of ``node`` handle ``event``."""
        self._send(self.names.node(node), Post(self.node, session_id, event, data))

    def post_alias(self, alias: str, event: str, data: Any) -> None:
        """Have the session named ``alias`` on any other node handle ``event``."""
        self._send(self.names.all, Post(self.node, alias, event, data))

    def _send(self, channel: bytes, message: Message) -> None:
        if not self.publishing:
            self.dropped += 1  # logged once when the outage began
            return
        try:
            payload = encode(message)
        except TypeError as exc:
            self.dropped += 1
            if not self._bad_input:
                self._bad_input = True
                log.error("bus: an event's input cannot go to other processes (%s); such "
                          "events reach this process's members only", exc)  # fmt: skip
            return
        if len(self._queue) >= self.queue_size or self._queued_bytes > QUEUE_BYTES:
            self.dropped += 1
            if not self._full:
                self._full = True
                log.warning("bus: %d messages wait for Redis; dropping more until they are "
                            "published", len(self._queue))  # fmt: skip
            return
        self._queue.append((channel, payload))
        self._queued_bytes += len(payload)
        if not self._pending.is_set():
            self._pending.set()

    def members(self, group: str, count: int) -> None:
        """This node now has ``count`` members in ``group`` (a join or a leave)."""
        had = group in self.sizes.local
        self.sizes.changed(group, count)
        if had != (count > 0):  # the first joined, or the last left
            self._changes.append((count > 0, self.names.group(group)))
            self._asked += 1
            self._changed.set()
        self._refresh_now.set()

    def remote_size(self, group: str) -> int:
        """The members of ``group`` on the other nodes, as last read."""
        sizes = self.sizes
        now = monotonic()
        sizes.asked(group, now)
        if sizes.curious:
            self._refresh_now.set()
        return sizes.others(group, now)

    async def wait_subscribed(self) -> None:
        """Wait until the subscription is up and every channel asked for so far
        (the groups with members here) is confirmed: from then on, what other
        nodes publish to those groups arrives. Unbounded: bound it yourself."""
        while not self.connected or self._confirmed < self._asked:
            self._confirmation.clear()
            await self._confirmation.wait()

    def statistics(self) -> BusStatistics:
        """Counters for metrics and tests."""
        return BusStatistics(
            node=self.node, connected=self.connected, publishing=self.publishing,
            published=self.published, received=self.received, dropped=self.dropped,
            reconnects=self.reconnects, queued=len(self._queue), groups=len(self.sizes.local),
        )  # fmt: skip

    # -- starting and closing ----------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for run in (self._subscriber, self._publisher, self._refresher):
            task = loop.create_task(run(), name=f"bus {run.__name__.strip('_')}")
            self._tasks.append(task)
        log.info("bus: node %s of %r on %s", self.node, self.name, redacted(self.url))

    def _finish(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
            self._kernel.track_task(self._closing)

    def _leave(self) -> None:
        # A graceful shutdown begins: this node's members are leaving, so its
        # counts go now (the refresher removes them while the sessions drain;
        # what is published meanwhile, their goodbyes, still goes out).
        self._leaving = True
        self._refresh_now.set()

    async def aclose(self) -> None:
        """Stop the tasks and close the connections; what still waits to be
        published is dropped (done when the kernel stops serving; awaiting it
        again waits for the same close)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        try:
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT)
        finally:
            self.connected = self.publishing = False
            self.dropped += len(self._queue)
            self._queue.clear()
            await self.client.aclose()
            await self._listener.aclose()

    # -- the publisher -----------------------------------------------------------------

    async def _publisher(self) -> None:
        queue = self._queue
        try:  # connect now, not at the first broadcast
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self.client.ping()
        except _LOST as exc:
            await self._publishing_lost(exc, 0)
        while not self._closed:
            await self._pending.wait()
            self._pending.clear()
            while queue:
                await self._subscribed_first()
                batch = [queue.popleft() for _ in range(min(len(queue), BATCH))]
                self._queued_bytes -= sum(len(payload) for _, payload in batch)
                try:
                    await self._publish(batch)
                except _LOST as exc:
                    await self._publishing_lost(exc, len(batch))
                else:
                    self.published += len(batch)
            self._full = False

    async def _publish(self, batch: list[tuple[bytes, bytes]]) -> None:
        if len(batch) == 1:
            await self.client.publish(*batch[0])
            return
        pipe = self.client.pipeline(transaction=False)
        for channel, payload in batch:
            pipe.publish(channel, payload)
        await pipe.execute()

    async def _subscribed_first(self) -> None:
        """Wait (bounded) for the subscriptions asked for so far to be confirmed."""
        target = self._asked
        if self._confirmed >= target or not self.connected:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_WAIT):
                while self._confirmed < target and self.connected:
                    self._confirmation.clear()
                    await self._confirmation.wait()

    async def _publishing_lost(self, exc: BaseException, lost: int) -> None:
        """Publishing failed: drop what waits, and what comes until Redis answers."""
        self.publishing = False
        before = self.dropped
        self.dropped += lost + len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        log.warning("bus: cannot publish to %s (%s); dropping what this process publishes "
                    "until Redis answers", redacted(self.url), _reason(exc))  # fmt: skip
        await self._until_it_answers()
        self.publishing = True
        self.sizes.lost()  # Redis may have restarted empty: write every count again
        self._refresh_now.set()
        log.warning("bus: publishing to %s again; %d messages dropped meanwhile",
                    redacted(self.url), self.dropped - before)  # fmt: skip

    async def _until_it_answers(self) -> None:
        """PING Redis until it answers: every BACKOFF_MIN seconds at first,
        doubling to BACKOFF_MAX."""
        delay = BACKOFF_MIN
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await self.client.ping()
                return
            except _LOST:
                delay = min(delay * 2, BACKOFF_MAX)

    # -- the subscriber ----------------------------------------------------------------

    async def _subscriber(self) -> None:
        delay, lost_at = BACKOFF_MIN, 0.0
        while not self._closed:
            pubsub = self._listener.pubsub()
            try:
                await self._subscribe_all(pubsub)
                if lost_at:
                    self.reconnects += 1
                    log.warning("bus: subscribed to %s again after %.1f s",
                                redacted(self.url), monotonic() - lost_at)  # fmt: skip
                delay, lost_at = BACKOFF_MIN, 0.0
                await _first_of(self._read(pubsub), self._control(pubsub))
            except _LOST as exc:
                if not lost_at:
                    lost_at = monotonic()
                    log.warning("bus: subscription to %s lost (%s); reconnecting, every "
                                "%.1f to %.0f s", redacted(self.url), _reason(exc),
                                BACKOFF_MIN, BACKOFF_MAX)  # fmt: skip
            finally:
                self.connected = False
                self._confirmation.set()  # a publisher waiting for confirmations goes on
                await pubsub.aclose()
            if not self._closed:
                await asyncio.sleep(delay)  # the backoff
                delay = min(delay * 2, BACKOFF_MAX)

    async def _subscribe_all(self, pubsub: PubSub) -> None:
        names = self.names
        channels = [names.node(self.node), names.all, *map(names.group, self.sizes.local)]
        # What was asked for before is in this list, or no longer wanted: start
        # counting confirmations afresh.
        self._changes.clear()
        self._confirmed = self._asked
        self._asked += len(channels)
        async with asyncio.timeout(COMMAND_TIMEOUT):
            await pubsub.subscribe(*channels)
        self._heard = monotonic()
        self.connected = True
        self._confirmation.set()

    async def _control(self, pubsub: PubSub) -> None:
        """Subscribe and unsubscribe as groups gain their first member and lose
        their last; ping when quiet."""
        changes = self._changes
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_EVERY):
                    await self._changed.wait()
            self._changed.clear()
            while changes:
                subscribe = changes[0][0]
                run = [changes.popleft()[1]]
                while changes and changes[0][0] is subscribe:  # one command for a run
                    run.append(changes.popleft()[1])
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    if subscribe:
                        await pubsub.subscribe(*run)
                    else:
                        await pubsub.unsubscribe(*run)
            quiet = monotonic() - self._heard
            if quiet > SILENCE:
                raise TimeoutError(f"nothing from Redis for {quiet:.0f} s")
            if quiet > PING_EVERY:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await pubsub.ping()

    async def _read(self, pubsub: PubSub) -> None:
        node, receiver = self.node, self.receiver
        while not self._closed:
            msg = await pubsub.get_message(timeout=None)
            self._heard = monotonic()
            if msg is None:
                continue
            kind = msg["type"]
            if kind != "message":
                if kind in ("subscribe", "unsubscribe"):
                    self._confirmed += 1
                    self._confirmation.set()
                continue
            try:
                message = decode(msg["data"])
            except WireError as exc:
                log.warning("bus: not a bus message on %r: %s", msg["channel"], exc)
                continue
            if message.node == node:
                continue  # ours: delivered here when it was sent
            self.received += 1
            try:
                if isinstance(message, Text):
                    receiver.deliver_text(message.group, message.text)
                elif isinstance(message, Event):
                    receiver.deliver_event(message.group, message.event, message.data)
                else:
                    receiver.deliver_post(message.target, message.event, message.data)
            except Exception as exc:  # a bug below us: that message, not the bus
                log.error("bus: delivering %r raised %r", message, exc, exc_info=exc)

    # -- member counts -----------------------------------------------------------------

    async def _refresher(self) -> None:
        while not self._closed:
            self._refresh_now.clear()
            if self._leaving:
                with contextlib.suppress(*_LOST):
                    async with asyncio.timeout(COMMAND_TIMEOUT):
                        pipe = self.client.pipeline(transaction=False)
                        pipe.delete(self.names.sizes(self.node))
                        pipe.srem(self.names.nodes, self.node)
                        await pipe.execute()
                return
            if self.publishing:
                try:
                    await self._refresh_sizes()
                except _LOST:
                    self.sizes.lost()  # the publisher reports the outage
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh):
                    await self._refresh_now.wait()

    async def _refresh_sizes(self) -> None:
        sizes, names, node = self.sizes, self.names, self.node
        own = names.sizes(node)
        whole, counts, gone = sizes.writes()
        async with asyncio.timeout(COMMAND_TIMEOUT):
            pipe = self.client.pipeline(transaction=False)
            if whole:
                pipe.delete(own)
            pipe.hsetnx(own, MARK, 1)  # type: ignore[arg-type]
            if counts:
                pipe.hset(own, mapping=counts)  # type: ignore[arg-type]
            if gone:
                pipe.hdel(own, *gone)  # type: ignore[arg-type]
            pipe.pexpire(own, int(sizes.ttl * 1000))
            pipe.sadd(names.nodes, node)
            pipe.smembers(names.nodes)
            replies = await pipe.execute()
            if replies[int(whole)] and sizes.local and not whole:
                # The marker was not there: the hash had gone (Redis restarted
                # empty, or it expired while this node could not reach it).
                sizes.lost()
                self._refresh_now.set()
            others = sorted(n.decode() for n in replies[-1] if n.decode() != node)
            groups = sizes.wanted(monotonic())
            rows: list[list[bytes | None]] = []
            if others and groups:
                fields = [MARK, *map(field, groups)]
                pipe = self.client.pipeline(transaction=False)
                for other in others:
                    pipe.hmget(names.sizes(other), fields)  # type: ignore[arg-type]
                rows = await pipe.execute()
                dead = [n for n, row in zip(others, rows, strict=True) if row[0] is None]
                if dead:  # expired: crashed, or gone without cleaning up
                    await self.client.srem(names.nodes, *dead)
        sizes.update(groups, (row[1:] for row in rows if row[0] is not None), monotonic())


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _first_of(*runs: Awaitable[None]) -> None:
    """Run ``runs`` together until one ends; cancel the others; raise what it raised."""
    tasks = [asyncio.ensure_future(run) for run in runs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
