"""The memory scenario: the server's resident memory per idle connection.

The harness opens 5,000 connections (500 with ``--quick``), 100 at a time; each
sends one line and waits for its echo, so the server has admitted it and run its
handler; then all of them sit idle. The figure is the growth of the server's
VmRSS (``/proc/PID/status``) from before to after, divided by the number of
connections: bytes per idle connection (median over runs; lower is better).

Before "before", one wave of 100 connections is opened, echoed and closed, so
one-off costs (lazy imports, first buffers) are not charged to the connections.
After the connections close, RSS is read once more: Python rarely gives memory
back to the OS, so that figure shows retention, not a leak by itself.
"""

from __future__ import annotations

import time

from ..clients import close_all, open_idle, raise_nofile
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import BASELINE, Peer, RunningServer
from ..tables import median, num, ratio, runs_cell, spread_cell
from .common import add_peers, new_result, round_robin, with_server

NAME = "memory"
TITLE = "Memory: server RSS per idle connection"
UNIT = "bytes/connection"
HOLD, HOLD_QUICK = 5_000, 500
WAVE = 100
SETTLE_S = 0.5  # after the last echo (or close), before reading RSS
MIB = 1024 * 1024


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    hold = HOLD_QUICK if options.quick else HOLD
    soft, hard = raise_nofile(hold + 1_000)
    description = (
        f"{hold:,} connections held idle, each admitted by one echoed 64-byte line; figure = "
        "(server VmRSS with them - VmRSS before) / connections. Lower is better."
    )
    settings = {"connections": hold, "wave": WAVE, "settle_s": SETTLE_S,
                "rlimit_nofile": [soft, hard]}  # fmt: skip
    result = new_result(NAME, TITLE, description, UNIT, options, settings)
    result.method = (
        f"fresh server per run; one wave of {WAVE} connections opened and closed first; "
        f"RSS read {SETTLE_S:g} s after the last echo; {options.repeat} repetition(s) "
        "round-robin across peers; median, min-max"
    )
    if soft < hold + 100:
        result.problems.append(f"RLIMIT_NOFILE is {soft} (hard {hard}): too low to hold {hold}")
        return result
    runnable = add_peers(ctx, result, peers)

    def measure(peer: Peer, repetition: int) -> Run:
        return with_server(ctx, peer, NAME, repetition, lambda srv, r: _hold(srv, r, hold))

    def show(r: Run) -> str:
        return (f"{r.figure:,.0f} {UNIT} (RSS {r.metrics['rss_before'] / MIB:.1f} -> "
                f"{r.metrics['rss_held'] / MIB:.1f} MiB)")  # fmt: skip

    round_robin(ctx, result, runnable, options, measure, show)
    result.table = _table(result, hold)
    return result


def _hold(srv: RunningServer, run: Run, hold: int) -> None:
    close_all(open_idle(srv.host, srv.port, WAVE, wave=WAVE))  # warm-up wave
    time.sleep(SETTLE_S)
    before = srv.rss_bytes()
    socks = open_idle(srv.host, srv.port, hold, wave=WAVE)
    try:
        time.sleep(SETTLE_S)
        held = srv.rss_bytes()
    finally:
        close_all(socks)
    time.sleep(SETTLE_S * 2)
    after_close = srv.rss_bytes()
    if before is None or held is None:
        run.error = "cannot read the server's VmRSS from /proc"
        return
    run.metrics = {"rss_before": before, "rss_held": held,
                   "rss_after_close": float(after_close or 0)}  # fmt: skip
    run.figure = (held - before) / hold


def _table(result: ScenarioResult, hold: int) -> list[str]:
    base = result.peer(BASELINE)
    lines = [
        f"| peer | {UNIT} (median) | min - max | vs {BASELINE} | RSS before MiB | "
        f"RSS with {hold:,} MiB | RSS after closing MiB | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(p, base) for p in result.peers]
    lines += [
        "",
        f"Ratios are peer / {BASELINE} (lower is better). RSS columns are medians over runs.",
        "",
    ]
    return lines


def _row(p: PeerResult, base: PeerResult | None) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped | | | | | | |"

    def mib(metric: str) -> str:
        value = median(p, metric)
        return num(value / MIB if value is not None else None, 1)

    return (
        f"| {p.peer.name} | {num(p.median)} | {spread_cell(p.figures)} | "
        f"{ratio(p.median, base.median if base else None)} | {mib('rss_before')} | "
        f"{mib('rss_held')} | {mib('rss_after_close')} | {runs_cell(p)} |"
    )
