"""The filters scenario: records per second through each filter, against a naive splitter.

An in-process micro-benchmark (``benchmarks/micro/filters.py``) in a fresh, pinned
subprocess per repetition: ``get()`` of small (16 B) and large (4 KiB) records fed
whole or in 7-byte pieces, and ``put()`` of 16-record batches, each against a naive
``bytes.split`` splitter measured in the same process on the same bytes. The first
table is ``LineFilter``'s default framing; the second has every other filter on the
same cases, with its ratio to the naive splitter of the same run.
"""

from __future__ import annotations

from ..results import Context, Options, ScenarioResult
from ..servers import Peer
from ..tables import num, ratio
from .common import new_result, now
from .micro import Samples, cell, python_module, ratio_cell, run_json

NAME = "filters"
TITLE = "Filters: records per second (in-process micro-benchmark)"
UNIT = "records/s"
DESCRIPTION = (
    "Records/s of statemachine_server.LineFilter get() and put() versus a naive "
    "`buf += data; buf.split(b'\\n')` splitter on the same bytes, in the same process; "
    "then every other filter on the same cases. Higher is better."
)

#: Table rows: label, case key (benchmarks/micro/filters.py's CASES).
ROWS = [
    ("get, 16 B records, whole stream in one chunk", "get_small_whole"),
    ("get, 16 B records, 7-byte pieces", "get_small_7b"),
    ("get, 4 KiB records, whole stream in one chunk", "get_large_whole"),
    ("get, 4 KiB records, 7-byte pieces", "get_large_7b"),
    ("put, 16 B records, batches of 16", "put_small"),
    ("put, 4 KiB records, batches of 16", "put_large"),
]

#: Second table: one row per filter (benchmarks/micro/filters.py's FILTERS).
FILTER_ROWS = [
    ("line, literal `\\r\\n`", "line_crlf"),
    ("line, regex `\\r?\\n`", "line_regex"),
    ("stream (records are reads)", "stream"),
    ("block, fixed size", "block_fixed"),
    ("block, u32 prefix", "block_u32"),
    ("block, netstring", "block_netstring"),
    ("json, untyped (dict)", "json"),
    ("json, typed (Struct)", "json_typed"),
    ("msgpack, untyped (dict)", "msgpack"),
    ("msgpack, typed (Struct)", "msgpack_typed"),
    ("stack: u16 blocks of typed JSON", "stack_u16_json"),
]


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: this scenario measures in-process code, not servers."""
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, {"uses_loadgen": False})
    result.method = (
        f"{options.repeat} fresh subprocess(es) pinned to the server CPU; each case after "
        "a warm-up, repeated for at least 0.3 s per implementation (0.03 s with --quick); "
        "median (min - max) over repetitions"
    )
    samples = Samples()
    mismatched: set[str] = set()
    for rep in range(options.repeat):
        args = ["--rotate", str(rep)] + (["--quick"] if options.quick else [])
        data, error = run_json(ctx, python_module("benchmarks.micro.filters", *args))
        if error:
            result.problems.append(f"repetition {rep + 1}: {error}")
        others = (data or {}).pop("filters", {})
        for name, cases in others.items():
            for case, figures in cases.items():
                samples.add(f"{case}/{name}", float(figures["rate"]))
                if not figures["ok"]:
                    mismatched.add(f"{name} {case}")
        for case, figures in (data or {}).items():
            samples.add(f"{case}/ours", float(figures["ours"]["rate"]))
            samples.add(f"{case}/naive", float(figures["naive"]["rate"]))
            if not figures["same_output"]:
                mismatched.add(case)
        ctx.progress(f"{NAME} [{rep + 1}/{options.repeat}] done")
    result.finished = now()
    for case in sorted(mismatched):
        result.problems.append(f"{case}: wrong records (disagrees with the naive splitter)")
    result.extra = {"rates": samples.as_dict(), "mismatched": sorted(mismatched)}
    result.table = [
        "| case | LineFilter records/s: median (min - max) | naive records/s | "
        "LineFilter / naive |",
        "|---|---:|---:|---:|",
    ]
    result.table += [
        f"| {label} | {cell(samples, f'{key}/ours')} | {cell(samples, f'{key}/naive')} | "
        f"{ratio_cell(samples, f'{key}/ours', f'{key}/naive')} |"
        for label, key in ROWS
    ]
    result.table.append("")
    keys = [key for _, key in ROWS]
    result.table += [
        "Every filter, records/s (median over repetitions) and its ratio to the naive "
        "splitter on the same case in the same run:",
        "",
        "| filter | " + " | ".join(label.replace(" records", "") for label, _ in ROWS) + " |",
        "|---|" + "---:|" * len(ROWS),
        "| naive splitter (baseline) | "
        + " | ".join(num(samples.median(f"{k}/naive")) for k in keys)
        + " |",
        "| line, default | "
        + " | ".join(_with_ratio(samples, f"{k}/ours", f"{k}/naive") for k in keys)
        + " |",
    ]
    result.table += [
        f"| {label} | "
        + " | ".join(_with_ratio(samples, f"{k}/{name}", f"{k}/naive") for k in keys)
        + " |"
        for label, name in FILTER_ROWS
    ]
    result.table.append("")
    return result


def _with_ratio(samples: Samples, key: str, reference: str) -> str:
    value = samples.median(key)
    if value is None:
        return "-"
    return f"{num(value)} ({ratio(value, samples.median(reference))})"
