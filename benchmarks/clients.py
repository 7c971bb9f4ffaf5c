"""Small Python clients the harness runs itself: idle holders, job and chat clients, misbehavers.

These need no speed, only control: they run in the harness process (pinned to the
load generator's CPU). Every one of them is bounded in time, closes its sockets in
``finally``, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import random
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .pyloadgen import make_line

__all__ = [
    "ChatClients",
    "Flooder",
    "JobClient",
    "JobLoop",
    "Slowloris",
    "open_idle",
    "primes_below",
    "raise_nofile",
]

LINE_BYTES = 64


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE towards ``needed`` (at most the hard limit).

    Children started afterwards (servers, clients) inherit it. Returns (soft, hard).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def read_echo(sock: socket.socket, expected: bytes, deadline: float) -> None:
    """Read until ``expected`` has come back (``\\r\\n`` accepted for ``\\n``).

    Raises:
        ConnectionError: the server closed the connection or sent something else.
        TimeoutError: not all of it arrived by ``deadline``.
    """
    want = expected.rstrip(b"\n")
    got = b""
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no echo in time")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server before the echo")
        got += chunk
        if len(got) > len(expected) + 1:
            raise ConnectionError("echo longer than the line sent")
    if got.rstrip(b"\r\n") != want:
        raise ConnectionError("echo differs from what was sent")


def open_idle(
    host: str, port: int, count: int, *, wave: int = 100, timeout: float = 10.0
) -> list[socket.socket]:
    """Open ``count`` connections, each admitted by one echoed line, and leave them idle.

    Connections are opened ``wave`` at a time (connect and send all, then read all
    echoes), so a server with a short listen queue is not flooded with SYNs.
    On any failure every socket opened so far is closed and the error raised.
    """
    socks: list[socket.socket] = []
    try:
        for start in range(0, count, wave):
            batch: list[tuple[socket.socket, bytes]] = []
            for i in range(start, min(count, start + wave)):
                sock = socket.create_connection((host, port), timeout=timeout)
                socks.append(sock)
                line = make_line(i % 26, LINE_BYTES)
                sock.sendall(line)
                batch.append((sock, line))
            deadline = time.monotonic() + timeout
            for sock, line in batch:
                read_echo(sock, line, deadline)
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()
    socks.clear()


class JobClient:
    """One connection that asks the server for a ``job`` and waits for ``job done``."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def run_job(self, timeout: float) -> tuple[float, float, str]:
        """Send ``job``; returns (sent at, answered at) on the monotonic clock, and the answer."""
        sent = time.monotonic()
        self.sock.sendall(b"job\n")
        deadline = sent + timeout
        got = b""
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to `job` within {timeout:.0f} s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the server during the job")
            got += chunk
        return sent, time.monotonic(), got.split(b"\n", 1)[0].decode(errors="replace").strip()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Misbehaver(threading.Thread):
    """A client thread that runs for at most ``seconds`` or until :meth:`stop`."""

    def __init__(self, host: str, port: int, seconds: float):
        super().__init__(daemon=True, name=type(self).__name__)
        self.host, self.port, self.seconds = host, port, seconds
        self.error: str | None = None  # why it could not go on, if it could not
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def finish(self, timeout: float = 10.0) -> None:
        """Stop it and wait (bounded) for its thread to end."""
        self.stop()
        if self.ident is not None:  # it was started
            self.join(timeout)


class Flooder(Misbehaver):
    """Sends lines as fast as the socket takes them and never reads a byte.

    A server that keeps reading without bound grows; one that stops reading when
    replies back up (its high-water mark) leaves the flooder blocked: ``sent``
    stops growing, and ``last_send`` tells when.
    """

    def __init__(self, host: str, port: int, seconds: float):
        super().__init__(host, port, seconds)
        self.sent = 0  # bytes the socket accepted
        self.last_send = 0.0  # seconds after the start when it last accepted some

    def run(self) -> None:
        chunk = make_line(0, LINE_BYTES) * 1024
        started = time.monotonic()
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5.0)
            sock.setblocking(False)
            while not self._stop_event.is_set() and time.monotonic() - started < self.seconds:
                try:
                    self.sent += sock.send(chunk)
                    self.last_send = time.monotonic() - started
                except BlockingIOError:
                    self._stop_event.wait(0.01)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if sock is not None:
                sock.close()


