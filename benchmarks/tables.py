"""Small formatting helpers for the scenarios' markdown tables."""

from __future__ import annotations

import statistics

from .results import PeerResult, Spread

__all__ = ["cpu_cells", "median", "num", "ratio", "runs_cell", "spread_cell"]


def num(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators, or "-" for None."""
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None, reference: float | None) -> str:
    """``value / reference`` as "1.23x", or "n/a"."""
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.2f}x"


def median(p: PeerResult | None, metric: str) -> float | None:
    """The median of ``metric`` over a peer's successful runs (None if none)."""
    stat = p.stat(metric) if p is not None else None
    return stat.median if stat is not None else None


def spread_cell(stat: Spread | None, digits: int = 0) -> str:
    """The "min - max" of a spread, or "-"."""
    return "-" if stat is None else f"{num(stat.min, digits)} - {num(stat.max, digits)}"


def cpu_cells(p: PeerResult) -> tuple[str, str]:
    """The server's median CPU share, and the load generator's "median / max"."""
    server = p.server_shares()
    shares = p.loadgen_shares()
    return (
        f"{statistics.median(server):.0%}" if server else "-",
        f"{statistics.median(shares):.0%} / {max(shares):.0%}" if shares else "-",
    )


def runs_cell(p: PeerResult) -> str:
    """Successful runs over runs, e.g. "5/5"."""
    return f"{len(p.samples)}/{len(p.runs)}"
