"""Results on disk: one JSON file (everything) and one markdown table (the summary).

Both go to the output directory as ``<scenario>-<UTC timestamp>.json`` / ``.md``.
Ratios are against :data:`~benchmarks.servers.BASELINE` (``asyncio-raw``) and
against ``twisted``; a ratio above 1 means faster than that reference.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from .loadgen import CPU_SHARE_WARNING
from .results import Context, PeerResult, ScenarioResult
from .servers import BASELINE, SECOND_REFERENCE

__all__ = ["loadavg", "stem", "to_json", "to_markdown", "warnings", "write"]

#: Below this CPU share for both server and client, a peer is waiting, not working.
IDLE_SHARE = 0.5


def to_json(result: ScenarioResult, ctx: Context) -> dict[str, Any]:
    """Everything about one scenario run, for later comparison."""
    return {
        "scenario": result.name,
        "title": result.title,
        "description": result.description,
        "unit": result.unit,
        "command": ctx.command,
        "started": result.started,
        "finished": result.finished,
        "machine": ctx.machine,
        "pinning": ctx.pinning.as_dict(),
        "loadgen": ctx.loadgen.describe(),
        "settings": result.settings,
        "baseline": BASELINE,
        "peers": {p.peer.name: p.as_dict() for p in result.peers},
        "warnings": warnings(result, ctx),
        "problems": result.problems,
        "notes": result.notes,
        "results": result.extra,
    }


def warnings(result: ScenarioResult, ctx: Context) -> list[str]:
    """What makes the figures doubtful, or what misbehaved."""
    out: list[str] = list(result.problems)
    if ctx.loadgen.kind != "c" and result.settings.get("uses_loadgen", True):
        out.append(
            f"The load generator is the pure-Python fallback ({ctx.loadgen.note}); it may "
            "be the bottleneck: check its CPU share before reading anything into ratios."
        )
    if not ctx.pinning.enabled:
        out.append(f"Not pinned ({ctx.pinning.note}): server and client share CPUs.")
    for p in result.peers:
        shares = p.loadgen_shares()
        if shares and max(shares) > CPU_SHARE_WARNING:
            out.append(
                f"{p.peer.name}: load generator CPU share reached {max(shares):.0%} "
                f"(over {CPU_SHARE_WARNING:.0%}): the client may be the bottleneck."
            )
        server = p.server_shares()
        if shares and server and max(server) < IDLE_SHARE and max(shares) < IDLE_SHARE:
            out.append(
                f"{p.peer.name}: neither the server ({max(server):.0%} CPU) nor the client "
                f"({max(shares):.0%}) was busy: its figure is bound by waiting (latency, "
                "e.g. Nagle's algorithm against delayed ACKs), not by CPU."
            )
        for r in p.runs:
            if r.error is not None:
                out.append(f"{p.peer.name}, repetition {r.repetition}: {r.error}")
            out += [f"{p.peer.name}, repetition {r.repetition}: {note}" for note in r.notes]
            if r.server.get("killed_after_grace"):
                out.append(
                    f"{p.peer.name}, repetition {r.repetition}: did not exit within the "
                    "grace period after SIGTERM; killed with SIGKILL."
                )
            status = r.server.get("exit_status")
            if p.peer.ours and status not in (0, None) and not r.server.get("killed_after_grace"):
                out.append(
                    f"{p.peer.name}, repetition {r.repetition}: exit status {status} after "
                    "SIGTERM (expected 0)."
                )
    return out


#: What the CPU columns mean, under every table that has them.
CPU_NOTE = (
    "Server CPU: the server's CPU seconds over the client's wall time (warm-up "
    "included); near 100% the server is CPU-bound. Loadgen CPU: the client's share "
    f"of its core; above {CPU_SHARE_WARNING:.0%} the client may be the bottleneck."
)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.2f}x"


def _row(p: PeerResult, base: float | None, second: float | None) -> str:
    if p.status == "skipped":
        return f"| {p.peer.name} | skipped | | | | | | |"
    shares = p.loadgen_shares()
    cpu = f"{statistics.median(shares):.0%} / {max(shares):.0%}" if shares else "-"
    server = p.server_shares()
    server_cpu = f"{statistics.median(server):.0%}" if server else "-"
    spread = f"{_rate(p.min)} - {_rate(p.max)}" if p.samples else "-"
    runs = f"{len(p.samples)}/{len(p.runs)}"
    return (
        f"| {p.peer.name} | {_rate(p.median)} | {spread} | {_ratio(p.median, base)} | "
        f"{_ratio(p.median, second)} | {server_cpu} | {cpu} | {runs} |"
    )


def to_markdown(result: ScenarioResult, ctx: Context) -> str:
    """The summary table, with the conditions it was taken in and any warnings."""
    base = result.peer(BASELINE)
    second = result.peer(SECOND_REFERENCE)
    base_median = base.median if base else None
    second_median = second.median if second else None
    m = ctx.machine
    s = result.settings
    method = result.method or (
        f"fresh server per run, {s['warmup']:g} s warm-up, {s['seconds']:g} s measured, "
        f"{s['repeat']} repetition(s) round-robin across peers; median, min-max"
    )
    lines = [
        f"## {result.title}",
        "",
        result.description,
        "",
        f"- date: {result.started} · git {m.get('git') or '?'} · `{ctx.command}`",
        f"- machine: {m['cpu_model']}, {m['nproc']} CPUs, {m['platform']}, "
        f"Python {m['python']}, load average (1/5/15 min) at start "
        f"{_loadavg(s.get('loadavg_at_start') or m.get('loadavg_at_start'))}, at end "
        f"{_loadavg(s.get('loadavg_at_end'))}",
        f"- pinning: {ctx.pinning.note}",
        _loadgen_line(s, ctx),
        f"- method: {method}",
        "",
    ]
    lines += result.table or _figure_table(result, base_median, second_median)
    if result.peers:
        lines.append("Peers:")
        lines += [
            f"- **{p.peer.name}**: {p.peer.description}"
            + (f" — skipped: {p.skipped}" if p.skipped else "")
            for p in result.peers
        ]
    found = warnings(result, ctx)
    if found:
        lines += ["", "**Warnings:**"]
        lines += [f"- {w}" for w in found]
    if result.notes:
        lines += ["", "Notes:"]
        lines += [f"- {n}" for n in result.notes]
    lines.append("")
    return "\n".join(lines)


def _loadgen_line(settings: dict[str, Any], ctx: Context) -> str:
    """Which client made the load: the line client, a scenario's own, or none."""
    if settings.get("load_generator"):
        return f"- load generator: {settings['load_generator']}"
    if settings.get("uses_loadgen", True):
        return f"- load generator: {ctx.loadgen.kind} ({ctx.loadgen.note})"
    return "- load generator: none (in-process micro-benchmark, in a fresh subprocess)"


