"""SIGHUP in a single process (``run`` without ``--workers``): the spec again, in
place, without a supervisor and without dropping a client.

The new spec's server is built in the same kernel, on a duplicate of the running
server's listening socket (:meth:`~statemachine_server.net.server.TCPServer.handover`
and :func:`~statemachine_server.net.listen.adopting`): no second bind, no
``SO_REUSEPORT``, the same accept queue, a Unix socket file included. Once it
listens, the old server stops accepting. Its clients go on under the old spec
for its ``drain_timeout``; what is left of it then (connections, shared outbound
clients) drains as on SIGTERM: input already received is answered, then the
connection closes, and what is still there after another ``drain_timeout`` is
cut off. (Closing them at once would close a client that connected just before
the switch and has not sent its request yet.) Session ids come from the one
kernel, so they stay unique.

What a reload does not change: where the server listens (the socket stays; a new
``server.host``, ``port`` or ``path`` is warned about and takes a restart), the log
format ``run`` started with, and Python a ``call`` names (a module is imported
once per process: ``run --workers`` starts fresh processes, which import it again).
The metrics endpoint is closed and opened again for the new server (its counters
start from zero, as after a restart).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..core.kernel import Kernel, Session
from ..errors import SpecError
from ..language.report import one_line
from ..net.listen import adopting
from ..net.server import TCPServer
from .loaded import Load, Loaded, load_or_report

__all__ = ["Reloader"]

log = logging.getLogger("statemachine_server")

#: ``build(loaded, on_started)``: the spec's server, as ``run`` builds it.
Build = Callable[[Loaded, Callable[[TCPServer], Any]], TCPServer]


class Reloader:
    """What SIGHUP does to a single ``run`` process (its ``on_hangup``).

    Args:
        kernel: the kernel serving.
        server: the spec's server, serving.
        loaded: the spec it serves.
        load: loads the spec again.
        build: builds a spec's server in ``kernel`` (binding: the caller adopts).
    """

    def __init__(
        self, kernel: Kernel, server: TCPServer, loaded: Loaded, *, load: Load, build: Build
    ):
        self.kernel = kernel
        self.server = server
        self.loaded = loaded
        self.load = load
        self.build = build
        #: Reloads done.
        self.reloads = 0
        self._building: TCPServer | None = None  # built, not listening yet
        self._mark = 0  # the highest session id before the build

    def __call__(self) -> None:
        """Reload (in the loop, between ticks)."""
        if self._building is not None:
            log.warning("SIGHUP: the last reload's server is not listening yet; ignored")
            return
        loaded = load_or_report(self.load)
        if loaded is None:
            return
        old = self.server
        settings, before = loaded.spec.server, self.loaded.spec.server
        if (settings.host, settings.port, settings.path) != (before.host, before.port, before.path):
            log.warning("reload: the server goes on listening where it listened; a new "
                        "server.host, port or path takes a restart")  # fmt: skip
        self._mark = max((s.id for s in self.kernel.sessions()), default=0)
        # The metrics address is the new server's to bind.
        metrics = old.metrics
        if metrics is not None:
            metrics.close()
        try:
            with adopting(old.handover()):
                self._building = self.build(loaded, lambda new: self._switch(new, loaded))
        except (SpecError, OSError) as exc:  # TLS files, the metrics port
            log.error("reload: %s; the running spec keeps serving", one_line(exc))
            if metrics is not None:
                self._reopen_metrics(old, metrics.host, metrics.port)
            return

    def _switch(self, new: TCPServer, loaded: Loaded) -> None:
        # The new server listens: the old one stops accepting; its clients finish
        # under the old spec, for its drain_timeout at most, then drain.
        old, mark = self.server, self._mark
        new.owns_path, old.owns_path = old.owns_path, False
        old.close()
        grace = self.loaded.spec.server.limits.drain_timeout
        self.kernel.running_loop().call_later(grace, self._wind_down, old, mark, grace)
        self.server, self.loaded, self._building = new, loaded, None
        self.reloads += 1
        log.info("reloaded: new clients get the new spec; the old one's have %g s to finish",
                 grace)  # fmt: skip

    def _wind_down(self, old: TCPServer, mark: int, deadline: float) -> None:
        # What is left of the old spec drains as on SIGTERM: its connections (those
        # it accepted as it closed too), its shared outbound clients...
        leaving = [
            s
            for s in self.kernel.sessions()
            if s is not old and (s.id <= mark or getattr(s, "server", None) is old)
        ]
        if leaving:
            log.info("reload: %d sessions of the old spec still open; draining them",
                     len(leaving))  # fmt: skip
        for session in leaving:
            session.begin_shutdown()
        self.kernel.running_loop().call_later(deadline, self._cut_off, leaving)

    def _cut_off(self, leaving: list[Session]) -> None:
        left = [s for s in leaving if self.kernel.session(s) is s]
        if left:
            log.warning("reload: %d sessions of the old spec still busy; cutting them off",
                        len(left))  # fmt: skip
        for session in left:
            session.abort()

    def _reopen_metrics(self, old: TCPServer, host: str, port: int) -> None:
        from ..observe import serve_metrics  # as build_server: only with metrics

        spec = self.loaded.spec
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # where it was
        try:
            old.metrics = serve_metrics(
                self.kernel, old, address, runtime=spec.program.runtime, name=spec.server.name
            )
        except OSError as exc:
            log.error("reload: the metrics endpoint cannot be opened again: %s", one_line(exc))
