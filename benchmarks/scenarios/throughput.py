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

from .. import loadgen
from ..results import Context, Options, Run, ScenarioResult
from ..servers import Peer, RunningServer
from .common import add_peers, new_result, round_robin, with_server

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


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """Measure every available peer ``options.repeat`` times, round-robin."""
    settings = {
        "connections": CONNECTIONS,
        "lines_per_batch": LINES_PER_BATCH,
        "line_bytes": LINE_BYTES,
    }
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, settings)
    runnable = add_peers(ctx, result, peers)

    def measure(peer: Peer, repetition: int) -> Run:
        return measure_rate(ctx, peer, options, NAME, repetition, connections=CONNECTIONS,
                            lines=LINES_PER_BATCH)  # fmt: skip

    round_robin(ctx, result, runnable, options, measure, lambda r: show_rate(r, UNIT))
    return result


def show_rate(run: Run, unit: str) -> str:
    """A run's figure and CPU shares, for the progress line."""
    shares = [
        f"{who} CPU {share:.0%}"
        for who, share in (("server", run.server.get("cpu_share")),
                           ("loadgen", run.load.get("cpu_share")))
        if isinstance(share, float)
    ]  # fmt: skip
    cpu = f" ({', '.join(shares)})" if shares else ""
    return f"{run.figure:,.0f} {unit}{cpu}"


def measure_rate(
    ctx: Context,
    peer: Peer,
    options: Options,
    scenario: str,
    repetition: int,
    *,
    connections: int,
    lines: int = LINES_PER_BATCH,
    mode: loadgen.Mode = "throughput",
) -> Run:
    """One run of the load generator in ``mode``; the figure is its rate (units/s)."""

    def body(srv: RunningServer, run: Run) -> None:
        load = loadgen.run(
            ctx.loadgen,
            srv.host,
            srv.port,
            connections=connections,
            lines=lines,
            line_bytes=LINE_BYTES,
            warmup=options.warmup,
            seconds=options.seconds,
            mode=mode,
        )
        run.load = load.as_dict()
        if load.error is not None:
            run.error = f"load generator: {load.error}"
        elif load.lines <= 0:
            run.error = "nothing was echoed in the measuring window"
        else:
            run.figure = load.rate

    return with_server(ctx, peer, scenario, repetition, body)
