"""The load generator: the C client (preferred) or its pure-Python fallback.

Both take the same arguments and print the same one-line JSON result::

    loadgen HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S

See ``loadgen.c`` for the protocol. The C client is compiled on first use with
``cc -O2`` into a cache directory, under a name derived from the source's hash.
Without a working C compiler the fallback runs as ``python -m benchmarks.loadgen``;
it is far slower and may well be the bottleneck, which the report says.

:func:`run` starts the client as a subprocess (so it can sit on its own CPU) and
measures its CPU share: user + system CPU seconds over wall seconds of the whole
process, from ``wait4``. A share close to 100% means the client, not the server,
may be what limits the figure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .machine import REPO_ROOT

__all__ = ["LoadResult", "Loadgen", "main", "prepare", "run"]

SOURCE = Path(__file__).resolve().parent / "loadgen.c"
#: Above this CPU share the report warns that the client may be the bottleneck.
CPU_SHARE_WARNING = 0.90
#: Seconds allowed beyond warm-up + measurement (connects, drain, start-up).
RUN_SLACK = 30.0

Kind = Literal["c", "python"]


@dataclass(frozen=True)
class Loadgen:
    """A ready-to-run load generator."""

    kind: Kind
    argv: tuple[str, ...]  # the command, before the scenario's arguments
    note: str  # how it was built, or why the fallback runs

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "command": list(self.argv), "note": self.note}


@dataclass(frozen=True)
class LoadResult:
    """What one load generator run measured."""

    lines: int  # lines echoed inside the measuring window
    window_s: float  # the measuring window's length, by the client's clock
    error: str | None  # why the run failed, or None
    cpu_s: float  # user + system CPU seconds of the whole client process
    wall_s: float  # wall seconds of the whole client process
    window_cpu_s: float  # the client's CPU seconds inside the window (its own count)
    raw: dict[str, Any]  # the client's JSON, as printed

    @property
    def rate(self) -> float:
        """Echoed lines per second."""
        return self.lines / self.window_s if self.window_s > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def window_cpu_share(self) -> float:
        return self.window_cpu_s / self.window_s if self.window_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            rate=self.rate, cpu_share=self.cpu_share, window_cpu_share=self.window_cpu_share
        )
        return data


# -- preparing -----------------------------------------------------------------------


def _python_fallback(note: str) -> Loadgen:
    return Loadgen("python", (sys.executable, "-m", "benchmarks.loadgen"), note)


def prepare(cache_dir: Path, prefer: str = "auto") -> Loadgen:
    """Compile the C client into ``cache_dir`` (once per source version), or fall back.

    Args:
        prefer: ``"auto"`` (C if it compiles), ``"c"`` (C or raise), ``"python"``.

    Raises:
        RuntimeError: ``prefer="c"`` and the C client cannot be built.
    """
    if prefer == "python":
        return _python_fallback("pure-Python fallback chosen with --loadgen python")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    problem: str
    if compiler is None:
        problem = "no C compiler (cc) found"
    else:
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
        binary = _writable(cache_dir) / f"loadgen-{digest}"
        if binary.exists():
            return Loadgen("c", (str(binary),), f"C client {binary.name}, cached")
        problem = _compile(compiler, binary)
        if not problem:
            return Loadgen("c", (str(binary),), f"C client compiled with `{compiler} -O2`")
    if prefer == "c":
        raise RuntimeError(f"cannot build the C load generator: {problem}")
    return _python_fallback(f"pure-Python fallback: {problem}")


def _writable(cache_dir: Path) -> Path:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir):
            pass  # can we write there?
        return cache_dir
    except OSError:
        fallback = Path(tempfile.gettempdir()) / "statemachine-server-benchmarks"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _compile(compiler: str, binary: Path) -> str:
    """Build ``binary``; returns "" on success, else what went wrong."""
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    try:
        done = subprocess.run(
            [compiler, "-O2", "-o", str(partial), str(SOURCE)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{compiler} failed to run: {exc}"
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        return f"{compiler} -O2 failed: {first}"
    os.replace(partial, binary)  # atomic: a concurrent run never sees half a binary
    return ""


# -- running -------------------------------------------------------------------------


def run(
    loadgen: Loadgen,
    host: str,
    port: int,
    *,
    connections: int,
    lines: int,
    line_bytes: int,
    warmup: float,
    seconds: float,
) -> LoadResult:
    """Run the client once against ``host:port`` and return what it measured.

    Bounded: the client is killed (by PID) if it has not finished within
    ``warmup + seconds + RUN_SLACK`` seconds.
    """
    args = [host, str(port), str(connections), str(lines), str(line_bytes)]
    argv = [*loadgen.argv, *args, f"{warmup:g}", f"{seconds:g}"]
    deadline = time.monotonic() + warmup + seconds + RUN_SLACK
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            cwd=REPO_ROOT, bufsize=0,
        )  # fmt: skip
        try:
            out = _read_until_eof(proc, deadline)
            status, usage = _reap(proc, deadline)
        finally:
            if proc.returncode is None:  # timed out or interrupted: kill it, by PID
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        wall = time.monotonic() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
    cpu = usage.ru_utime + usage.ru_stime
    try:
        raw: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raw = {}
    error = raw.get("error") if raw else f"no result (exit status {status}): {stderr[:300]}"
    if error is None and status != 0:
        error = f"exit status {status}"
    return LoadResult(
        lines=int(raw.get("lines", 0)),
        window_s=float(raw.get("window_s", 0.0)),
        error=error,
        cpu_s=cpu,
        wall_s=wall,
        window_cpu_s=float(raw.get("window_cpu_s", 0.0)),
        raw=raw,
    )


def _read_until_eof(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the load generator did not finish in time")
            if sel.select(min(left, 1.0)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    return bytes(out)
                out += chunk
                if len(out) > 1 << 20:
                    raise RuntimeError("the load generator printed more than 1 MiB")


def _reap(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, resource.struct_rusage]:
    """Wait for the client with ``wait4`` (for its CPU times); bounded by ``deadline``."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen won't wait again
            return proc.returncode, usage
        if time.monotonic() > deadline:
            raise TimeoutError("the load generator did not exit in time")
        time.sleep(0.01)


