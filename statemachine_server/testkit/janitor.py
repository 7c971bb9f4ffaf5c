"""The janitor: a test that leaves sessions, timers, jobs, processes or sockets behind fails.

Twisted's trial fails a test that leaves the reactor dirty ("Reactor was
unclean": delayed calls still pending, selectables still open) because what one
test leaves running changes the next one, and the test that caused it passes.
The janitor does the same for this package: after a test it looks at

* each kernel it was given: live sessions (with their state, peer and timers),
  jobs, queued events, child processes and pool calls;
* the process itself: sockets open now that were not before the test, and child
  processes started since that still run (zombies, already dead, are not counted).

The second needs Linux's ``/proc``; elsewhere only the kernels are looked at.
A test that leaves something on purpose says so with
``@pytest.mark.allow_leftovers`` (see :mod:`.plugin`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..core.kernel import Kernel, Session

__all__ = [
    "Janitor",
    "Snapshot",
    "Unclean",
    "kernel_leftovers",
    "leftovers_message",
    "process_leftovers",
    "settle",
    "snapshot",
    "wait_settled",
]

_PROC = Path("/proc/self")


class Unclean(AssertionError):
    """What a test left behind (the message lists it)."""


@dataclass(frozen=True)
class Snapshot:
    """The process's open sockets (fd -> description) and running children."""

    sockets: dict[int, str] = field(default_factory=dict)
    children: dict[int, str] = field(default_factory=dict)


def snapshot() -> Snapshot:
    """What the process holds now (empty where ``/proc`` is not there)."""
    return Snapshot(_sockets(), _children())


def process_leftovers(before: Snapshot, after: Snapshot | None = None) -> list[str]:
    """Sockets opened and child processes started since ``before`` and still there."""
    after = after or snapshot()
    found = [
        f"socket left open: fd {fd}, {what}"
        for fd, what in after.sockets.items()
        if before.sockets.get(fd) != what
    ]
    found += [
        f"child process left running: pid {pid}, {what}"
        for pid, what in after.children.items()
        if pid not in before.children
    ]
    return found


def kernel_leftovers(kernel: Kernel, keep: Collection[int] = ()) -> list[str]:
    """What still lives in ``kernel``: its sessions (but those in ``keep``, by id),
    jobs, queued events, child processes and pool calls."""
    found = [_session(kernel, s) for s in kernel.sessions() if s.id not in keep]
    stats = kernel.statistics()
    if stats.jobs:
        found.append(f"{stats.jobs} job(s) still running")
    running = sum(kernel.children.values())
    if running:
        found.append(f"{running} child process(es) of the kernel still running")
    if stats.queue_depth:
        found.append(f"{stats.queue_depth} event(s) still queued")
    if stats.pool_calls or stats.pool_waiting:
        found.append(f"{stats.pool_calls + stats.pool_waiting} pool call(s) not finished")
    return found


def _session(kernel: Kernel, session: Session) -> str:
    kind = type(session).__name__
    parts = [str(session.state)]
    protocol = getattr(session, "protocol_state", None)
    if protocol:
        parts.append(f"protocol state {protocol}")
    ip, port = getattr(session, "remote_ip", ""), getattr(session, "remote_port", 0)
    if ip:
        parts.append(f"client {ip}:{port}")
    timers = sorted(session.timer_ids or ())
    if timers:
        now = kernel.time()
        due = [d for t in timers if (d := kernel.timer_due(t)) is not None]
        soonest = f", next in {min(due) - now:g} s" if due else ""
        parts.append(f"{len(timers)} timer(s){soonest}")
    return f"session {session.id} ({kind}: {', '.join(parts)}) still alive"


