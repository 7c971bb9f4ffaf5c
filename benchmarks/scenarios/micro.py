"""What the micro-benchmark scenarios share: a fresh, pinned subprocess per repetition.

Each repetition runs ``python -m benchmarks.micro.NAME`` (or a Perl script) once,
on the servers' CPU, bounded in time, and parses the one JSON object it prints.
Figures are medians over the repetitions, with min and max.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from ..machine import REPO_ROOT, pinned
from ..results import Context, Spread, spread
from ..tables import num, ratio, spread_cell

__all__ = ["Samples", "cell", "run_json"]

#: Seconds a micro-benchmark process may take before it is killed.
TIMEOUT_S = 300.0


def run_json(ctx: Context, argv: Sequence[str]) -> tuple[dict[str, Any] | None, str | None]:
    """Run ``argv`` pinned to the servers' CPU; its JSON output, or why there is none."""
    try:
        with pinned(ctx.pinning.server_cpu):
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=REPO_ROOT, text=True,
            )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.returncode is None:  # timed out or interrupted: kill it, by PID
                proc.kill()
                proc.communicate(timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(argv[:4])}: {type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no message"])[-1]
        return None, f"{' '.join(argv[:4])}: exit status {proc.returncode}: {last}"
    try:
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, f"{' '.join(argv[:4])}: no JSON on stdout"
    return data, None


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs a micro-benchmark module with this interpreter."""
    return [sys.executable, "-m", module, *args]


class Samples:
    """Rates collected over repetitions, by key (e.g. ``"kernel_yield_1"``)."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[float]] = {}

    def add(self, key: str, value: float) -> None:
        self.by_key.setdefault(key, []).append(value)

    def stat(self, key: str) -> Spread | None:
        return spread(self.by_key.get(key, []))

    def median(self, key: str) -> float | None:
        stat = self.stat(key)
        return stat.median if stat else None

    def as_dict(self) -> dict[str, Any]:
        return {
            key: {"samples": values} | (s.as_dict() if (s := spread(values)) else {})
            for key, values in self.by_key.items()
        }


def cell(samples: Samples, key: str | None) -> str:
    """A median with its min-max, for a table cell."""
    if key is None:
        return "-"
    stat = samples.stat(key)
    if stat is None:
        return "-"
    return f"{num(stat.median)} ({spread_cell(stat)})"


def ratio_cell(samples: Samples, key: str, reference: str | None) -> str:
    if reference is None:
        return "-"
    return ratio(samples.median(key), samples.median(reference))