# -- the pure-Python fallback --------------------------------------------------------

STALL_S = 5.0
DRAIN_S = 2.0
HARD_EXTRA_S = 15.0


def make_batch(lines: int, line_bytes: int) -> bytes:
    """The batch every connection sends: the same bytes as loadgen.c's ``make_batch``."""
    return b"".join(
        bytes(97 + (i + j) % 26 for j in range(line_bytes - 1)) + b"\n" for i in range(lines)
    )


def _match(batch: bytes, rx: int, data: bytes) -> int:
    """Match ``data`` against ``batch`` from offset ``rx``; returns the new offset.

    A ``\\r`` before an expected ``\\n`` is accepted. Raises ValueError on a mismatch.
    """
    if batch.startswith(data, rx):  # fast path: exactly what comes next
        return rx + len(data)
    for byte in data:
        if rx == len(batch):
            raise ValueError("received bytes that were never sent")
        if byte == batch[rx]:
            rx += 1
        elif not (byte == 13 and batch[rx] == 10):
            raise ValueError("echo differs from what was sent")
    return rx


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _generate(
    host: str, port: int, nconn: int, lines: int, line_bytes: int, warmup: float, measure: float
) -> dict[str, Any]:
    batch = make_batch(lines, line_bytes)
    socks: list[socket.socket] = []
    tx = [0] * nconn  # bytes of the batch written, per connection
    rx = [0] * nconn  # bytes of the batch echoed, per connection
    error: str | None = None
    counted = 0
    window_start = window_end = cpu_start = cpu_end = 0.0
    sel = selectors.DefaultSelector()

    def send_rest(i: int) -> None:
        sock = socks[i]
        try:
            while tx[i] < len(batch):
                tx[i] += sock.send(batch[tx[i] :])
        except BlockingIOError:
            pass
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if tx[i] < len(batch) else 0)
        sel.modify(sock, want, i)

    try:
        for i in range(nconn):
            sock = socket.create_connection((host, port), timeout=5.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            socks.append(sock)
            sel.register(sock, selectors.EVENT_READ, i)
        t0 = time.monotonic()
        warm_end, measure_end = t0 + warmup, t0 + warmup + measure
        hard_deadline = measure_end + HARD_EXTRA_S
        last_progress = t0
        drain_deadline = 0.0
        phase = 0  # 0 warm-up, 1 measuring, 2 draining
        for i in range(nconn):
            send_rest(i)
        in_flight = nconn
        while True:
            now = time.monotonic()
            if phase == 0 and now >= warm_end:
                phase, window_start, cpu_start = 1, now, _cpu()
            if phase == 1 and now >= measure_end:
                phase, window_end, cpu_end = 2, now, _cpu()
                drain_deadline = now + DRAIN_S
            if phase == 2 and (in_flight == 0 or now >= drain_deadline):
                break
            if now - last_progress > STALL_S:
                raise TimeoutError(f"{in_flight} connections: no echo for 5 s")
            if now >= hard_deadline:
                raise TimeoutError("hard deadline passed")
            for key, events in sel.select(0.1):
                i = key.data
                if events & selectors.EVENT_WRITE:
                    send_rest(i)
                if not events & selectors.EVENT_READ:
                    continue
                try:
                    data = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError(f"connection {i}: closed by the server")
                last_progress = now
                rx[i] = _match(batch, rx[i], data)
                if rx[i] == len(batch):
                    in_flight -= 1
                    if phase == 1:
                        counted += 1
                    if phase < 2:
                        tx[i] = rx[i] = 0
                        send_rest(i)
                        in_flight += 1
    except (OSError, ValueError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if window_end == 0.0:
            window_end, cpu_end = time.monotonic(), _cpu()
            window_start = window_start or window_end
    finally:
        for sock in socks:
            sock.close()
        sel.close()
    return {
        "impl": "python",
        "connections": nconn,
        "opened": len(socks),
        "lines_per_batch": lines,
        "line_bytes": line_bytes,
        "warmup_s": warmup,
        "window_s": window_end - window_start,
        "lines": counted * lines,
        "window_cpu_s": cpu_end - cpu_start,
        "error": error,
    }


def main(argv: list[str]) -> int:
    """``python -m benchmarks.loadgen HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S``"""
    if len(argv) != 7:
        print(main.__doc__, file=sys.stderr)
        return 2
    host, port, nconn, lines, line_bytes = argv[0], *map(int, argv[1:5])
    warmup, measure = float(argv[5]), float(argv[6])
    result = _generate(host, port, nconn, lines, line_bytes, warmup, measure)
    print(json.dumps(result), flush=True)
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
