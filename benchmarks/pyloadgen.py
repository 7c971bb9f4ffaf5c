"""The pure-Python fallback of ``loadgen.c``: same arguments, same behaviour, same JSON.

Used only when no C compiler is available (or with ``--loadgen python``). It is far
slower than the C client, so it may be the bottleneck: the report says so, and
each run records the client's CPU share.

``python -m benchmarks.pyloadgen MODE HOST PORT ...``: see ``loadgen.c``.
"""

from __future__ import annotations

import array
import errno
import json
import resource
import selectors
import signal
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["main", "make_batch", "make_line", "percentiles"]

STALL_S = 5.0
DRAIN_S = 2.0
HARD_EXTRA_S = 15.0
CONN_TIMEOUT_S = 5.0
RETRY_S = 0.1
PATTERNS = 26
FAILURE_KINDS = ("connect", "closed", "mismatch", "timeout", "io")


def make_line(k: int, line_bytes: int) -> bytes:
    """Line ``k``: the same bytes as loadgen.c's ``make_line``."""
    return bytes(97 + (k + j) % 26 for j in range(line_bytes - 1)) + b"\n"


def make_batch(lines: int, line_bytes: int) -> bytes:
    """The throughput batch: lines 0 to ``lines - 1``, as loadgen.c builds it."""
    return b"".join(make_line(i, line_bytes) for i in range(lines))


def _match(expected: bytes, rx: int, data: bytes) -> int:
    """Match ``data`` against ``expected`` from ``rx``; the new offset, or -1 on a mismatch.

    A ``\\r`` before an expected ``\\n`` is accepted.
    """
    if expected.startswith(data, rx):  # fast path
        return rx + len(data)
    for byte in data:
        if rx == len(expected):
            return -1
        if byte == expected[rx]:
            rx += 1
        elif not (byte == 13 and expected[rx] == 10):
            return -1
    return rx


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stop(Exception):
    """The run's fatal error."""


@dataclass
class Run:
    """Phases, failures and the clock of one run (loadgen.c's ``struct phases``)."""

    warmup: float
    measure: float
    tolerant: bool
    phase: int = 0  # 0 warm-up, 1 measuring, 2 draining
    window_start: float = 0.0
    window_end: float = 0.0
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    drain_deadline: float = 0.0
    last_progress: float = 0.0
    max_gap: float = 0.0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    last_failure: str | None = None
    stop_requested: bool = False

    def __post_init__(self) -> None:
        now = time.monotonic()
        self.warm_end = now + self.warmup
        self.measure_end = self.warm_end + self.measure
        self.hard_deadline = self.measure_end + HARD_EXTRA_S
        self.last_progress = now

    def update(self, now: float) -> None:
        if self.phase == 0 and (now >= self.warm_end or self.stop_requested):
            self.phase, self.window_start, self.cpu_start = 1, now, _cpu()
        if self.phase == 1 and (now >= self.measure_end or self.stop_requested):
            self.phase, self.window_end, self.cpu_end = 2, now, _cpu()
            self.drain_deadline = now + DRAIN_S
            self.hard_deadline = min(self.hard_deadline, now + DRAIN_S + 1)
        self.max_gap = max(self.max_gap, now - self.last_progress)
        if not self.tolerant and now - self.last_progress > STALL_S:
            raise Stop("no progress for 5 s (server stalled or lost data)")
        if now >= self.hard_deadline:
            raise Stop("hard deadline passed")

    def failed(self, kind: str, index: int, what: str) -> None:
        self.failures[kind] += 1
        self.last_failure = f"connection {index}: {what}"
        if not self.tolerant:
            raise Stop(self.last_failure)

    def finish(self) -> None:
        if self.phase < 2:
            self.window_end, self.cpu_end = time.monotonic(), _cpu()
            if self.phase == 0:
                self.window_start = self.window_end

    def tail(self, counted: int, error: str | None) -> dict[str, Any]:
        return {
            "warmup_s": self.warmup,
            "window_s": self.window_end - self.window_start,
            "lines": counted,
            "window_cpu_s": self.cpu_end - self.cpu_start,
            "max_gap_s": self.max_gap,
            "failures": self.failures,
            "last_failure": self.last_failure,
            "tolerant": self.tolerant,
            "error": error,
        }


