"""Small Python clients the harness runs itself: idle holders, a job client, misbehavers.

These need no speed, only control: they run in the harness process (pinned to the
load generator's CPU). Every one of them is bounded in time, closes its sockets in
``finally``, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time

from .pyloadgen import make_line

__all__ = ["Flooder", "JobClient", "Slowloris", "open_idle", "raise_nofile"]

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
