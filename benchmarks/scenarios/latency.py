"""The latency scenario: round-trip time of one line in flight per connection.

50 connections; each sends one 64-byte line, waits for its echo, and sends the
next, for a fixed time. The C load generator times every round trip with
CLOCK_MONOTONIC; the figures are the p50, p99 and p99.9 of the round trips that
completed inside the measuring window (medians over the runs), and their ratio to
the asyncio-raw baseline (lower is better).
"""

from __future__ import annotations

from .. import loadgen
from ..report import CPU_NOTE
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import BASELINE, Peer, RunningServer
from ..tables import cpu_cells, median, num, ratio, runs_cell, spread_cell
from .common import add_peers, new_result, round_robin, with_server

NAME = "latency"
TITLE = "Latency: one line in flight on each of 50 connections"
UNIT = "µs (p99)"
CONNECTIONS = 50
LINE_BYTES = 64
DESCRIPTION = (
    f"{CONNECTIONS} connections, each with one {LINE_BYTES}-byte line in flight (send, "
    "wait for the echo, repeat) for a fixed time; round-trip percentiles in µs of the "
    "echoes completed in the window (median over runs). Lower is better."
)
PERCENTILES = (("p50", "p50_us"), ("p99", "p99_us"), ("p999", "p999_us"), ("max", "max_us"))


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    settings = {"connections": CONNECTIONS, "line_bytes": LINE_BYTES}
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, settings)
    runnable = add_peers(ctx, result, peers)

    def measure(peer: Peer, repetition: int) -> Run:
        return measure_latency(ctx, peer, options, NAME, repetition)

    def show(r: Run) -> str:
        m = r.metrics
        return (f"p50 {m['p50_us']:,.0f} µs, p99 {m['p99_us']:,.0f} µs, "
                f"p99.9 {m['p999_us']:,.0f} µs ({m['rate']:,.0f} echoes/s)")  # fmt: skip

    round_robin(ctx, result, runnable, options, measure, show)
    result.table = table(result)
    return result


def measure_latency(
    ctx: Context, peer: Peer, options: Options, scenario: str, repetition: int
) -> Run:
    """One run of the latency client; the figure is p99, the metrics every percentile."""

    def body(srv: RunningServer, run: Run) -> None:
        load = loadgen.run(
            ctx.loadgen, srv.host, srv.port, connections=CONNECTIONS, lines=1,
            line_bytes=LINE_BYTES, warmup=options.warmup, seconds=options.seconds,
            mode="latency",
        )  # fmt: skip
        run.load = load.as_dict()
        pct = load.raw.get("latency_us")
        if load.error is not None:
            run.error = f"load generator: {load.error}"
        elif not pct or load.lines <= 0:
            run.error = "no echo completed in the measuring window"
        else:
            run.metrics = {key: float(pct[src]) for src, key in PERCENTILES}
            run.metrics["rate"] = load.rate
            run.figure = run.metrics["p99_us"]

    return with_server(ctx, peer, scenario, repetition, body)


def table(result: ScenarioResult) -> list[str]:
    """Percentiles per peer, their ratio to the baseline, CPU shares."""
    base = result.peer(BASELINE)
    lines = [
        "| peer | p50 µs | p99 µs | p99.9 µs | max µs | p99 min - max | p50 / p99 / p99.9 "
        f"vs {BASELINE} | echoes/s | server CPU | loadgen CPU (median / max) | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result.peers:
        lines.append(_row(p, base))
    lines += [
        "",
        f"Ratios are peer / {BASELINE} (lower is better). Max is the median over runs "
        "of each run's slowest round trip.",
        "",
        CPU_NOTE,
        "",
    ]
    return lines


def _row(p: PeerResult, base: PeerResult | None) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped | | | | | | | | | |"
    medians = {key: median(p, key) for _, key in PERCENTILES}
    ratios = " / ".join(
        ratio(medians[key], median(base, key)) for key in ("p50_us", "p99_us", "p999_us")
    )
    server_cpu, loadgen_cpu = cpu_cells(p)
    return (
        f"| {p.peer.name} | {num(medians['p50_us'])} | {num(medians['p99_us'])} | "
        f"{num(medians['p999_us'])} | {num(medians['max_us'])} | "
        f"{spread_cell(p.stat('p99_us'))} | {ratios} | {num(median(p, 'rate'))} | "
        f"{server_cpu} | {loadgen_cpu} | {runs_cell(p)} |"
    )
