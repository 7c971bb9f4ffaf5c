"""The scenarios, by name. Each module has ``NAME``, ``TITLE`` and ``run(ctx, peers, options)``.

``peers`` are the peers chosen with ``--peers``: throughput, latency, churn and
memory compare them; the other scenarios (memcache too: its peers speak memcached's
protocol, not line echo) have fixed subjects (see each module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..results import Context, Options, ScenarioResult
from ..servers import Peer
from . import (
    churn,
    fairness,
    filters,
    kernel,
    latency,
    memcache,
    memory,
    soak,
    spec_vs_python,
    throughput,
)

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context, list[Peer], Options], ScenarioResult]


#: Every scenario, in the order ``python -m benchmarks`` runs them.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(m.NAME, m.TITLE, m.run)
        for m in (
            throughput, latency, churn, memory, kernel, filters, spec_vs_python, fairness, memcache,
            soak,
        )
    ]
}  # fmt: skip
