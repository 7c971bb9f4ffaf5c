"""The streaming scenarios: a sliding window of lines in flight per connection.

50 connections; each keeps DEPTH 64-byte lines in flight: it writes DEPTH lines,
then, after each read, one write of as many new lines as that read completed
echoes (``loadgen.c``'s ``stream`` mode). Unlike the throughput scenario, whose
client waits for a whole batch of 16 before sending the next, the server never
sees a batch boundary: lines arrive as echoes leave, so most of its reads carry a
few lines, and the fixed cost of each read and each tick shows. One scenario per
depth: ``streaming-1`` (the latency scenario's load), ``streaming-4``,
``streaming-16``, ``streaming-64``; ``streaming`` on the command line runs all four.

Figure: echoed lines per second (median of the runs), ratios to asyncio-raw and
twisted; also the round-trip p50/p99 of the lines (from the write that queued a
line to the read that completed its echo), the server's CPU time per line (its
CPU share over the client's run / the rate: valid while the rate is steady) and
how many echoes one read of the client carries.

:func:`measure_stream` is shared with the large-lines and many-connections scenarios.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import loadgen
from ..report import CPU_NOTE
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import BASELINE, SECOND_REFERENCE, Peer, RunningServer
from ..tables import cpu_cells, median, num, ratio, runs_cell, spread_cell
from .common import add_peers, new_result, round_robin, with_server

GROUP = "streaming"
UNIT = "lines/s"
CONNECTIONS = 50
LINE_BYTES = 64  # 63 characters + "\n"
DEPTHS = (1, 4, 16, 64)

RunFn = Callable[[Context, list[Peer], Options], ScenarioResult]


def name(depth: int) -> str:
    return f"{GROUP}-{depth}"


def title(depth: int) -> str:
    return f"Streaming: {depth} line(s) in flight on each of {CONNECTIONS} connections"


def description(depth: int) -> str:
    return (
        f"{CONNECTIONS} connections, each keeping {depth} {LINE_BYTES}-byte line(s) in flight: "
        "after each read, one write of as many new lines as that read completed echoes; "
        "figure = echoed lines per second (median of the runs)."
    )


def runner(depth: int) -> RunFn:
    """The ``run(ctx, peers, options)`` of ``streaming-DEPTH``."""

    def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
        settings = {"connections": CONNECTIONS, "depth": depth, "line_bytes": LINE_BYTES}
        scenario = name(depth)
        result = new_result(scenario, title(depth), description(depth), UNIT, options, settings)
        runnable = add_peers(ctx, result, peers)

        def measure(peer: Peer, repetition: int) -> Run:
            return measure_stream(
                ctx, peer, options, scenario, repetition, connections=CONNECTIONS,
                depth=depth, line_bytes=LINE_BYTES,
            )  # fmt: skip

        round_robin(ctx, result, runnable, options, measure, show_stream)
        result.table = table(result)
        return result

    return run


#: (name, title, run) of every streaming scenario, in the order they run.
VARIANTS: list[tuple[str, str, RunFn]] = [(name(d), title(d), runner(d)) for d in DEPTHS]


def measure_stream(
    ctx: Context,
    peer: Peer,
    options: Options,
    scenario: str,
    repetition: int,
    *,
    connections: int,
    depth: int,
    line_bytes: int,
    body_before: Callable[[RunningServer, Run], object] | None = None,
    body_after: Callable[[RunningServer, Run, object], None] | None = None,
) -> Run:
    """One run of the ``stream`` client; the figure is echoed lines per second.

    ``body_before(server, run)`` runs first, with the server up (the many-connections
    scenario opens its idle connections there); what it returns is handed to
    ``body_after(server, run, it)``, which runs after the client, even if it failed.
    """

    def body(srv: RunningServer, run: Run) -> None:
        held = body_before(srv, run) if body_before is not None else None
        try:
            if run.error is not None:
                return
            cpu_before, started = srv.cpu_seconds(), time.monotonic()
            load = loadgen.run(
                ctx.loadgen, srv.host, srv.port, connections=connections, lines=depth,
                line_bytes=line_bytes, warmup=options.warmup, seconds=options.seconds,
                mode="stream",
            )  # fmt: skip
            cpu_after, wall = srv.cpu_seconds(), time.monotonic() - started
            if cpu_before is not None and cpu_after is not None and wall > 0:
                # Over the client's run only (not what body_before did); these
                # take the place of with_server's figures for the whole body.
                run.server["cpu_s"] = cpu_after - cpu_before
                run.server["cpu_share"] = (cpu_after - cpu_before) / wall
            run.load = load.as_dict()
            pct = load.raw.get("latency_us")
            if load.error is not None:
                run.error = f"load generator: {load.error}"
            elif load.lines <= 0 or not pct:
                run.error = "nothing was echoed in the measuring window"
            else:
                run.figure = load.rate
                recvs = int(load.raw.get("recvs") or 0)
                run.metrics.update(
                    p50_us=float(pct["p50"]),
                    p99_us=float(pct["p99"]),
                    mb_s=load.rate * line_bytes / 1e6,
                    lines_per_read=load.lines / recvs if recvs else 0.0,
                )
                share = run.server.get("cpu_share")
                if isinstance(share, float):
                    run.metrics["server_us_per_line"] = share / load.rate * 1e6
        finally:
            if body_after is not None:
                body_after(srv, run, held)

    return with_server(ctx, peer, scenario, repetition, body)


def show_stream(run: Run) -> str:
    """A run's figure, percentiles and CPU shares, for the progress line."""
    m = run.metrics
    shares = [
        f"{who} CPU {share:.0%}"
        for who, share in (("server", run.server.get("cpu_share")),
                           ("loadgen", run.load.get("cpu_share")))
        if isinstance(share, float)
    ]  # fmt: skip
    return (
        f"{run.figure:,.0f} {UNIT}, p50 {m['p50_us']:,.0f} µs, p99 {m['p99_us']:,.0f} µs, "
        f"{m['lines_per_read']:.1f} echoes per client read ({', '.join(shares)})"
    )


