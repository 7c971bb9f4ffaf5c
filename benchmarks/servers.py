"""The peers: which servers are compared, and how each is started and stopped.

Every peer is a line-echo server run in its own subprocess, listening on
127.0.0.1 with port 0. It announces itself with one ``listening on HOST:PORT``
line on stdout; after that line the harness keeps reading the child's stdout in a
thread and throws it away, so servers that log each client line really write
their log (to a pipe that behaves like ``/dev/null``). stderr goes to a file per
peer under ``<out>/logs/`` for post-mortems.

Servers are stopped by PID: SIGTERM, then SIGKILL if the server has not exited
within a grace period. :func:`serve` guarantees that, whatever happens inside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .machine import REPO_ROOT, pinned

__all__ = [
    "BASELINE",
    "EXTRA_PEERS",
    "PEERS",
    "Peer",
    "RunningServer",
    "ServerError",
    "jobs_peer",
    "memcache_peers",
    "memcached_missing",
    "peer_names",
    "poe_missing",
    "serve",
    "soak_peer",
]

PEERS_DIR = Path(__file__).resolve().parent / "peers"
#: The peer every ratio is computed against: the raw asyncio.Protocol, the fastest
#: thing asyncio does (the performance bar is stated against it).
BASELINE = "asyncio-raw"
#: The other reference for ratios.
SECOND_REFERENCE = "twisted"

READY = re.compile(rb"listening on (\S+):(\d+)")
READY_TIMEOUT = 20.0  # seconds for a server to print its readiness line
READY_MAX_LINES = 50  # lines of other output tolerated before it
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
PIPE_SIZE = 1 << 20  # stdout pipe size asked for, so the drain thread can nap


class ServerError(RuntimeError):
    """A server did not start, or died."""


@dataclass(frozen=True)
class Peer:
    """One server to measure.

    Attributes:
        name: the name used on the command line and in the results.
        description: one line for the report.
        argv: the command; it must listen on port 0 of 127.0.0.1.
        logs: whether it writes a log line per client line (ours and POE do).
        ours: whether it is this project's server (its misbehaviour is a finding).
        check: returns None when the peer can run here, else why it cannot.
    """

    name: str
    description: str
    argv: tuple[str, ...]
    logs: bool = False
    ours: bool = False
    check: Callable[[], str | None] = field(default=lambda: None, compare=False)

    def unavailable(self) -> str | None:
        """None if the peer can run on this machine, else the reason it is skipped."""
        return self.check()


def _module_missing(module: str, hint: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"`{module}` is not importable by {sys.executable} ({hint})"
        return None

    return check


def poe_missing() -> str | None:
    """None if POE runs here, else why not (perl or POE missing)."""
    perl = shutil.which("perl")
    if perl is None:
        return "perl is not installed (apt-get install perl libpoe-perl)"
    try:
        probe = subprocess.run(
            [perl, "-MPOE", "-MPOE::Component::Server::TCP", "-e1"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`perl -MPOE -e1` timed out"
    if probe.returncode != 0:
        return "`perl -MPOE -e1` failed: POE is not installed (apt-get install libpoe-perl)"
    return None


def memcached_missing() -> str | None:
    """None if the memcached binary is on PATH, else why the peer is skipped."""
    if shutil.which("memcached") is None:
        return "memcached is not installed (apt-get install memcached)"
    return None


def _peers() -> dict[str, Peer]:
    python = sys.executable
    ours_run = (python, "-m", "statemachine_server", "run", "--port", "0")
    stdlib = ("--loop", "asyncio")  # the default is uvloop where installed
    peers = [
        Peer(
            "asyncio-lines",
            "hand-written asyncio.Protocol: buffer, split lines, one write per line",
            (python, str(PEERS_DIR / "asyncio_lines.py"), "0"),
        ),
        Peer(
            "asyncio-raw",
            "asyncio.Protocol echoing whole chunks, no line splitting",
            (python, str(PEERS_DIR / "asyncio_raw.py"), "0"),
        ),
        Peer(
            "asyncio-raw-uvloop",
            "asyncio-raw on uvloop's loop: the baseline for the uvloop peers",
            (python, str(PEERS_DIR / "asyncio_raw.py"), "0", "uvloop"),
            check=_module_missing("uvloop", "pip install uvloop"),
        ),
        Peer(
            "twisted",
            'Twisted LineReceiver (delimiter b"\\n"), default reactor',
            (python, str(PEERS_DIR / "twisted_lines.py"), "0"),
            check=_module_missing("twisted", "pip install twisted"),
        ),
        Peer(
            "ours-spec",
            "statemachine_server run --loop asyncio (built-in echo spec), logs each line",
            (*ours_run, *stdlib),
            logs=True,
            ours=True,
        ),
        Peer(
            "ours-python",
            "examples/echo_server.py (TCPServer + on_input), logs each line",
            (python, str(REPO_ROOT / "examples" / "echo_server.py"), "0", "asyncio"),
            logs=True,
            ours=True,
        ),
        Peer(
            "ours-spec-uvloop",
            "statemachine_server run --loop uvloop, logs each line",
            (*ours_run, "--loop", "uvloop"),
            logs=True,
            ours=True,
            check=_module_missing("uvloop", "pip install uvloop"),
        ),
        Peer(
            "poe",
            "Perl POE::Component::Server::TCP (the Cookbook recipe), logs each line",
            ("perl", str(PEERS_DIR / "poe_echo.pl"), "0"),
            logs=True,
            check=poe_missing,
        ),
    ]
    return {peer.name: peer for peer in peers}


#: Every peer, in report order.
PEERS: dict[str, Peer] = _peers()

# ours-spec-base: the echo spec served by the package of another checkout (the
# environment's BENCH_BASE, e.g. `git worktree add /tmp/base HEAD~1`), for a
# before/after pair measured in one sitting, round-robin with the other peers.
_AT_CHECKOUT = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('statemachine_server', run_name='__main__', alter_sys=True)"
)


def _base_missing() -> str | None:
    base = os.environ.get("BENCH_BASE", "")
    if not (Path(base) / "statemachine_server" / "__init__.py").is_file():
        return "set BENCH_BASE to another checkout (git worktree add /tmp/base COMMIT)"
    return None


#: Peers that only some scenarios run (not part of ``--peers``' default list).
EXTRA_PEERS: dict[str, Peer] = {
    "ours-spec-nolog": Peer(
        "ours-spec-nolog",
        "statemachine_server run peers/echo_nolog.yaml --loop asyncio: the echo spec "
        "without its log line",
        (
            sys.executable,
            "-m",
            "statemachine_server",
            "run",
            str(PEERS_DIR / "echo_nolog.yaml"),
            "--port",
            "0",
            "--loop",
            "asyncio",
        ),
        ours=True,
    ),
    "ours-spec-base": Peer(
        "ours-spec-base",
        f"statemachine_server run, from the checkout $BENCH_BASE "
        f"({os.environ.get('BENCH_BASE', 'unset')}), logs each line",
        (
            sys.executable,
            "-c",
            _AT_CHECKOUT,
            os.environ.get("BENCH_BASE", ""),
            "run",
            "--port",
            "0",
        ),
        logs=True,
        ours=True,
        check=_base_missing,
    ),
    "ours-python-api": Peer(
        "ours-python-api",
        "peers/ours_python_api.py: the echo+log server on the public Python API "
        "(Kernel, TCPServer, on_input), logging with sys.stdout.write",
        (sys.executable, str(PEERS_DIR / "ours_python_api.py"), "0"),
        logs=True,
        ours=True,
    ),
}


def jobs_peer(job: str, job_seconds: float, step_ms: float) -> Peer:
    """``peers/ours_jobs.py``: echo, plus a ``job`` command run ``chunked`` or ``blocking``."""
    return Peer(
        f"ours-jobs-{job}",
        f"peers/ours_jobs.py: echo; `job` runs a {job_seconds:g} s {job} job "
        f"({step_ms:g} ms steps)",
        (
            sys.executable, str(PEERS_DIR / "ours_jobs.py"), "0", "--job", job,
            "--job-seconds", f"{job_seconds:g}", "--step-ms", f"{step_ms:g}",
        ),
        ours=True,
    )  # fmt: skip


def soak_peer() -> Peer:
    """``peers/soak.yaml`` run by ``statemachine_server run``: echo, chat rooms and jobs."""
    return Peer(
        "ours-soak-spec",
        "statemachine_server run peers/soak.yaml: echo (logs each line), chat rooms "
        "(/join, /say, /leave), chunked `primes N` jobs",
        (
            sys.executable, "-m", "statemachine_server", "run", str(PEERS_DIR / "soak.yaml"),
            "--port", "0", "--loop", "asyncio",
        ),
        logs=True,
        ours=True,
    )  # fmt: skip


def memcache_peers() -> list[Peer]:
    """The memcache scenario's servers: our spec, the asyncio baseline, memcached itself."""
    python = sys.executable
    return [
        Peer(
            "ours-memcache-spec",
            "statemachine_server run specs/memcache-lite.yaml (set, get/gets, delete)",
            (
                python, "-m", "statemachine_server", "run",
                str(REPO_ROOT / "specs" / "memcache-lite.yaml"), "--port", "0",
                "--loop", "asyncio",  # the loop of the asyncio peer
            ),
            ours=True,
        ),
        Peer(
            "ours-memcache-spec-uvloop",
            "the same on uvloop (run --loop uvloop)",
            (
                python, "-m", "statemachine_server", "run",
                str(REPO_ROOT / "specs" / "memcache-lite.yaml"), "--port", "0",
                "--loop", "uvloop",
            ),
            ours=True,
            check=_module_missing("uvloop", "pip install uvloop"),
        ),
        Peer(
            "ours-memcache-spec-base",
            "the same from the checkout $BENCH_BASE (see ours-spec-base), standard loop",
            (
                python, "-c", _AT_CHECKOUT, os.environ.get("BENCH_BASE", ""), "run",
                str(Path(os.environ.get("BENCH_BASE", ".")) / "specs" / "memcache-lite.yaml"),
                "--port", "0", "--loop", "asyncio",
            ),
            ours=True,
            check=_base_missing,
        ),
        Peer(
            "asyncio-memcache",
            "peers/asyncio_memcache.py: hand-written asyncio.Protocol memcache subset "
            "(dict store, one buffer per connection)",
            (python, str(PEERS_DIR / "asyncio_memcache.py"), "0"),
        ),
        Peer(
            "memcached",
            "memcached -t 1 -p PORT -l 127.0.0.1 -U 0 (one worker thread), via peers/memcached.py",
            (python, str(PEERS_DIR / "memcached.py"), "0"),
            check=memcached_missing,
        ),
    ]  # fmt: skip


