"""A worker process's end of its supervisor: its slot, its spec and its orders.

A worker is ``run`` started by the supervisor with ``--fd N`` (its listening
socket, see :mod:`.sockets`) and the hidden ``--worker-of
CHANNEL:SPEC:SLOT:LANE:LANES``, file descriptors and numbers:

- CHANNEL, one end of a socket pair. The worker writes ``R`` once it listens.
  The supervisor writes ``H`` on a reload, once the new workers listen: stop
  accepting (the new worker of the slot accepts from the same socket), let the
  clients finish for ``drain_timeout``, then drain what is left; and ``D`` to
  have it drain now (stop accepting, answer what it received, close, exit), as
  SIGTERM would. End of file, the supervisor gone, drains it too: no worker
  outlives its supervisor by more than a drain. ``D`` is not a
  signal, so that a service manager that signals every process of the service
  (systemd's default) and a supervisor that passes the order on make one drain,
  not a drain and then a stop at once. The supervisor's *second* order, stop
  now, is a signal, SIGQUIT (gunicorn's "quick shutdown" to its workers), which
  acts even while a handler holds the loop (and so has not read ``D``): it
  raises ``SystemExit`` there, as a second SIGTERM does.
- SPEC, an unlinked file holding the bytes of the spec the supervisor checked:
  every worker of a generation runs exactly them, even if the file has changed
  since (a change is taken by a reload, SIGHUP to the supervisor).
- SLOT, which of the N workers it is. Its metrics are on a free port of
  127.0.0.1, which it tells the supervisor (``M<port>;`` after ``R``): the
  supervisor serves the sum of all at the metrics address (scale.metrics).
- LANE and LANES: its session ids are LANE + 1, LANE + 1 + LANES... (the kernel's
  ``session_ids``): never one another worker's, old or new (LANES is 2N: a
  generation serving and one draining).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from types import FrameType
from typing import Any

from ..core.kernel import Kernel
from ..net.server import TCPServer

__all__ = ["WorkerLink"]

log = logging.getLogger("statemachine_server")

#: The worker listens.
READY = b"R"
#: Drain and exit.
DRAIN = b"D"
#: Stop accepting; the clients have drain_timeout to finish, then drain and exit.
HANDOFF = b"H"
#: The signal that stops a worker at once.
STOP = signal.SIGQUIT


class WorkerLink:
    """The ``--worker-of`` token's parts, and what a worker does with them."""

    def __init__(self, channel: int, spec: int, slot: int, lane: int, lanes: int):
        self.channel = channel
        self.spec = spec
        self.slot = slot
        self.lane = lane
        self.lanes = lanes
        self._sock: socket.socket | None = None

    @classmethod
    def parse(cls, token: str) -> WorkerLink:
        """Read a ``--worker-of`` token.

        Raises:
            ValueError: it is not five numbers, or its lane is out of range.
        """
        parts = token.split(":")
        if len(parts) != 5 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError("expected CHANNEL:SPEC:SLOT:LANE:LANES (set by the supervisor)")
        link = cls(*map(int, parts))
        if not link.lane < link.lanes:
            raise ValueError("the lane is out of range")
        return link

    def token(self) -> str:
        """The ``--worker-of`` value for this link."""
        return f"{self.channel}:{self.spec}:{self.slot}:{self.lane}:{self.lanes}"

    @property
    def session_ids(self) -> tuple[int, int]:
        """The kernel's ``session_ids``: the first id and the step."""
        return self.lane + 1, self.lanes

    def read_spec(self) -> bytes:
        """The spec's bytes (the file is closed after).

        Raises:
            OSError: the descriptor is not open.
        """
        chunks = []
        offset = 0
        try:
            # pread: the workers of a generation share the file's offset.
            while chunk := os.pread(self.spec, 1 << 20, offset):
                chunks.append(chunk)
                offset += len(chunk)
        finally:
            os.close(self.spec)
        return b"".join(chunks)

    def _channel(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(fileno=self.channel)
        return self._sock

    def ready(self, server: Any) -> None:
        """Tell the supervisor the server listens (a ``build_server`` ``on_started``)."""
        # And where its metrics are, for the supervisor's one view (scale.metrics).
        metrics = getattr(server, "metrics", None)
        said = READY + (b"M%d;" % metrics.port if metrics is not None else b"")
        try:
            self._channel().sendall(said)
        except OSError as exc:  # the supervisor is gone: its end of file follows
            log.debug("worker: cannot say it is ready: %s", exc)

    def attach(self, kernel: Kernel, drain_timeout: float) -> None:
        """Hand over or drain ``kernel`` when the supervisor says so; drain it when
        the supervisor is gone."""

        async def listen() -> None:
            loop = kernel.running_loop()
            sock = self._channel()
            sock.setblocking(False)

            def drain() -> None:
                if not kernel.shutting_down:
                    kernel.track_task(loop.create_task(kernel.shutdown(drain_timeout)))

            def hand_over() -> None:
                # New clients go to the new workers; this one's finish here under
                # its spec, for drain_timeout at most, then it drains.
                log.info("worker: the new workers listen; clients here have %g s to finish",
                         drain_timeout)  # fmt: skip
                for server in [s for s in kernel.sessions() if isinstance(s, TCPServer)]:
                    # Kept one more turn of the loop: a client accepted just now
                    # becomes a connection then, and must not find the kernel ended.
                    kernel.retain(server)
                    server.close()
                    loop.call_soon(kernel.release, server)
                loop.call_later(drain_timeout, drain)

            def heard() -> None:
                try:
                    data = sock.recv(64)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if HANDOFF in data:
                    hand_over()
                if not data:
                    loop.remove_reader(sock.fileno())
                    log.warning("worker: the supervisor is gone; shutting down")
                if DRAIN in data or not data:
                    drain()

            loop.add_reader(sock.fileno(), heard)

        kernel.on_serve(listen)

    def obey_stop(self) -> None:
        """Make :data:`STOP` stop this process at once (call it first thing)."""

        def stop(signum: int, frame: FrameType | None) -> None:
            log.warning("worker: stopping now")
            raise SystemExit(0)  # unwinds held code; run's finally ends what it started

        signal.signal(STOP, stop)

    def hangup(self) -> None:
        """SIGHUP to a worker: reloads are the supervisor's."""
        log.info("SIGHUP to a worker: ignored (send it to the supervisor, pid %d)", os.getppid())
