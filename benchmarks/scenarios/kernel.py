"""The kernel scenario: events and timers per second through our Kernel's queue.

An in-process micro-benchmark (``benchmarks/micro/kernel.py``) in a fresh, pinned
subprocess per repetition: our kernel's self-yield loop, many sessions posting,
``delay(0)`` timers, against a bare ``collections.deque`` dispatch loop measured in
the same process. POE's rates come from ``peers/poe_yield.pl`` (same shapes), run
alternately with it when POE is installed. Ratios: ours / deque, ours / POE.
"""

from __future__ import annotations

from ..results import Context, Options, ScenarioResult
from ..servers import PEERS_DIR, Peer, poe_missing
from .common import new_result, now
from .micro import Samples, cell, python_module, ratio_cell, run_json

NAME = "kernel"
TITLE = "Kernel: events and timers per second (in-process micro-benchmark)"
UNIT = "events/s"
DESCRIPTION = (
    "Events/s through our Kernel's queue (post + dispatch of a no-op handler) versus "
    "a bare collections.deque dispatch loop in the same process and POE's own event "
    "loop; timers/s for delay(0). Higher is better."
)
MANY = 1_000  # sessions in the "many" cases (benchmarks/micro/kernel.py's MANY)

#: POE runs: key -> (events at full size, sessions, yield | delay).
POE_CASES = {
    "poe_yield_1": (100_000, 1, "yield"),
    "poe_yield_many": (200_000, MANY, "yield"),
    "poe_delay_1": (50_000, 1, "delay"),
    "poe_delay_many": (100_000, MANY, "delay"),
}

#: Table rows: label, our case, the deque reference, the POE reference.
ROWS = [
    ("self-yield, 1 session", "kernel_yield_1", "deque_1", "poe_yield_1"),
    (f"self-yield, {MANY:,} sessions", "kernel_yield_many", "deque_many", "poe_yield_many"),
    (f"post to one sink + self-yield, {MANY:,} sessions", "kernel_post_many", "deque_many", None),
    ("timer delay(0) re-armed, 1 session", "kernel_timers_1", None, "poe_delay_1"),
    (f"timer delay(0) re-armed, {MANY:,} sessions", "kernel_timers_many", None, "poe_delay_many"),
]


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: this scenario measures in-process code, not servers."""
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, {"uses_loadgen": False})
    result.method = (
        f"{options.repeat} fresh subprocess(es) pinned to the server CPU, ours and POE "
        "alternating; each case after a warm-up; median (min - max) over repetitions"
    )
    poe_problem = poe_missing()
    samples = Samples()
    for rep in range(options.repeat):
        ours_first = rep % 2 == 0  # alternate who goes first
        for ours in (ours_first, not ours_first):
            if ours:
                _run_ours(ctx, options, rep, samples, result)
            elif poe_problem is None:
                _run_poe(ctx, options, rep, samples, result)
        ctx.progress(f"{NAME} [{rep + 1}/{options.repeat}] done")
    result.finished = now()
    if poe_problem:
        result.notes.append(f"POE columns empty: {poe_problem}")
    result.extra = {"rates": samples.as_dict()}
    result.table = _table(samples)
    return result


def _run_ours(
    ctx: Context, options: Options, rep: int, samples: Samples, result: ScenarioResult
) -> None:
    args = ["--rotate", str(rep)] + (["--quick"] if options.quick else [])
    data, error = run_json(ctx, python_module("benchmarks.micro.kernel", *args))
    for case, figures in (data or {}).items():
        samples.add(case, float(figures["rate"]))
    if error:
        result.problems.append(f"ours, repetition {rep + 1}: {error}")


def _run_poe(
    ctx: Context, options: Options, rep: int, samples: Samples, result: ScenarioResult
) -> None:
    scale = 10 if options.quick else 1
    for key, (events, sessions, kind) in POE_CASES.items():
        argv = ["perl", str(PEERS_DIR / "poe_yield.pl"), str(events // scale), str(sessions), kind]
        data, error = run_json(ctx, argv)
        if data is not None:
            samples.add(key, data["events"] / data["seconds"])
        if error:
            result.problems.append(f"POE {key}, repetition {rep + 1}: {error}")


def _table(samples: Samples) -> list[str]:
    lines = [
        "| case | ours /s: median (min - max) | bare deque /s | ours / deque "
        "| POE /s | ours / POE |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, ours, deque_key, poe_key in ROWS:
        lines.append(
            f"| {label} | {cell(samples, ours)} | {cell(samples, deque_key)} | "
            f"{ratio_cell(samples, ours, deque_key)} | {cell(samples, poe_key)} | "
            f"{ratio_cell(samples, ours, poe_key)} |"
        )
    lines += [
        "",
        f"asyncio `loop.call_soon` chain (the loop's own floor under a 1-session "
        f"self-yield): {cell(samples, 'asyncio_call_soon_1')} callbacks/s.",
        "",
        "By the kernel's fairness rule a tick dispatches only what was queued when it "
        "began, so a lone self-yielding session pays one asyncio loop iteration per "
        "event; with many sessions a tick carries many events.",
        "",
        "Chunked work (a CPU job of tiny steps, steps per CPU second of the process):",
        "",
        "| job | direct /s | session.work(), 1 ms slices /s | ours / direct "
        "| Twisted cooperate(), 10 ms slices /s | Twisted / direct |",
        "|---|---:|---:|---:|---:|---:|",
        f"| trial division, one candidate per step | {cell(samples, 'work_direct')} | "
        f"{cell(samples, 'work_chunked')} | {ratio_cell(samples, 'work_chunked', 'work_direct')} "
        f"| {cell(samples, 'work_twisted')} | "
        f"{ratio_cell(samples, 'work_twisted', 'work_direct')} |",
        "",
    ]
    return lines
