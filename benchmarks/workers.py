"""One worker against several: ``run --workers N`` under the streaming echo load.

    python -m benchmarks.workers                    # 1 vs 2 workers, 5 pairs
    python -m benchmarks.workers --workers 1,2,4 --repeat 3 --depth 64

The built-in echo spec (every line echoed and logged) is started with each
``--workers`` value in turn, round-robin, a fresh server per run; the C load
generator's ``stream`` mode (``loadgen.c``: 50 connections, a window of DEPTH
64-byte lines each) drives it for ``--seconds`` after ``--warmup``. Nothing is
pinned: the workers and the load generator share the machine's CPUs, as they
would in production. Figures per run: echoed lines per second, and the server's
CPU time per line (the supervisor and its workers together, from /proc, over the
client's run). A run's ratio is to the 1-worker run of the same repetition;
the report gives medians (min-max) of the runs and of the paired ratios.

The servers' stdout (a log line per echoed line) is a 1 MiB pipe that a thread
here reads and discards, as the harness does (``servers.py``), so the log is
really written; that thread's CPU is the same for every worker count.

Prints a Markdown table, and JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import loadgen
from .machine import REPO_ROOT, machine_info

CONNECTIONS = 50
LINE_BYTES = 64


def _tree_cpu(root: int) -> float:
    """User + system CPU seconds of ``root`` and every process below it."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def _drain(fd: int) -> None:
    # As servers.py's: large reads, a nap after a small one (the pipe holds 1 MiB).
    while chunk := os.read(fd, 1 << 20):
        if len(chunk) < 1 << 18:
            time.sleep(0.002)


def _serve(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "statemachine_server", "run", "--port", "0",
         "--workers", str(workers), "--loop", "asyncio"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{workers} workers: no listening line ({line!r})")
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdout.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    threading.Thread(target=_drain, args=(proc.stdout.fileno(),), daemon=True).start()
    port = int(match.group(1))
    # As the harness does (servers.py): an empty connection first, one per
    # worker or so, so that no server stays in glibc's slow first state.
    for _ in range(4 * workers):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def measure(client: loadgen.Loadgen, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run: a fresh server with ``workers`` workers under the stream load."""
    proc, port = _serve(workers)
    try:
        cpu_before, started = _tree_cpu(proc.pid), time.monotonic()
        load = loadgen.run(
            client, "127.0.0.1", port, connections=CONNECTIONS, lines=args.depth,
            line_bytes=LINE_BYTES, warmup=args.warmup, seconds=args.seconds, mode="stream",
        )  # fmt: skip
        cpu, wall = _tree_cpu(proc.pid) - cpu_before, time.monotonic() - started
    finally:
        _stop(proc)
    if load.error is not None or load.rate <= 0:
        raise RuntimeError(f"{workers} workers: {load.error or 'nothing echoed'}")
    # CPU over the client's whole run (warm-up too) against its rate in the window:
    # valid while the rate is steady, as in the streaming scenario.
    return {
        "workers": workers,
        "lines_per_s": load.rate,
        "server_cpu_share": cpu / wall,
        "server_us_per_line": cpu / wall / load.rate * 1e6,
        "loadgen_cpu_share": load.cpu_share,
    }


def _cell(values: list[float], fmt: str) -> str:
    low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}-{high})"


def report(runs: list[list[dict[str, Any]]], counts: list[int]) -> str:
    """The Markdown table: one row per worker count."""
    rows = [
        "| workers | lines/s | vs 1 worker (paired) | server CPU | server CPU us/line "
        "| vs 1 worker (paired) | loadgen CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, n in enumerate(counts):
        mine = [rep[i] for rep in runs]
        base = [rep[0] for rep in runs]
        rate = [r["lines_per_s"] for r in mine]
        per = [r["server_us_per_line"] for r in mine]
        rate_ratio = [r / b["lines_per_s"] for r, b in zip(rate, base, strict=True)]
        per_ratio = [p / b["server_us_per_line"] for p, b in zip(per, base, strict=True)]
        rows.append(
            f"| {n} | {_cell(rate, '{:,.0f}')} | {_cell(rate_ratio, '{:.2f}x')} "
            f"| {_cell([r['server_cpu_share'] * 100 for r in mine], '{:.0f}%')} "
            f"| {_cell(per, '{:.2f}')} | {_cell(per_ratio, '{:.2f}x')} "
            f"| {_cell([r['loadgen_cpu_share'] * 100 for r in mine], '{:.0f}%')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers", default="1,2", help="worker counts, the first is the reference"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--depth", type=int, default=16, help="lines in flight per connection")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--loadgen", default="auto", choices=("auto", "c", "python"))
    parser.add_argument("--json", action="store_true", help="print every run as JSON too")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    client = loadgen.prepare(REPO_ROOT / "benchmarks" / "results" / ".cache", args.loadgen)
    machine = machine_info()
    runs: list[list[dict[str, Any]]] = []
    for rep in range(args.repeat):
        # Round robin, starting one further along each time (drift hits all alike).
        order = counts[rep % len(counts) :] + counts[: rep % len(counts)]
        done = {n: measure(client, n, args) for n in order}
        runs.append([done[n] for n in counts])
        figures = [
            f"{n}: {done[n]['lines_per_s']:,.0f} lines/s, {done[n]['server_us_per_line']:.2f} us"
            for n in counts
        ]
        print(f"repetition {rep + 1}: " + ", ".join(figures), file=sys.stderr)
    command = "python -m benchmarks.workers " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"- `{command.strip()}`; load generator: {client.kind} ({client.note})")
    print(f"- machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, "
          f"Python {machine.get('python', '?')}; stream load: {CONNECTIONS} connections x "
          f"{args.depth} lines of {LINE_BYTES} bytes, {args.warmup:g} s warm-up, "
          f"{args.seconds:g} s measured, {args.repeat} repetitions round-robin; "
          "median (min-max)")  # fmt: skip
    print()
    print(report(runs, counts))
    if args.json:
        print(json.dumps({"machine": machine, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
