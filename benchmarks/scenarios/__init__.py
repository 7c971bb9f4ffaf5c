"""The scenarios, by name. Each module has ``NAME``, ``TITLE`` and ``run(ctx, peers, options)``.

``peers`` are the peers chosen with ``--peers``: throughput, latency, churn,
memory, streaming-*, large-* and many-connections compare them; the other
scenarios (memcache too: its peers speak memcached's protocol, not line echo) have
fixed subjects (see each module). ``streaming.py`` and ``large.py`` make one
scenario per depth or line size (their ``VARIANTS``); :data:`GROUPS` names them
together for the command line.
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
    large,
    latency,
    many,
    memcache,
    memory,
    soak,
    spec_vs_python,
    streaming,
    throughput,
)

__all__ = ["GROUPS", "SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context, list[Peer], Options], ScenarioResult]


#: Every scenario, in the order ``python -m benchmarks`` runs them.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        *(Scenario(m.NAME, m.TITLE, m.run) for m in (throughput, latency, churn, memory)),
        *(Scenario(*variant) for variant in streaming.VARIANTS + large.VARIANTS),
        Scenario(many.NAME, many.TITLE, many.run),
        *(Scenario(m.NAME, m.TITLE, m.run)
          for m in (kernel, filters, spec_vs_python, fairness, memcache, soak)),
    ]
}  # fmt: skip

#: Names that stand for several scenarios on the command line.
GROUPS: dict[str, list[str]] = {
    streaming.GROUP: [name for name, _, _ in streaming.VARIANTS],
    large.GROUP: [name for name, _, _ in large.VARIANTS],
}
