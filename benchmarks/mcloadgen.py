"""The memcache scenario's client: pipelined memcached text-protocol get/set, checked.

``python -m benchmarks.mcloadgen HOST PORT CONNECTIONS BATCH KEYS VALUE_BYTES WARMUP_S MEASURE_S``

Prints one JSON line shaped like the line-echo clients' (``lines`` holds the
commands answered in the window), so :class:`benchmarks.loadgen.Client` runs it.

1. **Probe** (one connection): ``set``, ``set ... noreply`` of a value holding
   ``"\\r\\n"``, a three-key ``get`` with a miss in the middle, ``delete`` twice
   (``DELETED``, ``NOT_FOUND``), ``delete ... noreply``, ``get`` of deleted keys,
   all in one write; the replies must be exactly memcached's.
2. **Fill**: the same connection stores every key of the keyspace (``key:I``,
   flags I, a ``VALUE_BYTES``-byte value made from I), 100 ``set`` per write,
   each answered ``STORED``.
3. **Load**: ``CONNECTIONS`` connections; each writes a batch of ``BATCH``
   commands in one ``send`` (groups of one ``set`` and three ``get``, keys drawn
   at random from the keyspace; 32 batches per connection, cycled, drawn from a
   generator seeded with the connection's index), reads until all ``BATCH``
   replies are in, and writes the next batch. Every ``set`` stores the value the
   fill stored, so every ``get`` hits and the reply to every batch is known
   byte for byte: each received byte is compared with it (the flags, the length
   and the data of every ``VALUE``, every ``STORED`` and ``END`` line), and any
   difference, extra byte, or closed connection fails the run. Connections ask
   for different keys, so crossed replies would be caught too.

The same phases as the line clients (``pyloadgen.Run``): warm-up, measuring
window, drain; a stall of 5 s fails the run.

The client is one Python process on its own CPU (the harness pins it; a second
process could only share that CPU on a two-CPU machine). Its cost per command is
a fraction of a Python server's: batches are built once, a reply is checked by
one ``bytes.startswith`` per ``recv``. So it is not what limits a Python server
here; it does limit memcached, whose figure is then a floor (the report gives
the client's CPU share and warns above 90%).
"""

from __future__ import annotations

import json
import random
import select
import socket
import sys
import time
from dataclasses import dataclass

from .pyloadgen import Run, Stop

__all__ = ["GETS_PER_SET", "main", "make_batch", "value_of"]

#: Each group in a batch: one ``set`` then this many ``get``.
GETS_PER_SET = 3
PATTERNS = 32  # distinct batches per connection, cycled
FILL_PER_WRITE = 100
SETUP_TIMEOUT_S = 10.0
RECV_BYTES = 1 << 18

PROBE = (
    b"set probe:a 7 0 5\r\nhello\r\n"
    b"set probe:b 0 0 4 noreply\r\nab\r\n\r\n"
    b"get probe:a probe:missing probe:b\r\n"
    b"delete probe:a\r\n"
    b"delete probe:a\r\n"
    b"get probe:a\r\n"
    b"delete probe:b noreply\r\n"
    b"get probe:b probe:a\r\n"
)
PROBE_REPLY = (
    b"STORED\r\n"
    b"VALUE probe:a 7 5\r\nhello\r\nVALUE probe:b 0 4\r\nab\r\n\r\nEND\r\n"
    b"DELETED\r\n"
    b"NOT_FOUND\r\n"
    b"END\r\n"
    b"END\r\n"
)


def key_of(i: int) -> bytes:
    return b"key:%d" % i


def value_of(i: int, size: int) -> bytes:
    """Key ``i``'s value: ``size`` bytes that start with its number."""
    head = b"v%d-" % i
    body = bytes(97 + (i + j) % 26 for j in range(size))
    return (head + body)[:size]


def _set(i: int, size: int) -> bytes:
    return b"set %s %d 0 %d\r\n%s\r\n" % (key_of(i), i, size, value_of(i, size))


def _hit(i: int, size: int) -> bytes:
    return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key_of(i), i, size, value_of(i, size))


def make_batch(rng: random.Random, commands: int, keys: int, size: int) -> tuple[bytes, bytes]:
    """One batch of ``commands`` commands and the exact reply it must get."""
    request: list[bytes] = []
    reply: list[bytes] = []
    for n in range(commands):
        k = rng.randrange(keys)
        if n % (GETS_PER_SET + 1) == 0:
            request.append(_set(k, size))
            reply.append(b"STORED\r\n")
        else:
            request.append(b"get %s\r\n" % key_of(k))
            reply.append(_hit(k, size))
    return b"".join(request), b"".join(reply)


def _differs(expected: bytes, at: int, got: bytes) -> str:
    """Where ``got``, received at offset ``at`` of the reply, leaves ``expected``."""
    n, limit = 0, min(len(got), len(expected) - at)
    while n < limit and got[n] == expected[at + n]:
        n += 1
    where = at + n
    return (
        f"reply differs at byte {where} of {len(expected)}: expected "
        f"{expected[where : where + 40]!r}, got {got[n : n + 40]!r}"
    )