def _figure_table(result: ScenarioResult, base: float | None, second: float | None) -> list[str]:
    """The default table: one figure per peer, its spread, ratios and CPU shares."""
    lines = [
        f"| peer | {result.unit} (median) | min - max | vs {BASELINE} | vs {SECOND_REFERENCE} "
        "| server CPU | loadgen CPU (median / max) | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(p, base, second) for p in result.peers]
    lines += ["", CPU_NOTE, ""]
    return lines


def _loadavg(load: list[float] | None) -> str:
    return " ".join(f"{x:.2f}" for x in load or []) or "?"


def loadavg() -> list[float]:
    """The load averages now (empty if unknown): shared machines skew figures."""
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def stem(result: ScenarioResult, ctx: Context) -> Path:
    """``<out>/<scenario>-<UTC start time>``: the results' path without its suffix."""
    stamp = result.started.replace(":", "").replace("-", "").replace("+0000", "Z")
    return ctx.out_dir / f"{result.name}-{stamp}"


def write(result: ScenarioResult, ctx: Context) -> tuple[Path, Path, str]:
    """Write the JSON and markdown files; returns their paths and the markdown."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    result.settings.setdefault("loadavg_at_end", loadavg())
    base = stem(result, ctx)
    json_path = base.with_suffix(".json")
    md_path = base.with_suffix(".md")
    json_path.write_text(json.dumps(to_json(result, ctx), indent=2) + "\n")
    markdown = to_markdown(result, ctx)
    md_path.write_text(markdown)
    return json_path, md_path, markdown