def table(result: ScenarioResult, *, mb_s: bool = False) -> list[str]:
    """Lines/s per peer, ratios to both references, percentiles, CPU per line and shares."""
    base, second = result.peer(BASELINE), result.peer(SECOND_REFERENCE)
    mb_head, mb_align = (" MB/s |", "---:|") if mb_s else ("", "")
    lines = [
        f"| peer | {UNIT} (median) | min - max |{mb_head} vs {BASELINE} | vs {SECOND_REFERENCE} "
        "| p50 µs | p99 µs | server µs/line | echoes per client read | server CPU "
        "| loadgen CPU (median / max) | runs ok |",
        f"|---|---:|---:|{mb_align}---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result.peers:
        lines.append(_row(p, base, second, mb_s))
    lines += [
        "",
        f"Ratios are lines/s over {BASELINE}'s and {SECOND_REFERENCE}'s (higher is better). "
        "p50/p99: round trip of a line, from the write that queued it to the read that "
        "completed its echo (medians over runs). Server µs/line: the server's CPU share / "
        "lines per second. Echoes per client read: lines / reads of the client in the window "
        "(how the echoes came back bunched).",
        "",
        CPU_NOTE,
        "",
    ]
    return lines


def _row(p: PeerResult, base: PeerResult | None, second: PeerResult | None, mb_s: bool) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped |{' |' if mb_s else ''} | | | | | | | | | |"
    mb = f" {num(median(p, 'mb_s'), 1)} |" if mb_s else ""
    server_cpu, loadgen_cpu = cpu_cells(p)
    return (
        f"| {p.peer.name} | {num(p.median)} | {spread_cell(p.figures)} |{mb} "
        f"{ratio(p.median, base.median if base else None)} | "
        f"{ratio(p.median, second.median if second else None)} | "
        f"{num(median(p, 'p50_us'))} | {num(median(p, 'p99_us'))} | "
        f"{num(median(p, 'server_us_per_line'), 2)} | {num(median(p, 'lines_per_read'), 1)} | "
        f"{server_cpu} | {loadgen_cpu} | {runs_cell(p)} |"
    )
