"""The churn scenario: connections per second, each one line long.

32 connections at a time; each connects (non-blocking), sends one 64-byte line,
reads its echo and closes, and a new one takes its place at once. The figure is
connections completed per second (median over the runs), with its ratio to the
asyncio-raw baseline; the time from ``connect()`` to the echo is reported too.

The client closes first, so each connection leaves a TIME_WAIT socket on the
client side, and Linux lets ``connect()`` reuse one (``tcp_tw_reuse``, on for
loopback by default) only once it is a second or more old: the ephemeral port
range then caps the rate at roughly ports / 1-2 s, whatever the server. A server
below ~90% CPU is at that cap; so the table also gives the server's CPU time per
connection (its CPU seconds over the run / connections completed in the run),
which the cap does not distort.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .. import loadgen
from ..report import CPU_NOTE
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import BASELINE, SECOND_REFERENCE, Peer, RunningServer
from ..tables import cpu_cells, median, num, ratio, runs_cell, spread_cell
from .common import add_peers, new_result, round_robin, with_server

NAME = "churn"
TITLE = "Churn: connect, one line, echo, close; 32 at a time"
UNIT = "connections/s"
CONCURRENCY = 32
LINE_BYTES = 64
DESCRIPTION = (
    f"{CONCURRENCY} connections at a time, each: connect, send one {LINE_BYTES}-byte line, "
    "read the echo, close (the client closes first); figure = connections completed "
    "per second (median of the runs). Higher is better."
)


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    settings = {"concurrency": CONCURRENCY, "line_bytes": LINE_BYTES} | _port_settings()
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, settings)
    runnable = add_peers(ctx, result, peers)

    def measure(peer: Peer, repetition: int) -> Run:
        def body(srv: RunningServer, run: Run) -> None:
            load = loadgen.run(
                ctx.loadgen, srv.host, srv.port, connections=CONCURRENCY, lines=1,
                line_bytes=LINE_BYTES, warmup=options.warmup, seconds=options.seconds,
                mode="churn",
            )  # fmt: skip
            run.load = load.as_dict()
            times = load.raw.get("connection_us") or {}
            if load.error is not None:
                run.error = f"load generator: {load.error}"
            elif load.lines <= 0:
                run.error = "no connection completed in the measuring window"
            else:
                run.figure = load.rate
                run.metrics = {f"{k}_us": float(times[k]) for k in ("p50", "p99") if k in times}

        run = with_server(ctx, peer, NAME, repetition, body)
        cpu, total = run.server.get("cpu_s"), run.load.get("raw", {}).get("completed_total")
        if run.figure is not None and cpu and total:
            # Server CPU per connection, over the whole run (warm-up and drain included).
            run.metrics["server_cpu_us"] = cpu / total * 1e6
        return run

    def show(r: Run) -> str:
        return f"{r.figure:,.0f} {UNIT} (connect-to-echo p99 {r.metrics.get('p99_us', 0):,.0f} µs)"

    round_robin(ctx, result, runnable, options, measure, show)
    result.table = _table(result)
    _note_port_cap(result)
    return result


def _port_settings() -> dict[str, str]:
    """The client-side TCP settings that bound the churn rate (Linux)."""
    out: dict[str, str] = {}
    for name in ("ip_local_port_range", "tcp_tw_reuse", "tcp_max_tw_buckets"):
        try:
            out[name] = " ".join(Path(f"/proc/sys/net/ipv4/{name}").read_text().split())
        except OSError:
            out[name] = "?"
    return out


def _note_port_cap(result: ScenarioResult) -> None:
    ports = result.settings.get("ip_local_port_range", "?")
    capped = [p.peer.name for p in result.peers if p.server_shares()
              and statistics.median(p.server_shares()) < 0.9]  # fmt: skip
    if capped:
        result.notes.append(
            f"{', '.join(capped)}: median server CPU below 90%: their connections/s is "
            "bound by the client side (TIME_WAIT reuse over the ephemeral ports "
            f"{ports}; tcp_tw_reuse={result.settings.get('tcp_tw_reuse')}), not by the "
            "server. Compare server CPU µs per connection instead."
        )


def _table(result: ScenarioResult) -> list[str]:
    base = result.peer(BASELINE)
    second = result.peer(SECOND_REFERENCE)
    lines = [
        f"| peer | {UNIT} (median) | min - max | vs {BASELINE} | vs {SECOND_REFERENCE} | "
        f"server CPU µs/connection | vs {BASELINE} | connect-to-echo p50 / p99 µs | "
        "server CPU | loadgen CPU (median / max) | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(p, base, second) for p in result.peers]
    lines += [
        "",
        "Server CPU µs/connection: the server's CPU seconds over the whole run (warm-up "
        "and drain included) per connection completed in it; lower is better.",
        "",
        CPU_NOTE,
        "",
    ]
    return lines


def _row(p: PeerResult, base: PeerResult | None, second: PeerResult | None) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped | | | | | | | | | |"
    server_cpu, loadgen_cpu = cpu_cells(p)
    return (
        f"| {p.peer.name} | {num(p.median)} | {spread_cell(p.figures)} | "
        f"{ratio(p.median, base.median if base else None)} | "
        f"{ratio(p.median, second.median if second else None)} | "
        f"{num(median(p, 'server_cpu_us'), 1)} | "
        f"{ratio(median(p, 'server_cpu_us'), median(base, 'server_cpu_us'))} | "
        f"{num(median(p, 'p50_us'))} / {num(median(p, 'p99_us'))} | "
        f"{server_cpu} | {loadgen_cpu} | {runs_cell(p)} |"
    )
