"""The spec-vs-python scenario: the same echo+log server as a YAML spec and in Python.

``ours-spec`` (the built-in echo spec: compiled handlers, tick-batched console log)
against ``ours-python-api`` (``peers/ours_python_api.py``: the public Python API,
``sys.stdout.write`` per line), both under the throughput scenario's load, with
the asyncio-raw baseline in the same run. Reports throughput, the spec/python
throughput ratio and the per-message cost ratio (its inverse).

The peers are fixed (``--peers`` does not apply).
"""

from __future__ import annotations

from ..results import Context, Options, Run, ScenarioResult
from ..servers import BASELINE, EXTRA_PEERS, PEERS, Peer
from . import throughput
from .common import add_peers, new_result, round_robin

NAME = "spec-vs-python"
TITLE = "Spec vs Python API: the same echo+log server, throughput"
UNIT = "lines/s"
SPEC, PYTHON = "ours-spec", "ours-python-api"
DESCRIPTION = (
    f"The echo+log server as the built-in YAML spec ({SPEC}) and written with the public "
    f"Python API ({PYTHON}), under the throughput load ({throughput.CONNECTIONS} "
    f"connections, {throughput.LINES_PER_BATCH} pipelined {throughput.LINE_BYTES}-byte "
    "lines per batch); figure = echoed lines per second (median of the runs)."
)


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: the comparison is between fixed peers."""
    chosen = [PEERS[BASELINE], PEERS[SPEC], EXTRA_PEERS[PYTHON]]
    settings = {
        "connections": throughput.CONNECTIONS,
        "lines_per_batch": throughput.LINES_PER_BATCH,
        "line_bytes": throughput.LINE_BYTES,
    }
    result = new_result(NAME, TITLE, DESCRIPTION, UNIT, options, settings)
    runnable = add_peers(ctx, result, chosen)

    def measure(peer: Peer, repetition: int) -> Run:
        return throughput.measure_rate(ctx, peer, options, NAME, repetition,
                                       connections=throughput.CONNECTIONS)  # fmt: skip

    round_robin(ctx, result, runnable, options, measure, lambda r: throughput.show_rate(r, UNIT))
    spec, python = result.peer(SPEC), result.peer(PYTHON)
    if spec and python and spec.median and python.median:
        ratio = spec.median / python.median
        result.extra = {"spec_over_python_throughput": ratio, "spec_over_python_cost": 1 / ratio}
        result.notes.append(
            f"spec / python throughput: **{ratio:.2f}x**; per-message cost spec / python: "
            f"**{1 / ratio:.2f}x** (the inverse: below 1 means a message costs the spec server "
            "less CPU time than the Python API server, at 100% server CPU)."
        )
    else:
        result.problems.append("no spec/python ratio: one of the two has no figure")
    return result
