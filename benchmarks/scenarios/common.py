"""What the server scenarios share: peers round-robin, one run with a fresh server.

A scenario builds its :class:`~benchmarks.results.ScenarioResult` with
:func:`new_result`, lists its peers with :func:`add_peers`, and calls
:func:`round_robin` with a ``measure(peer, repetition)`` function; that function
usually wraps its body in :func:`with_server`, which starts a fresh server, times
its CPU, catches what can go wrong, and always stops it.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..report import loadavg
from ..results import Context, Options, PeerResult, Run, ScenarioResult
from ..servers import Peer, RunningServer, ServerError, serve

__all__ = ["add_peers", "new_result", "now", "round_robin", "with_server"]

#: Lines of a run's server stderr kept in the JSON (and quoted for our peers).
STDERR_KEEP = 20


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def new_result(
    name: str,
    title: str,
    description: str,
    unit: str,
    options: Options,
    settings: dict[str, Any],
) -> ScenarioResult:
    """A result with the common settings (seconds, warm-up, repeat, order) filled in."""
    common = {
        "seconds": options.seconds,
        "warmup": options.warmup,
        "repeat": options.repeat,
        "quick": options.quick,
        "order": "round-robin, rotated by one peer each repetition",
        "loadavg_at_start": loadavg(),
    }
    return ScenarioResult(
        name=name,
        title=title,
        description=description,
        unit=unit,
        settings=common | settings,
        peers=[],
        started=now(),
    )


def add_peers(ctx: Context, result: ScenarioResult, peers: list[Peer]) -> list[PeerResult]:
    """Add every peer to ``result``; returns those that can run here (others are skipped)."""
    runnable: list[PeerResult] = []
    for peer in peers:
        entry = PeerResult(peer, skipped=peer.unavailable())
        result.peers.append(entry)
        if entry.skipped is None:
            runnable.append(entry)
        else:
            ctx.progress(f"{result.name}: skipping {peer.name}: {entry.skipped}")
    return runnable


def round_robin(
    ctx: Context,
    result: ScenarioResult,
    entries: list[PeerResult],
    options: Options,
    measure: Callable[[Peer, int], Run],
    show: Callable[[Run], str],
) -> None:
    """Measure every entry ``options.repeat`` times, interleaved.

    Each repetition runs every peer once, starting one peer further along, so no
    peer is always first (or last) and slow drift of the machine hits all alike.
    """
    for rep in range(options.repeat):
        shift = rep % len(entries) if entries else 0
        for entry in entries[shift:] + entries[:shift]:
            one = measure(entry.peer, rep + 1)
            entry.runs.append(one)
            shown = show(one) if one.figure is not None else f"FAILED: {one.error}"
            ctx.progress(f"{result.name} [{rep + 1}/{options.repeat}] {entry.peer.name}: {shown}")
    result.finished = now()


def with_server(
    ctx: Context,
    peer: Peer,
    scenario: str,
    repetition: int,
    body: Callable[[RunningServer, Run], None],
) -> Run:
    """One run: start ``peer`` fresh, call ``body(server, run)``, stop the server.

    ``body`` fills in ``run.figure`` (and metrics, load, errors). Around it this
    records the server's CPU share over the body's wall time, whether it died, and
    what it wrote to stderr during the run; any failure becomes ``run.error``.
    Never raises for a misbehaving peer.
    """
    header = f"{scenario} repetition {repetition}"
    stderr_path = ctx.logs_dir / f"{peer.name}.stderr.log"
    offset = stderr_path.stat().st_size if stderr_path.exists() else 0
    run = Run(repetition, figure=None)
    try:
        with serve(peer, cpu=ctx.pinning.server_cpu, stderr_path=stderr_path, header=header) as srv:
            cpu_before, started = srv.cpu_seconds(), time.monotonic()
            body(srv, run)
            cpu_after, wall = srv.cpu_seconds(), time.monotonic() - started
            alive = srv.alive()
        cpu = share = None
        if cpu_before is not None and cpu_after is not None and wall > 0:
            cpu = cpu_after - cpu_before
            share = cpu / wall  # near 100%: the server is CPU-bound; far below: it waits
        run.server = srv.describe() | {"cpu_s": cpu, "cpu_share": share} | run.server
        if (srv.died_early or not alive) and run.error is None:
            run.error = "the server exited during the run"
    except (ServerError, OSError, TimeoutError, RuntimeError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    if run.error is not None:
        run.figure = None
        run.error += f" (see {stderr_path})"
    _note_stderr(run, peer, stderr_path, offset)
    return run


def _note_stderr(run: Run, peer: Peer, path: Path, offset: int) -> None:
    """Keep what the server wrote to stderr during the run; flag it for our peers."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read(1 << 20).decode(errors="replace")
    except OSError:
        return
    lines = [line for line in text.splitlines() if line and not line.startswith("=== ")]
    if not lines:
        return
    run.server["stderr_lines"] = len(lines)
    run.server["stderr_tail"] = lines[-STDERR_KEEP:]
    if peer.ours:
        run.notes.append(
            f"the server wrote {len(lines)} line(s) to stderr, the last: {lines[-1][:200]!r}"
        )