class Slowloris(Misbehaver):
    """Sends ``slowloris\\n`` one byte per second and checks each echo."""

    def __init__(self, host: str, port: int, seconds: float):
        super().__init__(host, port, seconds)
        self.echoes = 0  # lines echoed correctly
        self.mismatches = 0
        self.closed_by_server: float | None = None  # seconds after the start, if it was

    def run(self) -> None:
        line = b"slowloris\n"
        started = time.monotonic()
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5.0)
            i = 0
            while not self._stop_event.is_set() and time.monotonic() - started < self.seconds:
                sock.sendall(line[i : i + 1])
                i = (i + 1) % len(line)
                if i == 0:
                    try:
                        read_echo(sock, line, time.monotonic() + 5.0)
                        self.echoes += 1
                    except ConnectionError as exc:
                        if "closed" in str(exc):
                            self.closed_by_server = time.monotonic() - started
                            return
                        self.mismatches += 1
                self._stop_event.wait(1.0)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if sock is not None:
                sock.close()


def primes_below(n: int) -> int:
    """How many primes are below ``n`` (a sieve): the answer a ``primes N`` job must give."""
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return sum(sieve)


class JobLoop(Misbehaver):
    """One connection asking for ``primes N`` over and over, one job at a time.

    Each answer must be ``primes below N: R`` with the right R (``... `` progress
    lines before it are counted and skipped). A wrong answer, an ``error:`` reply,
    a closed connection or no answer within ``job_timeout`` is a failure: counted,
    and the connection replaced. No new job starts after ``seconds``; the one
    running then is waited for.
    """

    def __init__(self, host: str, port: int, seconds: float, n: int, job_timeout: float = 20.0):
        super().__init__(host, port, seconds)
        self.n, self.job_timeout = n, job_timeout
        self.expected = f"primes below {n}: {primes_below(n)}"
        self.done = 0
        self.failed = 0
        self.progress_lines = 0
        self.times: list[float] = []  # seconds from sending the job to its answer, per job done
        self.last_failure: str | None = None
        self.reconnects = 0

    def run(self) -> None:
        started = time.monotonic()
        sock: socket.socket | None = None
        try:
            while not self._stop_event.is_set() and time.monotonic() - started < self.seconds:
                if sock is None:
                    sock = socket.create_connection((self.host, self.port), timeout=5.0)
                try:
                    self._one_job(sock)
                except (OSError, ConnectionError, ValueError) as exc:
                    self.failed += 1
                    self.last_failure = f"{type(exc).__name__}: {exc}"
                    sock.close()
                    sock = None
                    self.reconnects += 1
                    self._stop_event.wait(0.1)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if sock is not None:
                sock.close()

    def _one_job(self, sock: socket.socket) -> None:
        sent = time.monotonic()
        sock.sendall(f"primes {self.n}\n".encode())
        deadline = sent + self.job_timeout
        pending = b""
        while True:
            while b"\n" not in pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer to `primes {self.n}` in {self.job_timeout:g} s")
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed by the server during the job")
                pending += chunk
            raw, pending = pending.split(b"\n", 1)
            line = raw.decode(errors="replace").rstrip("\r")
            if line.startswith("... "):
                self.progress_lines += 1
                continue
            if line != self.expected:
                raise ValueError(f"answer {line[:80]!r}, expected {self.expected!r}")
            if pending:
                raise ValueError(f"more after the answer: {pending[:80]!r}")
            self.done += 1
            self.times.append(time.monotonic() - sent)
            return


@dataclass
class _Member:
    """One chat client: its socket, room, what it sent and what it has received."""

    name: str
    room: str
    sock: socket.socket
    sent: int = 0  # messages sent (their sequence numbers are 0 .. sent - 1)
    next_send: float = 0.0
    pending: bytes = b""
    #: sender name -> the sequence number expected next from it
    expect: dict[str, int] = field(default_factory=dict)
    joined: bool = False  # "/join ROOM" answered
    left: bool = False  # "/leave" answered


