"""The supervisor: N worker processes on one port, restarted when they die, replaced
on a reload (``run --workers N``).

Process model. Each worker is ``python -m statemachine_server run`` again, with the
same arguments and environment, plus ``--fd`` (its listening socket) and the
hidden ``--worker-of`` (:mod:`.worker`): a fresh interpreter with its own kernel,
not a fork of this one. Forking after the spec is loaded would start faster and
share the compiled spec's pages, but a reload could not run new Python: a ``call``
module is imported once per process, and a fork would hand every new worker the
supervisor's copy. A fresh process imports the new code, inherits no thread, loop
or descriptor it should not have (``close_fds``, only ``pass_fds``), and runs the
same code path as a single server with an inherited socket. What it costs: each
worker loads the spec itself (the echo spec: a quarter of a second), from the
bytes the supervisor checked (never from the file, which may have changed since).

Workers run in process groups of their own, so a terminal's Ctrl-C reaches the
supervisor only; it passes orders on (:mod:`.worker` says how): the first SIGINT or
SIGTERM has every worker drain, and the supervisor exits 0 once they all have; the
second has them stop at once (even one whose loop a handler holds); a third kills
them. SIGHUP is a reload:

1. the spec is loaded and checked again; if it is refused, its errors are logged
   (``FILE:LINE:COLUMN: message``, one line each) and the running workers go on;
2. N new workers start with it, on the same sockets;
3. once every one of them listens, the old ones hand over: they stop accepting
   (the new ones accept from the same queues), their clients go on under the old
   spec for its ``drain_timeout``, and what is left then drains as on SIGTERM
   (input received is answered, the connection closes).

If a new worker exits or does not listen in time, the reload is abandoned (the
new workers drain) and the old ones go on.

A worker that dies is started again after a delay that doubles from 0.1 s up to
5 s, and is back to 0.1 s for a worker that had lived 10 s (systemd's and Erlang
supervisors' shape: a crash loop costs little, a rare crash is mended at once);
each restart is logged and counted (:attr:`Supervisor.restarts`). A worker of the
first generation that exits before it listens (the metrics port is taken...)
stops the start instead, with its exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from types import FrameType
from typing import IO

from .loaded import Load, Loaded, load_or_report
from .metrics import WorkersMetrics
from .sockets import Sockets
from .worker import DRAIN, HANDOFF, READY, STOP, WorkerLink

__all__ = ["Supervisor"]

log = logging.getLogger("statemachine_server")

#: A worker that does not listen within this many seconds is killed.
START_TIMEOUT = 60.0
#: The restart delays: the first, the largest, and how long a worker must have
#: lived for the next one to be the first again.
FIRST_DELAY = 0.1
MAX_DELAY = 5.0
STEADY = 10.0
#: Seconds past a draining worker's drain_timeout before it is killed.
KILL_GRACE = 5.0
#: The longest the supervisor sleeps without looking at its workers.
POLL = 1.0
_NEVER = float("inf")
#: A worker's metrics port, said after READY (worker.py).
_METRICS_PORT = re.compile(rb"M(\d{1,5});")


@dataclass(eq=False)
class _Generation:
    """The workers of one spec: the first, then one per reload."""

    number: int
    loaded: Loaded
    spec_file: IO[bytes]
    #: The live worker of each slot.
    workers: dict[int, _Worker] = field(default_factory=dict)

    @property
    def drain_timeout(self) -> float:
        return self.loaded.spec.server.limits.drain_timeout

    def complete(self, n: int) -> bool:
        return len(self.workers) == n and all(w.ready for w in self.workers.values())


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    gen: _Generation
    slot: int
    lane: int
    channel: socket.socket  # the supervisor's end
    started: float
    ready: bool = False
    retired: bool = False  # told to drain: not restarted
    handing_over: bool = False  # its clients finish first (a reload)
    deadline: float = _NEVER  # killed then (not listening yet, or not done draining)
    metrics_port: int = 0  # where it serves its metrics (0: none)

    @property
    def name(self) -> str:
        return f"worker {self.slot} (pid {self.proc.pid})"


class Supervisor:
    """Runs ``workers`` copies of ``run`` on ``sockets``; see the module docstring.

    Args:
        workers: how many (2 or more).
        loaded: the spec checked at the start.
        load: loads it again, for a reload.
        sockets: where they listen.
        command: ``run`` with its arguments, as this process was started; each
            worker's own arguments follow them.
        announce: called with where they listen once every first worker does
            (``run`` prints ``listening on ...``).
    """

    def __init__(
        self,
        *,
        workers: int,
        loaded: Loaded,
        load: Load,
        sockets: Sockets,
        command: Sequence[str],
        announce: Callable[[str], None],
        metrics: WorkersMetrics | None = None,
    ):
        if workers < 2:
            raise ValueError("a supervisor runs 2 workers or more")
        self.n = workers
        #: Session id lanes: a generation serving and one draining (worker.py).
        self.lanes = 2 * workers
        self.load = load
        self.sockets = sockets
        self.command = list(command)
        self.announce = announce
        #: The metrics address, served with the sum of the workers' metrics.
        self.metrics = metrics
        #: Workers started again after dying.
        self.restarts = 0
        self._first = loaded
        self._workers: dict[int, _Worker] = {}  # by pid
        self._current: _Generation | None = None
        self._next: _Generation | None = None  # a reload's, until it listens
        self._generations = 0
        self._delay: dict[int, float] = {}  # each slot's next restart delay
        self._due: dict[int, float] = {}  # slot: when its worker starts again
        self._stopping = 0  # SIGINT/SIGTERM heard
        self._reload_wanted = False  # a SIGHUP that waits its turn
        self._started = False  # every first worker listens
        self._status = 0
        self._heard: list[int] = []
        self._selector = selectors.DefaultSelector()

    # -- running ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve until told to stop; the exit status (0, or a failed start's)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._selector.register(wake_r, selectors.EVENT_READ, None)
        if self.metrics is not None:
            self._selector.register(self.metrics.sock, selectors.EVENT_READ, self.metrics)
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
        previous = {signum: signal.getsignal(signum) for signum in signals}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in signals:
            signal.signal(signum, self._on_signal)
        try:
            self._current = self._generation(self._first)
            for slot in range(self.n):
                self._spawn(self._current, slot)
            while self._stopping == 0 or self._workers:
                timeout = max(0.0, min(self._deadline(), monotonic() + POLL) - monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            os.read(wake_r, 512)
                    elif key.data is self.metrics:
                        self.metrics.answer_one(self._metrics_ports, self._stopping > 0)
                    else:
                        self._read(key.data)
                self._signals()
                self._reap()
                self._timers()
        finally:
            self._kill_all()
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            self._selector.close()
            os.close(wake_r)
            os.close(wake_w)
            for gen in (self._current, self._next):
                if gen is not None:
                    gen.spec_file.close()
            self.sockets.close()
            if self.metrics is not None:
                self.metrics.close()
        return self._status

    def _metrics_ports(self) -> list[int]:
        # The workers that listen and have not been told to go: their clients are
        # the server's (a reload's old generation drains, no longer counted).
        return [
            w.metrics_port for w in self._workers.values()
            if w.ready and not w.retired and w.metrics_port
        ]  # fmt: skip

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Noted only: the loop acts on it (set_wakeup_fd has woken it).
        self._heard.append(signum)

    def _signals(self) -> None:
        heard, self._heard = self._heard, []
        for signum in heard:
            if signum == signal.SIGHUP:
                self._reload()
            elif signum != signal.SIGCHLD:
                self._stop(signal.Signals(signum).name)

    def _stop(self, why: str) -> None:
        """The first time: every worker drains; then: they stop now; then: killed."""
        self._stopping += 1
        workers = list(self._workers.values())
        if self._stopping == 1:
            log.info("%s: draining the workers (%d)", why, len(workers))
            self._due.clear()
            self._reload_wanted = False
            for worker in workers:
                self._retire(worker)
        elif self._stopping == 2:
            log.warning("second %s: stopping the workers now", why)
            for worker in workers:
                _send(worker, STOP)
        else:
            log.warning("%s again: killing the workers", why)
            for worker in workers:
                _send(worker, signal.SIGKILL)

    def _deadline(self) -> float:
        times = [*self._due.values(), *(w.deadline for w in self._workers.values())]
        return min(times, default=_NEVER)

    # -- workers -----------------------------------------------------------------------

    def _generation(self, loaded: Loaded) -> _Generation:
        self._generations += 1
        spec_file = tempfile.TemporaryFile()  # noqa: SIM115 (unlinked: gone with its last descriptor; closed by the generation)
        spec_file.write(loaded.source)
        spec_file.flush()
        return _Generation(self._generations, loaded, spec_file)

    def _spawn(self, gen: _Generation, slot: int) -> None:
        used = {w.lane for w in self._workers.values()}
        lane = min(set(range(self.lanes)) - used)  # a dead worker's lane is free again
        sock = self.sockets.take(slot)
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        link = WorkerLink(theirs.fileno(), gen.spec_file.fileno(), slot, lane, self.lanes)
        argv = [*self.command, "--fd", str(sock.fileno()), "--worker-of", link.token()]
        if self.metrics is not None:  # each its own, summed by ours (scale.metrics)
            argv += ["--metrics", "127.0.0.1:0"]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(sock.fileno(), theirs.fileno(), gen.spec_file.fileno()),
                process_group=0,  # a terminal's signals reach the supervisor only
            )
        except OSError as exc:
            ours.close()
            self.sockets.give_back(slot)
            log.error("worker %d: cannot start: %s", slot, exc)
            self._died_early(gen, slot, 1)
            return
        finally:
            theirs.close()
        now = monotonic()
        worker = _Worker(proc, gen, slot, lane, ours, now, deadline=now + START_TIMEOUT)
        self._workers[proc.pid] = worker
        gen.workers[slot] = worker
        self._selector.register(ours, selectors.EVENT_READ, worker)
        log.debug("%s started (generation %d, ids from %d)", worker.name, gen.number, lane + 1)

    def _read(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # it is ending: _reap hears how
            self._selector.unregister(worker.channel)
            return
        port = _METRICS_PORT.search(data)
        if port is not None:
            worker.metrics_port = int(port.group(1))
        if READY in data and not worker.ready:
            worker.ready = True
            if not worker.retired:
                worker.deadline = _NEVER
            self._listening(worker)

    def _listening(self, worker: _Worker) -> None:
        gen = worker.gen
        log.debug("%s listens", worker.name)
        if gen is self._current and not self._started and gen.complete(self.n):
            self._started = True
            log.info("%d workers listening on %s", self.n, self.sockets.where)
            self.announce(self.sockets.where)
        elif gen is self._next and gen.complete(self.n):
            self._switch()

    def _retire(self, worker: _Worker, *, hand_over: bool = False) -> None:
        """Have ``worker`` drain and exit (killed if it takes too long); handing
        over (a reload), its clients have its drain timeout to finish first."""
        if worker.retired and (hand_over or not worker.handing_over):
            return  # told already (a drain now may still follow a hand-over)
        limit = worker.gen.drain_timeout * (2 if hand_over else 1) + KILL_GRACE
        if not worker.ready:  # it has to start first
            limit += START_TIMEOUT
        worker.retired, worker.handing_over = True, hand_over
        with contextlib.suppress(OSError):
            worker.channel.send(HANDOFF if hand_over else DRAIN)
        worker.deadline = min(worker.deadline, monotonic() + limit)

    def _reap(self) -> None:
        for pid, worker in list(self._workers.items()):
            status = worker.proc.poll()
            if status is None:
                continue
            del self._workers[pid]
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.channel)
            worker.channel.close()
            if worker.gen.workers.get(worker.slot) is worker:
                del worker.gen.workers[worker.slot]
            self.sockets.give_back(worker.slot)
            self._exited(worker, status)

    def _exited(self, worker: _Worker, status: int) -> None:
        how = _how(status)
        gen = worker.gen
        if worker.retired or self._stopping:
            log.info("%s %s", worker.name, how)
            return
        if gen is self._next:
            self._abandon(f"{worker.name} {how} before the new workers all listened")
        elif not worker.ready:
            log.error("%s %s before it listened", worker.name, how)
            self._died_early(gen, worker.slot, status)
        else:
            lived = monotonic() - worker.started
            self._restart_later(worker.slot, lived, f"{worker.name} {how} after {lived:.1f} s")

    def _died_early(self, gen: _Generation, slot: int, status: int) -> None:
        if gen is self._current and not self._started:
            # The first start failed: not a crash to mend but a setting to fix.
            self._status = status if status in (1, 2) else 1
            self._stop("the start failed")
        elif gen is self._next:
            self._abandon(f"worker {slot} could not start")
        else:
            self._restart_later(slot, 0.0, f"worker {slot} did not start")

    def _restart_later(self, slot: int, lived: float, what: str) -> None:
        delay = FIRST_DELAY if lived >= STEADY else self._delay.get(slot, FIRST_DELAY)
        self._delay[slot] = min(delay * 2, MAX_DELAY)
        self._due[slot] = monotonic() + delay
        self.restarts += 1
        log.warning("%s; starting it again in %.1f s (restart %d)", what, delay, self.restarts)

    def _timers(self) -> None:
        now = monotonic()
        for slot, when in list(self._due.items()):
            if when <= now:
                del self._due[slot]
                if self._current is not None and slot not in self._current.workers:
                    self._spawn(self._current, slot)
        for worker in list(self._workers.values()):
            if worker.deadline <= now and worker.proc.poll() is None:
                doing = "drain" if worker.retired and worker.ready else "listen"
                log.warning("%s did not %s in time: killing it", worker.name, doing)
                _send(worker, signal.SIGKILL)
                worker.deadline = _NEVER
        if self._reload_wanted and self._can_reload():
            self._reload_wanted = False
            self._reload()

    def _kill_all(self) -> None:
        # Only after an error, or a third signal: every other way out waits for them.
        for worker in self._workers.values():
            _send(worker, signal.SIGKILL)
        for worker in self._workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(KILL_GRACE)
            worker.channel.close()
        self._workers.clear()

    # -- reloading ---------------------------------------------------------------------

    def _can_reload(self) -> bool:
        free = self.lanes - len(self._workers)
        return self._started and self._next is None and free >= self.n and not self._stopping

    def _reload(self) -> None:
        if self._stopping:
            log.info("SIGHUP: shutting down; ignored")
            return
        if not self._can_reload():
            # Not started yet, a reload under way, or the last one's old workers
            # still draining (their session ids are taken): once they are done.
            log.info("SIGHUP: the reload waits for the workers starting or draining now")
            self._reload_wanted = True
            return
        loaded = load_or_report(self.load)
        if loaded is None:
            return
        log.info("SIGHUP: starting %d workers with the spec again", self.n)
        self._next = self._generation(loaded)
        for slot in range(self.n):
            if self._next is not None:  # (abandoned if one cannot start)
                self._spawn(self._next, slot)

    def _switch(self) -> None:
        old, new = self._current, self._next
        assert old is not None and new is not None
        self._current, self._next = new, None
        self._due.clear()  # every slot has its new worker
        for worker in old.workers.values():
            self._retire(worker, hand_over=True)
        old.spec_file.close()  # the old workers have read it; none will start
        log.info("reloaded: %d new workers listen; the %d old ones hand over",
                 self.n, len(old.workers))  # fmt: skip

    def _abandon(self, why: str) -> None:
        gen, self._next = self._next, None
        assert gen is not None
        log.error("reload: %s; the running spec keeps serving", why)
        for worker in list(gen.workers.values()):
            self._retire(worker, hand_over=True)  # some may serve clients already
        gen.spec_file.close()


def _send(worker: _Worker, signum: int) -> None:
    if worker.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signum)


def _how(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"