def percentiles(values: list[float]) -> dict[str, float] | None:
    """Nearest-rank percentiles in microseconds, as loadgen.c prints them."""
    if not values:
        return None
    values.sort()
    n = len(values)

    def rank(p: float) -> float:
        return values[min(n, max(1, int(p * n + 0.999999999))) - 1]

    return {
        "p50": rank(0.50) * 1e6,
        "p90": rank(0.90) * 1e6,
        "p99": rank(0.99) * 1e6,
        "p999": rank(0.999) * 1e6,
        "max": values[-1] * 1e6,
        "mean": statistics.fmean(values) * 1e6,
    }


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


@dataclass
class Conn:
    """One connection's progress through its current line (or batch)."""

    sock: socket.socket | None
    expected: bytes
    tx: int = 0
    rx: int = 0
    busy: bool = False
    sent: float = 0.0
    retry_at: float = 0.0


def _send_rest(sel: selectors.BaseSelector, c: Conn, index: int) -> None:
    assert c.sock is not None
    try:
        while c.tx < len(c.expected):
            c.tx += c.sock.send(c.expected[c.tx :])
    except BlockingIOError:
        pass
    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.tx < len(c.expected) else 0)
    sel.modify(c.sock, want, index)


def _pump(
    run: Run, host: str, port: int, conns: list[Conn], on_done: Any, *, reconnect: bool
) -> None:
    """Drive connections that each echo ``expected`` over and over (throughput, latency)."""
    sel = selectors.DefaultSelector()
    in_flight = 0

    def begin(i: int) -> None:
        nonlocal in_flight
        c = conns[i]
        c.tx = c.rx = 0
        c.busy, c.sent = True, time.monotonic()
        in_flight += 1
        _send_rest(sel, c, i)

    def drop(i: int, kind: str, what: str) -> None:
        nonlocal in_flight
        c = conns[i]
        if c.sock is not None:
            sel.unregister(c.sock)
            c.sock.close()
        c.sock = None
        if c.busy:
            in_flight -= 1
        c.busy, c.retry_at = False, time.monotonic() + RETRY_S
        run.failed(kind, i, what)

    def open_(i: int) -> bool:
        try:
            conns[i].sock = _connect(host, port)
        except OSError as exc:
            conns[i].retry_at = time.monotonic() + RETRY_S
            run.failed("connect", i, f"connect: {exc}")
            return False
        sel.register(conns[i].sock, selectors.EVENT_READ, i)  # type: ignore[arg-type]
        return True

    try:
        for i in range(len(conns)):
            open_(i)
        for i, c in enumerate(conns):
            if c.sock is not None:
                begin(i)
        while True:
            now = time.monotonic()
            run.update(now)
            if run.phase == 2 and (in_flight == 0 or now >= run.drain_deadline):
                return
            if reconnect and run.phase < 2:
                for i, c in enumerate(conns):
                    if c.sock is None and now >= c.retry_at and open_(i):
                        begin(i)
            for key, events in sel.select(0.1):
                i = key.data
                c = conns[i]
                if c.sock is None:
                    continue
                if events & selectors.EVENT_WRITE:
                    _send_rest(sel, c, i)
                if not events & selectors.EVENT_READ:
                    continue
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    drop(i, "io", str(exc))
                    continue
                if not data:
                    drop(i, "closed", "closed by the server")
                    continue
                received = time.monotonic()
                run.last_progress = received
                c.rx = _match(c.expected, c.rx, data)
                if c.rx < 0:
                    drop(i, "mismatch", "echo differs from what was sent")
                elif c.rx == len(c.expected):
                    c.busy = False
                    in_flight -= 1
                    on_done(c.sent, received)
                    if run.phase < 2:
                        begin(i)
    finally:
        for c in conns:
            if c.sock is not None:
                c.sock.close()
        sel.close()


def _throughput(run: Run, host: str, port: int, nconn: int, lines: int, lb: int) -> dict[str, Any]:
    batch = make_batch(lines, lb)
    conns = [Conn(None, batch) for _ in range(nconn)]
    counted = 0

    def done(sent: float, received: float) -> None:
        nonlocal counted
        if run.phase == 1:
            counted += 1

    error = _guarded(run, lambda: _pump(run, host, port, conns, done, reconnect=False))
    return {
        "mode": "throughput",
        "connections": nconn,
        "lines_per_batch": lines,
        "line_bytes": lb,
        **run.tail(counted * lines, error),
    }