class Janitor:
    """Collects what to check after a test: kernels, and the process as it was before.

    Args:
        before: the process's snapshot at the start (taken now by default).
    """

    def __init__(self, before: Snapshot | None = None):
        self.before = before if before is not None else snapshot()
        self.kernels: list[tuple[Kernel, frozenset[int]]] = []
        #: Leftovers found by others (a served spec's own check), to report with these.
        self.found: list[str] = []

    def watch(self, kernel: Kernel, keep: Collection[int] = ()) -> Kernel:
        """Check ``kernel`` after the test (but its sessions in ``keep``)."""
        self.kernels.append((kernel, frozenset(keep)))
        return kernel

    def report(self) -> list[str]:
        """Everything left behind, one line each (empty: clean)."""
        found = list(self.found)
        for kernel, keep in self.kernels:
            found += kernel_leftovers(kernel, keep)
        return found + process_leftovers(self.before)

    def check(self) -> None:
        """Raise :class:`Unclean` listing what is left, if anything is."""
        found = self.report()
        if found:
            raise Unclean(leftovers_message(found))

    async def settle(self, timeout: float = 1.0) -> list[str]:
        """Let the loop finish closing (asyncio closes a socket a turn after its
        transport's ``close()``), up to ``timeout`` seconds; what is still left."""
        return await settle(self.report, timeout)


async def settle(report: Callable[[], list[str]], timeout: float = 1.0) -> list[str]:
    """``report()`` once it is empty, or as it is after ``timeout`` seconds of loop
    turns and short waits (nothing announces that a socket was closed)."""
    deadline = time.monotonic() + timeout
    turns = 0
    while True:
        found = report()
        if not found or time.monotonic() >= deadline:
            return found
        turns += 1
        await asyncio.sleep(0 if turns < 20 else 0.01)


def wait_settled(report: Callable[[], list[str]], timeout: float = 1.0) -> list[str]:
    """:func:`settle` without a loop (sockets closed by other threads)."""
    deadline = time.monotonic() + timeout
    while True:
        found = report()
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def leftovers_message(found: list[str]) -> str:
    """The janitor's failure: what was left, one line each, and what to do."""
    lines = "\n".join(f"  {line}" for line in found)
    return (
        f"the test left things behind (they would change the tests after it):\n{lines}\n"
        "Close clients and stop kernels in the test, or mark it "
        "@pytest.mark.allow_leftovers(reason=...) if that is on purpose."
    )


# -- the process, from /proc ------------------------------------------------------------


def _sockets() -> dict[int, str]:
    try:
        fds = os.listdir(_PROC / "fd")
    except OSError:
        return {}
    found = {}
    for name in fds:
        with contextlib.suppress(OSError, ValueError):
            if os.readlink(_PROC / "fd" / name).startswith("socket:"):
                fd = int(name)
                found[fd] = _describe_socket(fd)
    return found


def _describe_socket(fd: int) -> str:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return "socket"
    with sock:
        kind = {socket.AF_INET: "tcp", socket.AF_INET6: "tcp6", socket.AF_UNIX: "unix"}.get(
            sock.family, str(sock.family)
        )
        if sock.type == socket.SOCK_DGRAM:
            kind = kind.replace("tcp", "udp")
        try:
            here = _address(sock.getsockname())
        except OSError:
            here = "?"
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            listening = 0
        if listening:
            return f"{kind} listening on {here}"
        try:
            return f"{kind} {here} -> {_address(sock.getpeername())}"
        except OSError:
            return f"{kind} {here}"


def _address(address: object) -> str:
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address) or "(unnamed)"


def _children() -> dict[int, str]:
    found: dict[int, str] = {}
    try:
        tasks = os.listdir(_PROC / "task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            for pid_text in (_PROC / "task" / task / "children").read_text().split():
                pid = int(pid_text)
                what = _process(pid)
                if what is not None:
                    found[pid] = what
    return found


def _process(pid: int) -> str | None:
    """A running process's command line; None for a zombie or one gone already."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return None
    return " ".join(a.decode(errors="replace") for a in argv if a)[:200] or "?"
