"""The many-connections scenario: 50 busy connections beside 5,000 idle ones.

The harness opens 5,000 connections (500 with ``--quick``), 100 at a time, each
admitted by one echoed line (as the memory scenario does), and leaves them idle;
then 50 more connections stream at depth 4 (the ``streaming-4`` load) for the
measured time. The figure is the busy connections' echoed lines per second, with
their round-trip p50/p99; ratios to asyncio-raw and twisted. What it shows: what a
server pays per tick, per read or per timer for connections that do nothing.

After the run every idle connection is checked without blocking: one the server
closed (or wrote to) is counted, and flagged in the report. The harness raises
its soft ``RLIMIT_NOFILE`` first (servers inherit it), as the memory scenario does.
"""

from __future__ import annotations

import select
import socket
import time

from ..clients import close_all, open_idle, raise_nofile
from ..report import CPU_NOTE
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import BASELINE, SECOND_REFERENCE, Peer, RunningServer
from ..tables import cpu_cells, median, num, ratio, runs_cell, spread_cell
from . import streaming
from .common import add_peers, new_result, round_robin

NAME = "many-connections"
TITLE = "Many connections: 50 busy connections beside thousands of idle ones"
UNIT = "lines/s"
IDLE, IDLE_QUICK = 5_000, 500
WAVE = 100
BUSY = 50
DEPTH = 4
LINE_BYTES = 64


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    idle = IDLE_QUICK if options.quick else IDLE
    soft, hard = raise_nofile(idle + 1_000)
    description = (
        f"{idle:,} idle connections (each admitted by one echoed line, then silent) and "
        f"{BUSY} busy ones, each keeping {DEPTH} {LINE_BYTES}-byte lines in flight; figure = "
        "the busy connections' echoed lines per second (median of the runs), with their "
        "round-trip p50/p99."
    )
    settings = {"idle": idle, "wave": WAVE, "busy": BUSY, "depth": DEPTH,
                "line_bytes": LINE_BYTES, "rlimit_nofile": [soft, hard]}  # fmt: skip
    result = new_result(NAME, TITLE, description, UNIT, options, settings)
    result.method = (
        f"fresh server per run; {idle:,} idle connections opened {WAVE} at a time first, then "
        f"{options.warmup:g} s warm-up and {options.seconds:g} s measured on the busy ones; "
        f"{options.repeat} repetition(s) round-robin across peers; median, min-max"
    )
    if soft < idle + 200:
        result.problems.append(f"RLIMIT_NOFILE is {soft} (hard {hard}): too low to hold {idle}")
        return result
    runnable = add_peers(ctx, result, peers)

    def before(srv: RunningServer, run: Run) -> list[socket.socket]:
        started = time.monotonic()
        try:
            socks = open_idle(srv.host, srv.port, idle, wave=WAVE)
        except (OSError, ConnectionError, TimeoutError) as exc:
            run.error = f"opening the idle connections: {type(exc).__name__}: {exc}"
            return []
        run.metrics["idle_open_s"] = time.monotonic() - started
        return socks

    def after(srv: RunningServer, run: Run, held: object) -> None:
        socks = held if isinstance(held, list) else []
        try:
            if socks and run.error is None:
                closed = _disturbed(socks)
                if closed:
                    run.notes.append(
                        f"{closed} of {len(socks)} idle connections were closed or written to "
                        "by the server during the run"
                    )
                run.server["idle_disturbed"] = closed
        finally:
            close_all(socks)

    def measure(peer: Peer, repetition: int) -> Run:
        return streaming.measure_stream(
            ctx, peer, options, NAME, repetition, connections=BUSY, depth=DEPTH,
            line_bytes=LINE_BYTES, body_before=before, body_after=after,
        )  # fmt: skip

    round_robin(ctx, result, runnable, options, measure, streaming.show_stream)
    result.table = _table(result, idle)
    return result


def _disturbed(socks: list[socket.socket]) -> int:
    """How many of ``socks`` are readable now: the server closed them or sent something."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return len(poller.poll(0))


def _table(result: ScenarioResult, idle: int) -> list[str]:
    base, second = result.peer(BASELINE), result.peer(SECOND_REFERENCE)
    lines = [
        f"| peer | busy {UNIT} (median) | min - max | vs {BASELINE} | vs {SECOND_REFERENCE} "
        f"| p50 µs | p99 µs | p50 / p99 vs {BASELINE} | server µs/line | server CPU "
        "| loadgen CPU (median / max) | idle opened in s | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(p, base, second) for p in result.peers]
    lines += [
        "",
        f"{idle:,} idle connections held during each run. Ratios of lines/s are over the "
        "reference's (higher is better); ratios of p50/p99 too (lower is better). p50/p99: "
        "round trip of a busy line, from the write that queued it to the read that completed "
        "its echo (medians over runs). Server µs/line: the server's CPU share / lines per "
        "second.",
        "",
        CPU_NOTE,
        "",
    ]
    return lines


def _row(p: PeerResult, base: PeerResult | None, second: PeerResult | None) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped | | | | | | | | | | | |"
    server_cpu, loadgen_cpu = cpu_cells(p)
    latency = " / ".join(ratio(median(p, k), median(base, k)) for k in ("p50_us", "p99_us"))
    return (
        f"| {p.peer.name} | {num(p.median)} | {spread_cell(p.figures)} | "
        f"{ratio(p.median, base.median if base else None)} | "
        f"{ratio(p.median, second.median if second else None)} | "
        f"{num(median(p, 'p50_us'))} | {num(median(p, 'p99_us'))} | {latency} | "
        f"{num(median(p, 'server_us_per_line'), 2)} | {server_cpu} | {loadgen_cpu} | "
        f"{num(median(p, 'idle_open_s'), 1)} | {runs_cell(p)} |"
    )