def _exchange(sock: socket.socket, request: bytes, expected: bytes, what: str) -> None:
    """Send ``request`` (blocking), read ``len(expected)`` bytes, compare them."""
    sock.sendall(request)
    got = b""
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while len(got) < len(expected):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(RECV_BYTES)
        except TimeoutError:
            raise Stop(f"{what}: no complete reply in {SETUP_TIMEOUT_S:g} s "
                       f"(got {got[-80:]!r})") from None  # fmt: skip
        if not chunk:
            raise Stop(f"{what}: the server closed the connection (got {got[-80:]!r})")
        if not expected.startswith(chunk, len(got)):
            raise Stop(f"{what}: {_differs(expected, len(got), chunk)}")
        got += chunk


def _setup(host: str, port: int, keys: int, size: int) -> None:
    """The probe and the fill, on one connection."""
    with socket.create_connection((host, port), timeout=SETUP_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _exchange(sock, PROBE, PROBE_REPLY, "probe")
        for first in range(0, keys, FILL_PER_WRITE):
            chunk = range(first, min(keys, first + FILL_PER_WRITE))
            request = b"".join(_set(i, size) for i in chunk)
            _exchange(sock, request, b"STORED\r\n" * len(chunk), "fill")


@dataclass
class Conn:
    sock: socket.socket
    batches: list[tuple[bytes, bytes]]
    turn: int = 0
    request: bytes = b""
    expected: bytes = b""
    tx: int = 0
    rx: int = 0
    writing: bool = False  # registered for EPOLLOUT too


def _load(run: Run, conns: list[Conn]) -> int:
    """The load phase; returns the batches completed inside the measuring window."""
    poller = select.epoll()
    by_fd = {c.sock.fileno(): (i, c) for i, c in enumerate(conns)}
    in_flight = 0
    counted = 0

    def send_rest(c: Conn) -> None:
        try:
            while c.tx < len(c.request):
                c.tx += c.sock.send(c.request[c.tx :])
        except BlockingIOError:
            pass
        waiting = c.tx < len(c.request)
        if waiting != c.writing:  # epoll_ctl only when the interest changes
            c.writing = waiting
            poller.modify(c.sock.fileno(), select.EPOLLIN | (select.EPOLLOUT if waiting else 0))

    def begin(c: Conn) -> None:
        nonlocal in_flight
        c.request, c.expected = c.batches[c.turn]
        c.turn = (c.turn + 1) % len(c.batches)
        c.tx = c.rx = 0
        in_flight += 1
        send_rest(c)

    try:
        for c in conns:
            poller.register(c.sock.fileno(), select.EPOLLIN)
        for c in conns:
            begin(c)
        while True:
            now = time.monotonic()
            run.update(now)
            if run.phase == 2 and (in_flight == 0 or now >= run.drain_deadline):
                return counted
            for fd, events in poller.poll(0.1):
                i, c = by_fd[fd]
                if events & select.EPOLLOUT:
                    send_rest(c)
                if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    continue
                try:
                    data = c.sock.recv(RECV_BYTES)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    run.failed("io", i, str(exc))
                    continue
                if not data:
                    run.failed("closed", i, "closed by the server")
                    continue
                run.last_progress = now
                if not c.expected.startswith(data, c.rx):
                    run.failed("mismatch", i, _differs(c.expected, c.rx, data))
                    continue
                c.rx += len(data)
                if c.rx == len(c.expected):
                    in_flight -= 1
                    if run.phase == 1:
                        counted += 1
                    if run.phase < 2:
                        begin(c)
    finally:
        poller.close()


def main(argv: list[str]) -> int:
    """``python -m benchmarks.mcloadgen HOST PORT CONNECTIONS BATCH KEYS VALUE_BYTES WARMUP_S
    MEASURE_S``: see the module's docstring."""
    if len(argv) != 8:
        print(main.__doc__, file=sys.stderr)
        return 2
    host, port, nconn, batch, keys, size = argv[0], *map(int, argv[1:6])
    warmup, measure = float(argv[6]), float(argv[7])
    group = GETS_PER_SET + 1
    if batch % group or nconn < 1 or keys < 1 or not 0 < size <= 1 << 20:
        print(f"BATCH must be a multiple of {group}; CONNECTIONS, KEYS, VALUE_BYTES > 0",
              file=sys.stderr)  # fmt: skip
        return 2
    sets = batch // group
    conns: list[Conn] = []
    error: str | None = None
    run = Run(warmup, measure, tolerant=False)
    counted = 0
    try:
        _setup(host, port, keys, size)
        for index in range(nconn):
            rng = random.Random(index)
            batches = [make_batch(rng, batch, keys, size) for _ in range(PATTERNS)]
            sock = socket.create_connection((host, port), timeout=SETUP_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conns.append(Conn(sock, batches))
        run = Run(warmup, measure, tolerant=False)  # the clock starts after the setup
        counted = _load(run, conns)
    except Stop as exc:
        error = str(exc)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for c in conns:
            c.sock.close()
    run.finish()
    result = {
        "impl": "python-memcache",
        "mode": "memcache",
        "connections": nconn,
        "commands_per_batch": batch,
        "sets_per_batch": sets,
        "gets_per_batch": batch - sets,
        "keys": keys,
        "value_bytes": size,
        "batches": counted,
        "stored": counted * sets,  # STORED lines received and checked in the window
        "end": counted * (batch - sets),  # END lines (each after its VALUE), the same
        **run.tail(counted * batch, error),
    }
    print(json.dumps(result), flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
