"""What a benchmark run produces: runs, per-peer figures, per-scenario results.

Plain data, shared by the scenarios (which fill it in) and the report (which
renders it). A *run* is one server start + one load generator run; a peer's
*figure* is the median of its successful runs, with their min and max.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .loadgen import Loadgen
from .machine import Pinning
from .servers import Peer

__all__ = ["Context", "Options", "PeerResult", "Run", "ScenarioResult", "Spread", "spread"]

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class Options:
    """How long and how often to measure (from the command line)."""

    seconds: float  # measuring window per run
    warmup: float  # traffic before each window, not counted
    repeat: int  # runs per peer; the figure is their median
    quick: bool
    #: ``--seconds`` as given on the command line (None: each scenario's default).
    #: The soak scenario has its own default duration, so it needs to know.
    seconds_given: float | None = None


@dataclass
class Context:
    """What every scenario needs: where to write, how to load, where to pin."""

    out_dir: Path
    logs_dir: Path
    loadgen: Loadgen
    pinning: Pinning
    machine: dict[str, Any]
    command: str
    progress: Callable[[str], None]


@dataclass
class Run:
    """One measurement: a fresh server, a warm-up, a measuring window."""

    repetition: int
    figure: float | None  # None: the run failed
    error: str | None = None
    load: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    #: Secondary figures of the run (e.g. ``p99_us``); the report takes their medians.
    metrics: dict[str, float] = field(default_factory=dict)
    #: What the report should flag about this run without failing it.
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "repetition": self.repetition,
            "figure": self.figure,
            "error": self.error,
            "metrics": self.metrics,
            "notes": self.notes,
            "loadgen": self.load,
            "server": self.server,
        }


@dataclass(frozen=True)
class Spread:
    """The median of some samples, with their min and max."""

    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def spread(samples: list[float]) -> Spread | None:
    """Median, min and max of ``samples``; None if there are none."""
    if not samples:
        return None
    return Spread(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass
class PeerResult:
    """Every run of one peer in one scenario."""

    peer: Peer
    skipped: str | None = None  # why the peer did not run at all
    runs: list[Run] = field(default_factory=list)

    @property
    def samples(self) -> list[float]:
        return [r.figure for r in self.runs if r.figure is not None]

    @property
    def status(self) -> Status:
        if self.skipped is not None:
            return "skipped"
        return "ok" if self.samples else "failed"

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def min(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None

    @property
    def figures(self) -> Spread | None:
        """Median, min and max of the run figures."""
        return spread(self.samples)

    def stat(self, metric: str) -> Spread | None:
        """Median, min and max of ``metric`` over the successful runs that have it."""
        return spread([r.metrics[metric] for r in self.runs if r.figure is not None
                       and metric in r.metrics])  # fmt: skip

    def loadgen_shares(self) -> list[float]:
        """The load generator's CPU share (whole process) in each run that measured."""
        return [float(r.load["cpu_share"]) for r in self.runs if "cpu_share" in r.load]

    def server_shares(self) -> list[float]:
        """The server's CPU share in each run (over the load generator's wall time)."""
        return [float(s) for r in self.runs if (s := r.server.get("cpu_share")) is not None]

    def as_dict(self) -> dict[str, Any]:
        shares = self.loadgen_shares()
        server = self.server_shares()
        return {
            "description": self.peer.description,
            "command": list(self.peer.argv),
            "logs_each_line": self.peer.logs,
            "ours": self.peer.ours,
            "status": self.status,
            "skipped": self.skipped,
            "samples": self.samples,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "loadgen_cpu_share": {
                "median": statistics.median(shares) if shares else None,
                "max": max(shares) if shares else None,
            },
            "server_cpu_share": {
                "median": statistics.median(server) if server else None,
                "max": max(server) if server else None,
            },
            "metrics": {
                name: stat.as_dict()
                for name in sorted({m for r in self.runs for m in r.metrics})
                if (stat := self.stat(name)) is not None
            },
            "runs": [r.as_dict() for r in self.runs],
        }


@dataclass
class ScenarioResult:
    """A scenario's outcome: what was measured, how, and every peer's runs."""

    name: str
    title: str
    description: str
    unit: str  # of the figures, e.g. "lines/s"
    settings: dict[str, Any]
    peers: list[PeerResult]
    started: str = ""
    finished: str = ""
    notes: list[str] = field(default_factory=list)
    #: The method line of the report (default: built from the settings).
    method: str = ""
    #: The scenario's own markdown table (lines); empty: the default figure table.
    table: list[str] = field(default_factory=list)
    #: Scenario-specific results for the JSON file (e.g. micro-benchmark cases).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Failures outside the peers' runs (e.g. a micro-benchmark that crashed).
    problems: list[str] = field(default_factory=list)

    def peer(self, name: str) -> PeerResult | None:
        return next((p for p in self.peers if p.peer.name == name), None)

    def failed_runs(self) -> int:
        runs = sum(1 for p in self.peers for r in p.runs if r.figure is None)
        return runs + len(self.problems)
