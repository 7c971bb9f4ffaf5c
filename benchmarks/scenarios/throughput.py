"""The throughput scenario: many connections, pipelined lines, echoed lines per second.

50 connections; each sends 16 pipelined 64-byte lines (63 characters and
``"\\n"``) in one write, waits until all 16 echoes are back, and sends the next
batch, for a fixed time. The figure is the number of lines echoed per second.

Method, for a noisy shared machine:

* every run starts a fresh server (pinned to its own CPU), runs a warm-up that is
  not counted, then measures for ``--seconds``;
* peers are interleaved: repetition 1 runs every peer once, then repetition 2,
  and so on, each repetition starting one peer further along, so slow drift of
  the machine hits every peer alike;
* a peer's figure is the median of its runs, reported with their min and max.
"""

from __future__ import annotations

import datetime as _dt

from .. import loadgen
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import Peer, ServerError, serve

NAME = "throughput"
TITLE = "Throughput: pipelined lines over 50 connections"
UNIT = "lines/s"

CONNECTIONS = 50
LINES_PER_BATCH = 16
LINE_BYTES = 64  # 63 characters + "\n"

DESCRIPTION = (
    f"{CONNECTIONS} connections, each sending {LINES_PER_BATCH} pipelined {LINE_BYTES}-byte "
    "lines in one write, waiting for all echoes, then the next batch; figure = echoed "
    "lines per second (median of the runs)."
)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """Measure every available peer ``options.repeat`` times, round-robin."""
    result = ScenarioResult(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        unit=UNIT,
        settings={
            "connections": CONNECTIONS,
            "lines_per_batch": LINES_PER_BATCH,
            "line_bytes": LINE_BYTES,
            "seconds": options.seconds,
            "warmup": options.warmup,
            "repeat": options.repeat,
            "quick": options.quick,
            "order": "round-robin, rotated by one peer each repetition",
        },
        peers=[],
        started=_now(),
    )
    runnable: list[PeerResult] = []
    for peer in peers:
        entry = PeerResult(peer, skipped=peer.unavailable())
        result.peers.append(entry)
        if entry.skipped is None:
            runnable.append(entry)
        else:
            ctx.progress(f"{NAME}: skipping {peer.name}: {entry.skipped}")

    for rep in range(options.repeat):
        # Rotate the order each repetition: no peer is always first (or last).
        shift = rep % len(runnable) if runnable else 0
        for entry in runnable[shift:] + runnable[:shift]:
            one = _measure(ctx, entry.peer, options, rep + 1)
            entry.runs.append(one)
            shown = (
                f"{one.figure:,.0f} {UNIT}" if one.figure is not None else f"FAILED: {one.error}"
            )
            shares = [
                f"{who} CPU {share:.0%}"
                for who, share in (("server", one.server.get("cpu_share")),
                                   ("loadgen", one.load.get("cpu_share")))
                if isinstance(share, float)
            ]  # fmt: skip
            cpu = f" ({', '.join(shares)})" if shares else ""
            ctx.progress(f"{NAME} [{rep + 1}/{options.repeat}] {entry.peer.name}: {shown}{cpu}")
    result.finished = _now()
    return result


def _measure(ctx: Context, peer: Peer, options: Options, repetition: int) -> Run:
    """One run: start the server, warm up, measure, stop it. Never raises for a bad peer."""
    header = f"{NAME} repetition {repetition}"
    stderr_path = ctx.logs_dir / f"{peer.name}.stderr.log"
    run = Run(repetition, figure=None)
    try:
        with serve(peer, cpu=ctx.pinning.server_cpu, stderr_path=stderr_path, header=header) as srv:
            cpu_before = srv.cpu_seconds()
            load = loadgen.run(
                ctx.loadgen,
                srv.host,
                srv.port,
                connections=CONNECTIONS,
                lines=LINES_PER_BATCH,
                line_bytes=LINE_BYTES,
                warmup=options.warmup,
                seconds=options.seconds,
            )
            cpu_after = srv.cpu_seconds()
            run.load = load.as_dict()
            alive = srv.alive()
            if cpu_before is not None and cpu_after is not None and load.wall_s > 0:
                # The server's CPU share while the client ran: near 100% means the
                # server is CPU-bound; far below means it waits (e.g. on the network).
                server_cpu_share = (cpu_after - cpu_before) / load.wall_s
            else:
                server_cpu_share = None
            if load.error is not None:
                run.error = f"load generator: {load.error}"
            elif not alive:
                run.error = "the server exited during the run"
            elif load.lines <= 0:
                run.error = "no line was echoed in the measuring window"
            else:
                run.figure = load.rate
        run.server = srv.describe() | {"cpu_share": server_cpu_share}
        if srv.died_early and run.error is None:
            run.error, run.figure = "the server exited during the run", None
    except (ServerError, OSError, TimeoutError, RuntimeError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    if run.error is not None:
        run.error += f" (see {stderr_path})"
    return run