def peer_names() -> list[str]:
    return list(PEERS)


@dataclass
class RunningServer:
    """A started server: its process, address, and how it ended."""

    peer: Peer
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    affinity: list[int] | None
    drain: threading.Thread | None = None
    #: Set by :meth:`stop`: the exit status, and whether SIGKILL was needed.
    exit_status: int | None = None
    killed: bool = False
    died_early: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server has used so far (Linux /proc), or None."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        # Fields after the ")" that closes the command name: state is field 3,
        # utime and stime (in clock ticks) are fields 14 and 15.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int | None:
        """The server's resident set size (VmRSS in /proc/PID/status), or None."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # reported in kB
        return None

    def stop(self) -> None:
        """SIGTERM by PID; SIGKILL after :data:`STOP_GRACE` seconds. Idempotent."""
        proc = self.proc
        if self.exit_status is not None:
            return
        if proc.poll() is not None:
            self.died_early = True  # nobody asked it to stop
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=STOP_GRACE)
        self.exit_status = proc.returncode
        if self.drain is not None:
            self.drain.join(timeout=STOP_GRACE)  # stdout closed with the process: EOF
        if proc.stdout is not None:
            proc.stdout.close()

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "affinity": self.affinity,
            "exit_status": self.exit_status,
            "killed_after_grace": self.killed,
            "died_before_stop": self.died_early,
        }


def _first_empty_connection(port: int) -> None:
    """Open and close one connection without data, and wait for the server to close it.

    Every server alike gets it before any load. Without it, asyncio servers stay in
    a slow state of glibc's allocator for their whole run: each 256 KiB ``recv``
    buffer is a fresh ``mmap`` (3.9x the CPU per line for ``asyncio-raw``), until
    one buffer is freed whole, which an empty read does (docs/performance.md).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=READY_TIMEOUT) as sock:
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # b"" once the server has read the end and closed
    except OSError:
        pass  # a server that cannot take it will show in the measurements


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, int]:
    """Read stdout until the ``listening on HOST:PORT`` line; bounded in time and lines."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    seen = 0
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while seen < READY_MAX_LINES:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"no readiness line within {timeout:.0f} s")
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None:
                    raise ServerError(f"exited with status {proc.returncode} before listening")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ServerError(
                    f"closed stdout (status {proc.wait(STOP_GRACE)}) before listening"
                )
            pending += chunk
            while b"\n" in pending and seen < READY_MAX_LINES:
                line, pending = pending.split(b"\n", 1)
                seen += 1
                match = READY.search(line)
                if match:
                    # Whatever followed the line is log output: dropped like the rest.
                    return match.group(1).decode(), int(match.group(2))
    raise ServerError(f"no readiness line among its first {READY_MAX_LINES} lines")


def _drain(fd: int, big_pipe: bool) -> None:
    """Read and discard a server's stdout until EOF (the server exited).

    With a 1 MiB pipe the thread naps 2 ms after each small read, so a server that
    flushes its log often does not wake the harness thousands of times a second;
    2 ms of even 100 MB/s of log fits the pipe, so the server never blocks on it.
    """
    while True:
        try:
            chunk = os.read(fd, PIPE_SIZE)
        except OSError:
            return
        if not chunk:
            return
        if big_pipe and len(chunk) < PIPE_SIZE // 4:
            time.sleep(0.002)


def _enlarge_pipe(stream: IO[bytes]) -> bool:
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return False
    try:
        return int(fcntl.fcntl(stream.fileno(), setsize, PIPE_SIZE)) >= PIPE_SIZE
    except OSError:
        return False


@contextlib.contextmanager
def serve(
    peer: Peer, *, cpu: int | None, stderr_path: Path, header: str
) -> Iterator[RunningServer]:
    """Start ``peer``, wait until it listens, yield it, and always stop it.

    Args:
        cpu: the CPU to pin the server to (None: no pinning).
        stderr_path: the file its stderr is appended to, after ``header``.
        header: a line written to that file first, naming the run.

    Raises:
        ServerError: it did not announce a port in time, or exited first.
    """
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("ab") as err:
        err.write(f"=== {header}: {' '.join(peer.argv)}\n".encode())
        err.flush()
        with pinned(cpu):
            proc = subprocess.Popen(
                peer.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO_ROOT,
                bufsize=0,
                start_new_session=True,  # a ^C in the terminal reaches the harness only
            )
    server: RunningServer | None = None
    try:
        assert proc.stdout is not None
        big_pipe = _enlarge_pipe(proc.stdout)
        affinity: list[int] | None
        try:
            affinity = sorted(os.sched_getaffinity(proc.pid))
        except (OSError, AttributeError):
            affinity = None
        host, port = _read_ready_line(proc, READY_TIMEOUT)
        if host not in ("127.0.0.1", "localhost"):
            raise ServerError(f"listens on {host}, expected 127.0.0.1")
        drain = threading.Thread(
            target=_drain, args=(proc.stdout.fileno(), big_pipe), daemon=True,
            name=f"drain-{peer.name}",
        )  # fmt: skip
        server = RunningServer(peer, proc, "127.0.0.1", port, affinity, drain)
        drain.start()
        _first_empty_connection(port)
        yield server
    finally:
        if server is not None:
            server.stop()
        else:  # failed before it was ready: same stop, without the bookkeeping
            RunningServer(peer, proc, "127.0.0.1", 0, None).stop()
