"""The fairness scenario: echo latency while one client's long job runs.

The server is ``peers/ours_jobs.py`` (our public Python API): it echoes lines, and
for the line ``job`` it runs ~2 s of CPU work (0.3 s with ``--quick``) for that
client. Three variants, each with 50 latency clients as in the latency scenario:

* ``no job``: the same server, nobody asks for a job (the baseline);
* ``chunked job``: one extra client sends ``job``; the server runs it with
  ``session.work(generator)``: 50 us steps, run in the kernel's 1 ms work slices;
* ``blocking job``: the same steps run inside the handler in one go.

The C client records every round trip with its send time (``--samples``); the
harness notes when ``job`` was sent and when ``job done`` came back, and takes the
percentiles of the round trips that overlap that interval (for ``no job``, an
interval of the job's length after the same warm-up). Figures: p50/p99/p99.9
in ms (medians over runs) and each p99's difference from the no-job p99.
"""

from __future__ import annotations

import array
import dataclasses
import tempfile
import time
from pathlib import Path

from .. import loadgen
from ..clients import JobClient
from ..pyloadgen import percentiles
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import Peer, RunningServer, jobs_peer
from ..tables import median, num, runs_cell, spread_cell
from .common import add_peers, new_result, round_robin, with_server

NAME = "fairness"
TITLE = "Fairness: echo latency while another client's long job runs"
UNIT = "ms (p99)"
CONNECTIONS = 50
LINE_BYTES = 64
JOB_S, JOB_S_QUICK = 2.0, 0.3
STEP_MS = 0.05  # the job's steps: a slice (1 ms) runs about 20 of them
AFTER_S = 0.2  # traffic kept up after the job, before the window ends
IDLE, CHUNKED, BLOCKING = "no job", "chunked job", "blocking job"


