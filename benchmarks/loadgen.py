"""The load generator: the C client (preferred) or its pure-Python fallback.

Both take the same arguments and print the same one-line JSON result (see
``loadgen.c`` for the protocol of each mode)::

    loadgen throughput HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S
    loadgen latency HOST PORT CONNECTIONS LINE_BYTES WARMUP_S MEASURE_S [--tolerant] [--samples F]
    loadgen churn HOST PORT CONCURRENCY LINE_BYTES WARMUP_S MEASURE_S [--tolerant]
    loadgen stream HOST PORT CONNECTIONS DEPTH LINE_BYTES WARMUP_S MEASURE_S

The C client is compiled on first use with ``cc -O2`` into a cache directory, under
a name derived from the source's hash. Without a working C compiler the fallback
runs as ``python -m benchmarks.pyloadgen``; it is far slower and may well be the
bottleneck, which the report says.

:func:`start` runs the client as a subprocess (so it can sit on its own CPU);
:meth:`Client.finish` waits for it and measures its CPU share: user + system CPU
seconds over wall seconds of the whole process, from ``wait4``. A share close to
100% means the client, not the server, may be what limits the figure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from .machine import REPO_ROOT

__all__ = ["Client", "LoadResult", "Loadgen", "prepare", "run", "start"]

SOURCE = Path(__file__).resolve().parent / "loadgen.c"
#: Above this CPU share the report warns that the client may be the bottleneck.
CPU_SHARE_WARNING = 0.90
#: Seconds allowed beyond warm-up + measurement (connects, drain, start-up).
RUN_SLACK = 30.0

Kind = Literal["c", "python"]
Mode = Literal["throughput", "latency", "churn", "stream"]


@dataclass(frozen=True)
class Loadgen:
    """A ready-to-run load generator."""

    kind: Kind
    argv: tuple[str, ...]  # the command, before the mode and its arguments
    note: str  # how it was built, or why the fallback runs

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "command": list(self.argv), "note": self.note}


@dataclass(frozen=True)
class LoadResult:
    """What one load generator run measured."""

    lines: int  # units completed inside the window: lines echoed, or connections
    window_s: float  # the measuring window's length, by the client's clock
    error: str | None  # why the run failed, or None
    cpu_s: float  # user + system CPU seconds of the whole client process
    wall_s: float  # wall seconds of the whole client process
    window_cpu_s: float  # the client's CPU seconds inside the window (its own count)
    raw: dict[str, Any]  # the client's JSON, as printed
    failures: dict[str, int] = field(default_factory=dict)  # per-connection failures

    @property
    def rate(self) -> float:
        """Units (lines, connections) per second."""
        return self.lines / self.window_s if self.window_s > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def window_cpu_share(self) -> float:
        return self.window_cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def failure_count(self) -> int:
        return sum(self.failures.values())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            rate=self.rate, cpu_share=self.cpu_share, window_cpu_share=self.window_cpu_share
        )
        return data


# -- preparing -----------------------------------------------------------------------


def _python_fallback(note: str) -> Loadgen:
    return Loadgen("python", (sys.executable, "-m", "benchmarks.pyloadgen"), note)


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


class Client:
    """A running load generator. Use as a context manager: it is always reaped.

    :meth:`end_window` ends the measuring window early (SIGUSR1); :meth:`finish`
    waits for the result. Leaving the ``with`` block without :meth:`finish`
    kills the client, by PID.
    """

    def __init__(self, argv: list[str], budget: float):
        self.argv = argv
        self.deadline = time.monotonic() + budget
        # Closed by finish() or __exit__ (the object is the context manager).
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err,
            cwd=REPO_ROOT, bufsize=0,
        )  # fmt: skip

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._err.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def end_window(self) -> None:
        """Ask the client to end its measuring window now (then it drains and exits)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)

    def finish(self) -> LoadResult:
        """Wait (bounded by the budget) for the client's result."""
        try:
            out = _read_until_eof(self.proc, self.deadline)
            status, usage = _reap(self.proc, self.deadline)
        finally:
            self.close()
        wall = time.monotonic() - self.started
        self._err.seek(0)
        stderr = self._err.read().decode(errors="replace").strip()
        self._err.close()
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
            failures={k: int(v) for k, v in (raw.get("failures") or {}).items()},
        )

    def close(self) -> None:
        """Kill the client if it still runs (by PID) and close its stdout. Idempotent."""
        proc = self.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()


def start(
    loadgen: Loadgen,
    mode: Mode,
    host: str,
    port: int,
    *,
    connections: int,
    line_bytes: int,
    warmup: float,
    seconds: float,
    lines: int = 1,
    tolerant: bool = False,
    samples: Path | None = None,
) -> Client:
    """Start the client in ``mode`` against ``host:port``; see ``loadgen.c``.

    ``lines`` is the batch (throughput) or the window: lines in flight per connection
    (stream). The client is killed if it has not finished within
    ``warmup + seconds + RUN_SLACK`` seconds.
    """
    argv = [*loadgen.argv, mode, host, str(port), str(connections)]
    if mode in ("throughput", "stream"):
        argv.append(str(lines))
    argv += [str(line_bytes), f"{warmup:g}", f"{seconds:g}"]
    if tolerant:
        argv.append("--tolerant")
    if samples is not None:
        argv += ["--samples", str(samples)]
    return Client(argv, warmup + seconds + RUN_SLACK)


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
    mode: Mode = "throughput",
) -> LoadResult:
    """Run the client once, to the end of its window, and return what it measured."""
    with start(
        loadgen, mode, host, port, connections=connections, lines=lines,
        line_bytes=line_bytes, warmup=warmup, seconds=seconds,
    ) as client:  # fmt: skip
        return client.finish()


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