def _latency(
    run: Run, host: str, port: int, nconn: int, lb: int, samples_path: str | None
) -> dict[str, Any]:
    conns = [Conn(None, make_line(i % PATTERNS, lb)) for i in range(nconn)]
    samples = array.array("d")
    window: list[float] = []

    def done(sent: float, received: float) -> None:
        samples.extend((sent, received - sent))
        if run.phase == 1:
            window.append(received - sent)

    error = _guarded(run, lambda: _pump(run, host, port, conns, done, reconnect=run.tolerant))
    if samples_path is not None:
        with open(samples_path, "wb") as out:
            samples.tofile(out)
    return {
        "mode": "latency",
        "connections": nconn,
        "line_bytes": lb,
        "samples_total": len(samples) // 2,
        "latency_us": percentiles(window),
        **run.tail(len(window), error),
    }


def _churn(run: Run, host: str, port: int, slots: int, lb: int) -> dict[str, Any]:
    lines = [make_line(i % PATTERNS, lb) for i in range(slots)]
    socks: list[socket.socket | None] = [None] * slots
    state = [Conn(None, lines[i]) for i in range(slots)]
    sel = selectors.DefaultSelector()
    times: list[float] = []
    completed = 0

    def drop(i: int) -> None:
        sock = socks[i]
        if sock is not None:
            sel.unregister(sock)
            sock.close()
        socks[i] = None

    def begin(i: int) -> None:
        c = state[i]
        c.tx = c.rx = 0
        c.sent = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            run.failed("connect", i, f"connect: {errno.errorcode.get(code, code)}")
            return
        socks[i] = sock
        c.busy = False  # False while connecting
        sel.register(sock, selectors.EVENT_WRITE, i)

    def step(i: int, events: int) -> None:
        nonlocal completed
        sock, c = socks[i], state[i]
        assert sock is not None
        if not c.busy:  # connecting
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                drop(i)
                run.failed("connect", i, f"connect: {errno.errorcode.get(code, code)}")
                return
            c.busy, c.sock = True, sock
        if events & selectors.EVENT_WRITE:
            c.sock = sock
            _send_rest(sel, c, i)
        if not events & selectors.EVENT_READ:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            drop(i)
            run.failed("io", i, str(exc))
            return
        if not data:
            drop(i)
            run.failed("closed", i, "closed by the server before the echo")
            return
        c.rx = _match(c.expected, c.rx, data)
        if c.rx < 0:
            drop(i)
            run.failed("mismatch", i, "echo differs from what was sent")
        elif c.rx == len(c.expected):
            finished = time.monotonic()
            run.last_progress = finished
            completed += 1
            if run.phase == 1:
                times.append(finished - c.sent)
            drop(i)

    def loop() -> None:
        while True:
            now = time.monotonic()
            run.update(now)
            for i in range(slots):
                if socks[i] is not None and now - state[i].sent > CONN_TIMEOUT_S:
                    drop(i)
                    run.failed("timeout", i, "no echo in 5 s")
                if socks[i] is None and run.phase < 2:
                    begin(i)
            active = sum(s is not None for s in socks)
            if run.phase == 2 and (active == 0 or now >= run.drain_deadline):
                return
            for key, events in sel.select(0.1):
                step(key.data, events)

    try:
        error = _guarded(run, loop)
    finally:
        for i in range(slots):
            drop(i)
        sel.close()
    return {
        "mode": "churn",
        "connections": slots,
        "line_bytes": lb,
        "completed_total": completed,
        "connection_us": percentiles(times),
        **run.tail(len(times), error),
    }


def _match_repeated(line: bytes, rx: int, data: bytes) -> tuple[int, int]:
    """Match ``data`` against ``line`` repeated, from ``rx``: (lines completed, new rx).

    A ``\\r`` before an expected ``\\n`` is accepted; lines completed is -1 on a mismatch.
    """
    size = len(line)
    done = i = 0
    while i < len(data):
        k = min(len(data) - i, size - rx)
        if data[i : i + k] == line[rx : rx + k]:  # fast path
            rx += k
            i += k
        elif data[i] == line[rx]:
            rx += 1
            i += 1
        elif data[i] == 13 and line[rx] == 10:
            i += 1
        else:
            return -1, rx
        if rx == size:
            rx = 0
            done += 1
    return done, rx


@dataclass
class StreamConn:
    """One connection of the stream mode: DEPTH lines in flight (loadgen.c's ``sconn``)."""

    sock: socket.socket
    line: bytes
    rep: bytes  # depth + 1 copies of the line
    rx: int = 0
    tx_off: int = 0
    pending: int = 0
    queued: int = 0
    echoed: int = 0
    want_out: bool = False
    sent: list[float] = field(default_factory=list)


