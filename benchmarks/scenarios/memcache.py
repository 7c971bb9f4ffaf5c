"""The memcache scenario: a protocol workload, pipelined memcached get/set, commands/s.

Three servers, each started fresh per run, interleaved round-robin and pinned as
in the throughput scenario:

* ``ours-memcache-spec``: ``statemachine_server run specs/memcache-lite.yaml``;
* ``asyncio-memcache``: ``peers/asyncio_memcache.py``, the same commands
  hand-written on ``asyncio.Protocol``: **the reference of the ratios** (the bar:
  our spec at 0.5x or more of it);
* ``memcached``: the real one, one worker thread; skipped if not installed.

The client is ``benchmarks/mcloadgen.py`` (one Python process on the load
generator's CPU, whatever ``--loadgen`` says: the C client speaks only line
echo). It checks each server's replies with a probe of set/get/delete, fills the
1,000-key keyspace, then keeps 50 connections busy: each writes 16 commands (4
groups of one ``set`` of a 100-byte value and three ``get``) in one write, reads
until all 16 replies are in, and writes the next batch. Every reply byte is
compared with the reply it must be; any difference fails the run. Figure:
commands answered per second (median of the runs). Only the wire protocol is
assumed of the servers.

The peers are fixed (``--peers`` does not apply).
"""

from __future__ import annotations

import sys

from .. import loadgen
from ..report import CPU_NOTE
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import Peer, RunningServer, memcache_peers
from ..tables import cpu_cells, num, ratio, runs_cell
from . import throughput
from .common import add_peers, new_result, round_robin, with_server

NAME = "memcache"
TITLE = "Memcache: pipelined get/set over 50 connections"
UNIT = "commands/s"

CONNECTIONS = 50
COMMANDS_PER_BATCH = 16  # 4 x (1 set + 3 get)
KEYS = 1000
VALUE_BYTES = 100
OURS, REFERENCE, MEMCACHED = "ours-memcache-spec", "asyncio-memcache", "memcached"
#: The bar: our spec's throughput over the hand-written asyncio server's.
TARGET = 0.5
#: Seconds for the client's probe, fill and connects, beyond warm-up + window.
SETUP_SLACK = 15.0

DESCRIPTION = (
    f"{CONNECTIONS} connections, each writing {COMMANDS_PER_BATCH} pipelined memcached "
    f"text-protocol commands in one write (groups of one `set` of a {VALUE_BYTES}-byte value "
    f"and three `get`, keys from a {KEYS:,}-key keyspace filled beforehand), waiting for all "
    "replies (each checked byte for byte), then the next batch; figure = commands answered "
    f"per second (median of the runs); ratios to {REFERENCE}."
)


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: the comparison is between fixed peers."""
    settings = {
        "connections": CONNECTIONS,
        "commands_per_batch": COMMANDS_PER_BATCH,
        "keys": KEYS,
        "value_bytes": VALUE_BYTES,
        "reference": REFERENCE,
        "target_ratio": TARGET,
        "uses_loadgen": False,  # not the line client: see load_generator
        "load_generator": "benchmarks/mcloadgen.py (Python, one process, pinned like the "
        "line client; every reply checked)",
    }
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, settings)
    runnable = add_peers(ctx, result, memcache_peers())

    def measure(peer: Peer, repetition: int) -> Run:
        return with_server(
            ctx, peer, NAME, repetition, lambda srv, r: _body(srv, r, options)
        )  # fmt: skip

    round_robin(ctx, result, runnable, options, measure, lambda r: throughput.show_rate(r, UNIT))
    result.table = _table(result)
    _summarise(result)
    return result


def _body(srv: RunningServer, run: Run, options: Options) -> None:
    argv = [
        sys.executable, "-m", "benchmarks.mcloadgen", srv.host, str(srv.port),
        str(CONNECTIONS), str(COMMANDS_PER_BATCH), str(KEYS), str(VALUE_BYTES),
        f"{options.warmup:g}", f"{options.seconds:g}",
    ]  # fmt: skip
    budget = options.warmup + options.seconds + loadgen.RUN_SLACK + SETUP_SLACK
    with loadgen.Client(argv, budget) as client:
        load = client.finish()
    run.load = load.as_dict()
    raw = load.raw
    if load.error is not None:
        run.error = f"load generator: {load.error}"
    elif load.lines <= 0:
        run.error = "no command was answered in the measuring window"
    elif raw.get("stored", 0) + raw.get("end", 0) != load.lines or not raw.get("stored"):
        stored, ends = raw.get("stored"), raw.get("end")
        run.error = f"reply counts do not add up: {stored} STORED + {ends} END for {load.lines}"
    else:
        run.figure = load.rate
        run.metrics = {"stored_per_s": raw["stored"] / load.window_s,
                       "end_per_s": raw["end"] / load.window_s}  # fmt: skip


def _table(result: ScenarioResult) -> list[str]:
    reference = result.peer(REFERENCE)
    base = reference.median if reference else None
    lines = [
        f"| peer | {UNIT} (median) | min - max | vs {REFERENCE} | server CPU "
        "| loadgen CPU (median / max) | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result.peers:
        lines.append(_row(p, base))
    return [*lines, "", CPU_NOTE, ""]


def _row(p: PeerResult, base: float | None) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped | | | | | |"
    server, client = cpu_cells(p)
    spread = f"{num(p.min)} - {num(p.max)}" if p.samples else "-"
    return (
        f"| {p.peer.name} | {num(p.median)} | {spread} | {ratio(p.median, base)} | {server} "
        f"| {client} | {runs_cell(p)} |"
    )


def _summarise(result: ScenarioResult) -> None:
    """Ratios to the reference in ``extra`` and the notes; the bar, met or not."""
    reference = result.peer(REFERENCE)
    base = reference.median if reference else None
    rates = {p.peer.name: p.median for p in result.peers if p.median}
    result.extra = {
        "commands_per_s": rates,
        "ratio_to_reference": {name: rate / base for name, rate in rates.items()} if base else {},
        "reference": REFERENCE,
        "target_ratio": TARGET,
    }
    ours = rates.get(OURS)
    if ours is None or base is None:
        result.problems.append(f"no {OURS} / {REFERENCE} ratio: one of the two has no figure")
        return
    share = ours / base
    result.extra["target_met"] = share >= TARGET
    verdict = "met" if share >= TARGET else "**not met**"
    result.notes.append(
        f"{OURS} / {REFERENCE}: **{share:.2f}x** (the bar: {TARGET:g}x or more: {verdict})."
    )
    real = rates.get(MEMCACHED)
    if real is not None:
        result.notes.append(
            f"{MEMCACHED} / {REFERENCE}: {real / base:.2f}x; {OURS} / {MEMCACHED}: "
            f"{ours / real:.2f}x. memcached's figure is a floor when the client's CPU share "
            "nears 100% (one Python client process)."
        )