class ChatClients(Misbehaver):
    """``clients`` chat clients in ``rooms`` rooms, one thread, one selector.

    Each joins its room (``/join ROOM``, answered ``joined #ROOM``); when all have
    joined, each sends ``/say NAME SEQ SENT_NS`` every ``interval`` seconds (uniform
    at random between the two bounds) for ``seconds``, while reading the
    broadcasts ``[ROOM] NAME SEQ SENT_NS`` of the others. Every message must reach
    every other member of its room, in order per sender: ``delivered`` counts
    those that came in order, ``out_of_order`` the others, ``unexpected`` lines that
    are no broadcast of a room-mate. After ``seconds`` it waits up to ``drain``
    seconds for the last deliveries, then each client sends ``/leave`` (answered
    ``left #ROOM``) and closes.
    """

    def __init__(
        self, host: str, port: int, seconds: float, *, clients: int = 10, rooms: int = 2,
        interval: tuple[float, float] = (0.05, 0.1), drain: float = 3.0, seed: int = 1,
    ):  # fmt: skip
        super().__init__(host, port, seconds)
        self.clients, self.rooms, self.interval, self.drain = clients, rooms, interval, drain
        self.random = random.Random(seed)
        self.sent = 0
        self.expected = 0  # deliveries due: each message times the other members of its room
        self.delivered = 0
        self.out_of_order = 0
        self.unexpected = 0
        self.last_unexpected: str | None = None
        self.latencies: list[float] = []  # seconds from /say to each delivery
        self.joined_s: float | None = None  # when every client had joined, after the start
        self.left = 0  # clients whose /leave was answered
        self._room_of: dict[str, str] = {}  # client name -> its room

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.delivered - self.out_of_order)

    def run(self) -> None:
        started = time.monotonic()
        members: list[_Member] = []
        sel = selectors.DefaultSelector()
        try:
            for i in range(self.clients):
                sock = socket.create_connection((self.host, self.port), timeout=5.0)
                member = _Member(f"chat{i}", f"room{i % self.rooms}", sock)
                members.append(member)
                self._room_of[member.name] = member.room
                sel.register(sock, selectors.EVENT_READ, member)
                sock.sendall(f"/join {member.room}\n".encode())
            self._await(sel, lambda: all(m.joined for m in members), 10.0, "/join")
            self.joined_s = time.monotonic() - started
            self._talk(sel, members, started + self.seconds)
            # What is still missing after the drain is counted, not an error.
            with contextlib.suppress(TimeoutError):
                self._await(sel, lambda: self.delivered + self.out_of_order >= self.expected,
                            self.drain, "/say")  # fmt: skip
            for member in members:
                member.sock.sendall(b"/leave\n")
            self._await(sel, lambda: all(m.left for m in members), 5.0, "/leave")
        except (OSError, ConnectionError, TimeoutError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            sel.close()
            close_all([m.sock for m in members])

    def _talk(self, sel: selectors.BaseSelector, members: list[_Member], end: float) -> None:
        rooms: dict[str, list[_Member]] = {}
        for member in members:
            rooms.setdefault(member.room, []).append(member)
        now = time.monotonic()
        for member in members:
            member.next_send = now + self.random.uniform(0, self.interval[1])
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now >= end:
                return
            for member in members:
                if member.next_send <= now:
                    text = f"/say {member.name} {member.sent} {time.monotonic_ns()}\n"
                    member.sock.sendall(text.encode())
                    member.sent += 1
                    self.sent += 1
                    self.expected += len(rooms[member.room]) - 1
                    member.next_send = now + self.random.uniform(*self.interval)
            wake = min(min(m.next_send for m in members), end)
            self._read(sel, max(0.0, wake - time.monotonic()))

    def _await(
        self, sel: selectors.BaseSelector, done: Callable[[], bool], seconds: float, what: str
    ) -> None:
        """Read until ``done()``; TimeoutError after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chat clients: {what} not all answered in {seconds:g} s")
            self._read(sel, min(left, 0.5))

    def _read(self, sel: selectors.BaseSelector, timeout: float) -> None:
        for key, _ in sel.select(timeout):
            member: _Member = key.data
            chunk = member.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{member.name}: closed by the server")
            member.pending += chunk
            *lines, member.pending = member.pending.split(b"\n")
            for line in lines:
                self._line(member, line.decode(errors="replace").rstrip("\r"))

    def _line(self, member: _Member, line: str) -> None:
        if line == f"joined #{member.room}" and not member.joined:
            member.joined = True
            return
        if line == f"left #{member.room}" and member.joined and not member.left:
            member.left = True
            self.left += 1
            return
        parts = line.split(" ")
        if (
            len(parts) != 4
            or parts[0] != f"[{member.room}]"
            or parts[1] == member.name
            or self._room_of.get(parts[1]) != member.room
            or not (parts[2].isdigit() and parts[3].isdigit())
        ):
            self.unexpected += 1
            self.last_unexpected = f"{member.name} (#{member.room}) got {line[:80]!r}"
            return
        sender, seq = parts[1], int(parts[2])
        if seq == member.expect.get(sender, 0):
            self.delivered += 1
        else:
            self.out_of_order += 1
        member.expect[sender] = seq + 1
        self.latencies.append((time.monotonic_ns() - int(parts[3])) / 1e9)