def _variants(job_s: float) -> dict[str, tuple[Peer, bool]]:
    """Variant -> (its server, whether the job is asked for)."""

    def named(job: str, name: str) -> Peer:
        return dataclasses.replace(jobs_peer(job, job_s, STEP_MS), name=name)

    return {
        IDLE: (named("chunked", "jobs-none"), False),
        CHUNKED: (named("chunked", "jobs-chunked"), True),
        BLOCKING: (named("blocking", "jobs-blocking"), True),
    }


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: the variants are fixed."""
    job_s = JOB_S_QUICK if options.quick else JOB_S
    variants = _variants(job_s)
    description = (
        f"{CONNECTIONS} echo clients with one {LINE_BYTES}-byte line in flight each, against "
        f"peers/ours_jobs.py; a {job_s:g} s CPU job ({STEP_MS:g} ms steps) for one more client "
        "runs chunked (session.work) or blocking (inside the handler), or not at all. "
        "Round-trip percentiles over the job's interval, in ms. Lower is better."
    )
    settings = {"connections": CONNECTIONS, "line_bytes": LINE_BYTES, "job_s": job_s,
                "step_ms": STEP_MS}  # fmt: skip
    result = new_result(NAME, TITLE, description, UNIT, options, settings)
    result.method = (
        f"fresh server per run, {options.warmup:g} s warm-up, then the job (or as long "
        f"without it); {options.repeat} repetition(s) round-robin across variants; median, "
        "min-max"
    )
    entries = add_peers(ctx, result, [peer for peer, _ in variants.values()])
    by_peer = {peer.name: (variant, asks) for variant, (peer, asks) in variants.items()}

    def measure(peer: Peer, repetition: int) -> Run:
        _, asks = by_peer[peer.name]
        return with_server(
            ctx, peer, NAME, repetition, lambda srv, r: _body(ctx, srv, r, options, job_s, asks)
        )

    def show(r: Run) -> str:
        m = r.metrics
        return (f"p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, max {m['max_ms']:.1f} ms "
                f"over {m['interval_s']:.2f} s")  # fmt: skip

    round_robin(ctx, result, entries, options, measure, show)
    names = {peer.name: variant for variant, (peer, _) in variants.items()}
    result.table = _table(result, names)
    _summarise(result, names)
    return result


def _body(
    ctx: Context, srv: RunningServer, run: Run, options: Options, job_s: float, asks: bool
) -> None:
    timeout = job_s * 30 + 10  # the chunked job shares the CPU with 50 clients
    cap = options.warmup + timeout + 10
    with tempfile.TemporaryDirectory(prefix="fairness-") as tmp:
        samples_path = Path(tmp) / "samples.bin"
        job = JobClient(srv.host, srv.port)
        try:
            with loadgen.start(
                ctx.loadgen, "latency", srv.host, srv.port, connections=CONNECTIONS,
                line_bytes=LINE_BYTES, warmup=0, seconds=cap, samples=samples_path,
            ) as client:  # fmt: skip
                time.sleep(options.warmup)
                if asks:
                    start, end, answer = job.run_job(timeout)
                    run.server["job_answer"] = answer
                else:
                    start = time.monotonic()
                    time.sleep(job_s)
                    end = time.monotonic()
                time.sleep(AFTER_S)
                client.end_window()
                load = client.finish()
        finally:
            job.close()
        run.load = load.as_dict()
        if load.error is not None:
            run.error = f"load generator: {load.error}"
            return
        pairs = array.array("d")
        with samples_path.open("rb") as f:
            pairs.frombytes(f.read())
    # Round trips that overlap [start, end]: sent before its end, answered after its start.
    rtts = [pairs[i + 1] for i in range(0, len(pairs) - 1, 2)
            if pairs[i] <= end and pairs[i] + pairs[i + 1] >= start]  # fmt: skip
    pct = percentiles(rtts)
    if pct is None:
        run.error = "no round trip overlapped the job's interval"
        return
    run.metrics = {f"{k}_ms": pct[k] / 1000 for k in ("p50", "p99", "p999", "max")}
    run.metrics |= {"interval_s": end - start, "samples": float(len(rtts))}
    run.figure = run.metrics["p99_ms"]


def _table(result: ScenarioResult, names: dict[str, str]) -> list[str]:
    idle = next((p for p in result.peers if names[p.peer.name] == IDLE), None)
    lines = [
        "| variant | p50 ms | p99 ms | p99 min - max | p99.9 ms | max ms | p99 - no-job p99, ms "
        "| interval s (job wall time) | round trips in it | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result.peers:
        lines.append(_row(p, names[p.peer.name], idle))
    lines.append("")
    return lines


def _row(p: PeerResult, variant: str, idle: PeerResult | None) -> str:
    if p.status == "skipped":
        return f"| {variant} | skipped | | | | | | | | |"
    p99, base = p.median, idle.median if idle else None
    diff = f"{p99 - base:+,.2f}" if p99 is not None and base is not None else "-"
    return (
        f"| {variant} | {num(median(p, 'p50_ms'), 2)} | {num(p99, 2)} | "
        f"{spread_cell(p.figures, 2)} | {num(median(p, 'p999_ms'), 2)} | "
        f"{num(median(p, 'max_ms'), 1)} | {diff} | {num(median(p, 'interval_s'), 2)} | "
        f"{num(median(p, 'samples'))} | {runs_cell(p)} |"
    )


def _summarise(result: ScenarioResult, names: dict[str, str]) -> None:
    p99 = {names[p.peer.name]: p.median for p in result.peers}
    result.extra = {"p99_ms": p99}
    idle = p99.get(IDLE)
    if idle is None:
        return
    parts = [f"no job {idle:.2f} ms"]
    for variant in (CHUNKED, BLOCKING):
        value = p99.get(variant)
        if value is not None:
            parts.append(f"{variant} {value:.2f} ms ({value - idle:+.2f} ms)")
    result.notes.append("p99: " + "; ".join(parts) + ".")
