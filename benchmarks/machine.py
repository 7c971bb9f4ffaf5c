"""What machine the figures come from, and which CPU runs what.

Pinning plan: with two or more usable CPUs, every server runs on one CPU and the
load generator (with the harness itself) on another, so the two never fight for a
core. Pinning is inherited: the harness pins its *calling thread* around the
``fork`` of each child (:func:`pinned`), and the child keeps that mask from its
first instruction on, threads included.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Pinning", "machine_info", "pin_harness", "pinned", "plan_pinning"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Pinning:
    """Which CPU the servers and the load generator run on (None: not pinned)."""

    enabled: bool
    server_cpu: int | None
    loadgen_cpu: int | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_pinning(enabled: bool = True) -> Pinning:
    """Choose CPUs: the servers get the last usable one, the load generator the first."""
    if not enabled:
        return Pinning(False, None, None, "pinning disabled by --no-pin")
    if not hasattr(os, "sched_setaffinity"):
        return Pinning(False, None, None, "os.sched_setaffinity is not available here")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(False, None, None, f"only {len(cpus)} usable CPU: nothing to pin")
    server, loadgen = cpus[-1], cpus[0]
    try:  # probe once: containers may forbid it
        os.sched_setaffinity(0, {loadgen})
    except OSError as exc:
        return Pinning(False, None, None, f"os.sched_setaffinity failed: {exc}")
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(cpus))
    return Pinning(True, server, loadgen, f"server on CPU {server}, loadgen on CPU {loadgen}")


def pin_harness(pinning: Pinning) -> None:
    """Pin the calling thread (the harness's main thread) to the load generator's CPU.

    The load generator and the stdout drain threads start from this thread, so
    they inherit this CPU; servers are started inside :func:`pinned` instead.
    """
    if pinning.enabled and pinning.loadgen_cpu is not None:
        os.sched_setaffinity(0, {pinning.loadgen_cpu})


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the block with the calling thread on ``cpu``; children forked inside inherit it."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """The machine and software the figures were taken on (for the JSON results)."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": load,
        "git": _git_commit(),
    }