def _stream(run: Run, host: str, port: int, nconn: int, depth: int, lb: int) -> dict[str, Any]:
    sel = selectors.DefaultSelector()
    conns: list[StreamConn] = []
    times: list[float] = []
    counted = recvs = in_flight = 0

    def flush(i: int) -> None:
        c = conns[i]
        try:
            while c.pending:
                n = c.sock.send(c.rep[c.tx_off : c.tx_off + c.pending])
                c.pending -= n
                c.tx_off = (c.tx_off + n) % lb
        except BlockingIOError:
            pass
        want = c.pending > 0
        if want != c.want_out:
            sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), i)
            c.want_out = want

    def queue(i: int, k: int, now: float) -> None:
        nonlocal in_flight
        c = conns[i]
        for j in range(k):
            c.sent[(c.queued + j) % depth] = now
        c.queued += k
        c.pending += k * lb
        in_flight += k
        flush(i)

    def loop() -> None:
        nonlocal counted, recvs, in_flight
        for i in range(nconn):
            try:
                sock = _connect(host, port)
            except OSError as exc:
                raise Stop(f"connection {i}: connect: {exc}") from exc
            line = make_line(i % PATTERNS, lb)
            conns.append(StreamConn(sock, line, line * (depth + 1), sent=[0.0] * depth))
            sel.register(sock, selectors.EVENT_READ, i)
        for i in range(nconn):
            queue(i, depth, time.monotonic())
        while True:
            now = time.monotonic()
            run.update(now)
            if run.phase == 2 and (in_flight == 0 or now >= run.drain_deadline):
                return
            for key, events in sel.select(0.1):
                i = key.data
                c = conns[i]
                if events & selectors.EVENT_WRITE:
                    flush(i)
                if not events & selectors.EVENT_READ:
                    continue
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise Stop(f"connection {i}: closed by the server")
                received = time.monotonic()
                run.last_progress = received
                if run.phase == 1:
                    recvs += 1
                done, c.rx = _match_repeated(c.line, c.rx, data)
                written = c.queued * lb - c.pending
                if done < 0 or (c.echoed + done) * lb + c.rx > written:
                    raise Stop(f"connection {i}: echo differs from what was sent")
                for _ in range(done):
                    rtt = received - c.sent[c.echoed % depth]
                    c.echoed += 1
                    in_flight -= 1
                    if run.phase == 1:
                        counted += 1
                        times.append(rtt)
                if done and run.phase < 2:
                    queue(i, done, received)

    try:
        error = _guarded(run, loop)
    finally:
        for c in conns:
            c.sock.close()
        sel.close()
    return {
        "mode": "stream",
        "connections": nconn,
        "opened": len(conns),
        "depth": depth,
        "line_bytes": lb,
        "recvs": recvs,
        "unfinished_lines": in_flight,
        "latency_us": percentiles(times),
        **run.tail(counted, error),
    }


def _guarded(run: Run, body: Any) -> str | None:
    """Run ``body``; its fatal error (or None). The window is closed either way."""
    error: str | None = None
    try:
        body()
    except Stop as exc:
        error = str(exc)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    run.finish()
    return error


def main(argv: list[str]) -> int:
    """``python -m benchmarks.pyloadgen [MODE] HOST PORT ...``: see loadgen.c."""
    mode = "throughput"
    if argv and argv[0] in ("throughput", "latency", "churn", "stream"):
        mode, argv = argv[0], argv[1:]
    positional = 7 if mode in ("throughput", "stream") else 6
    tolerant = "--tolerant" in argv[positional:]
    samples_path: str | None = None
    rest = [a for a in argv[positional:] if a != "--tolerant" or mode == "stream"]
    if rest[:1] == ["--samples"] and len(rest) == 2 and mode == "latency":
        samples_path = rest[1]
    elif rest or len(argv) < positional:
        print(main.__doc__, file=sys.stderr)
        return 2
    host, port, nconn = argv[0], int(argv[1]), int(argv[2])
    warmup, measure = float(argv[positional - 2]), float(argv[positional - 1])
    run = Run(warmup, measure, tolerant)

    def on_usr1(signum: int, frame: object) -> None:
        run.stop_requested = True

    signal.signal(signal.SIGUSR1, on_usr1)
    if mode == "throughput":
        result = _throughput(run, host, port, nconn, int(argv[3]), int(argv[4]))
    elif mode == "stream":
        result = _stream(run, host, port, nconn, int(argv[3]), int(argv[4]))
    elif mode == "latency":
        result = _latency(run, host, port, nconn, int(argv[3]), samples_path)
    else:
        result = _churn(run, host, port, nconn, int(argv[3]))
    print(json.dumps({"impl": "python", **result}), flush=True)
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
