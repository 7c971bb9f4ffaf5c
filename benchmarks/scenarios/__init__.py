"""The scenarios, by name. Each module has ``NAME``, ``TITLE`` and ``run(ctx, peers, options)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..results import Context, Options, ScenarioResult
from ..servers import Peer
from . import throughput

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context, list[Peer], Options], ScenarioResult]


#: Every scenario, in the order ``python -m benchmarks`` runs them.
SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in [Scenario(throughput.NAME, throughput.TITLE, throughput.run)]
}
