"""A spec served inside a test: its own kernel, clock and clients, stopped cleanly.

:class:`AsyncSpecServer` loads a spec (a file, or YAML text), builds the server
it declares on a kernel of its own and serves it on the running loop. Its
clients (:mod:`.client`) talk to it

* over in-memory transports (``transport="memory"``, the default): the real
  connection objects, on a transport of two buffers (:mod:`.transport`); no
  socket is connected, nothing waits on the network;
* or over TCP on 127.0.0.1 (``transport="tcp"``), to test what a socket adds.

Its clock is virtual by default (:class:`~statemachine_server.testing.VirtualClock`):
state timeouts, idle timeouts, timers and ``sleep`` in work fire only when the
test calls :meth:`AsyncSpecServer.advance`, which runs them at once. With
``clock="real"`` they fire in their own time, and ``advance`` waits.

The spec runs as compiled, with one ``log`` marker per rule (:mod:`.observe`)
so that failures can name the rule that answered and a run can be measured
for coverage (``observe=False`` runs the spec exactly as loaded). Its ``log``
lines are kept in :attr:`AsyncSpecServer.log`, and the warnings and errors the
server logs (a handler that raised, a client that broke the framing) in
:attr:`AsyncSpecServer.problems`.

What the kit changes for a test, and why: the server listens on 127.0.0.1 with
a port the system picks (``server.path`` and ``server.tls`` are dropped: the
kit tests the protocol, not the socket file or the TLS layer), and the
kernel's watchdog thread is off (nothing blocks on purpose in a test).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from ..console import ConsoleLog
from ..core.kernel import Kernel
from ..language import Spec, build_server, load_spec, load_spec_text
from ..net.server import TCPServer
from ..testing import VirtualClock
from .client import AsyncClient
from .janitor import kernel_leftovers, settle
from .observe import LogLines, Observer, Point, instrument, marker_in

__all__ = ["DEFAULT_TIMEOUT", "AsyncSpecServer", "Loaded", "load"]

#: Seconds an expectation waits for a record, unless told otherwise.
DEFAULT_TIMEOUT = 5.0
#: Seconds a stop gives connections to close, and the kernel to shut down.
_STOP = 2.0
#: Timer firings one advance() lets the loop run between, at most (a periodic
#: timer of 1 ms over an hour would be 3.6 million): the rest fire in one go.
_MAX_FIRINGS = 10_000

Transport = Literal["memory", "tcp"]
ClockKind = Literal["virtual", "real"]


@dataclass(frozen=True)
class Loaded:
    """A loaded spec, with where it came from (for positions)."""

    spec: Spec
    #: The file's name, as errors and rules are named (``<spec>`` for text).
    file: str
    #: Its YAML, for line numbers (None: a spec made in Python).
    text: str | None

    @functools.cached_property
    def instrumented(self) -> tuple[Spec, list[Point]]:
        """The spec with its markers, and the places they mark (made once: a
        spec explored in many conversations is read and walked once)."""
        return instrument(self.spec, self.file, self.text)


def load(
    source: str | Path | Spec | Loaded,
    *,
    server: Mapping[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> Loaded:
    """Load a spec: a :class:`Spec`, a file (a :class:`Path`, or text naming a
    ``.yaml`` or ``.yml`` file) or YAML text. ``server`` replaces ``server:``
    settings, as ``load_spec`` does; ``base_dir`` is where text finds its ``call``
    modules (the current directory by default).

    Raises:
        SpecError: the spec is not valid (``FILE:LINE:COLUMN: what``).
    """
    if isinstance(source, Loaded):
        return source
    if isinstance(source, Spec):
        return Loaded(source, source.origin or "<spec>", None)
    path = _as_path(source)
    if path is not None:
        spec = load_spec(path, server=server)  # a file it cannot read is its SpecError
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        return Loaded(spec, str(path), text)
    assert isinstance(source, str)
    spec = load_spec_text(source, "<spec>", base_dir=base_dir, server=server)
    return Loaded(spec, "<spec>", source)


def _as_path(source: str | Path) -> Path | None:
    if isinstance(source, Path):
        return source
    if "\n" not in source and source.rstrip().endswith((".yaml", ".yml")):
        return Path(source)
    return None


class AsyncSpecServer:
    """A spec served for a test, on the running event loop (the async API; the
    sync one is :class:`~.sync.SpecServer`).

    Args:
        source: the spec: a file (``Path``, or text ending in ``.yaml``), YAML
            text, or a loaded :class:`Spec`.
        heap: values of ``server.heap`` (``run --set NAME=VALUE``).
        server: ``server:`` settings that replace the spec's (``{"limits":
            {"idle_timeout": 5}}``).
        transport: ``"memory"`` (default) or ``"tcp"`` (127.0.0.1, port 0).
        clock: ``"virtual"`` (default: time moves with :meth:`advance`) or ``"real"``.
        timeout: seconds an expectation waits by default.
        observe: watch which rules run (failures name them; coverage).
        base_dir: where a spec given as text finds its ``call`` modules.

    Raises:
        SpecError: the spec is not valid.
        ValueError: an unknown transport or clock.
    """

    def __init__(
        self,
        source: str | Path | Spec | Loaded,
        *,
        heap: Mapping[str, Any] | None = None,
        server: Mapping[str, Any] | None = None,
        transport: Transport = "memory",
        clock: ClockKind = "virtual",
        timeout: float = DEFAULT_TIMEOUT,
        observe: bool = True,
        base_dir: str | Path | None = None,
    ):
        if transport not in ("memory", "tcp"):
            raise ValueError(f"transport must be 'memory' or 'tcp', not {transport!r}")
        if clock not in ("virtual", "real"):
            raise ValueError(f"clock must be 'virtual' or 'real', not {clock!r}")
        settings = dict(server or {})
        # Test on 127.0.0.1, a port of the system's choosing (see the module docstring).
        settings.setdefault("path", None)
        settings.setdefault("tls", None)
        if isinstance(source, Loaded) and server:
            raise ValueError("server settings replace a spec's as it is loaded: pass the file")
        self.loaded = load(source, server=settings, base_dir=base_dir)
        self.spec = self.loaded.spec
        self.transport: Transport = transport
        self.timeout = timeout
        self.heap = dict(heap or {})
        self.clock = VirtualClock() if clock == "virtual" else None
        self.kernel = Kernel(clock=self.clock, watchdog=0)
        self.observer: Observer | None = None
        self._run_spec = self.spec
        if observe:
            self._run_spec, points = self.loaded.instrumented
            self.observer = Observer(points)
        #: The spec's ``log`` lines, as written.
        self.log: list[str] = []
        #: Warnings and errors the server logged (handler errors, protocol errors...).
        self.problems: list[str] = []
        self.clients: list[AsyncClient] = []
        self._server: TCPServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._keep: frozenset[int] = frozenset()
        self._handler = _Problems(self.problems)
        self._console: ConsoleLog | None = None

    # -- starting and stopping ------------------------------------------------------------

    def start(self) -> AsyncSpecServer:
        """Build the server and serve it on the running loop (call it from a coroutine)."""
        loop = asyncio.get_running_loop()
        kernel = self.kernel
        console = ConsoleLog(kernel, stream=cast(TextIO, _LogStream(self.log, self.observer)))
        if self.observer is not None:
            # The marker lines are taken out as they are written (see observe.LogLines).
            console.lines = LogLines(self.observer, keep_own=self.spec.server.log.enabled)
        self._console = console
        self._server = build_server(
            self._run_spec, kernel, host="127.0.0.1", port=0, console=console, heap=self.heap
        )
        if self.observer is not None:
            kernel.add_tick_hook(self.observer.end_tick)
        # What the server itself runs (its session, shared outbound clients) is not a
        # test's leftover while it serves.
        self._keep = frozenset(s.id for s in kernel.sessions())
        logging.getLogger("statemachine_server").addHandler(self._handler)
        self._task = loop.create_task(kernel.serve())
        return self

    async def stop(self) -> list[str]:
        """Close the clients, then shut the server down; what was left behind
        (one line each; see :mod:`.janitor`)."""
        if self._task is None:
            return []
        for client in self.clients:
            await client.close()
        kernel = self.kernel

        # Connections close once their client has: give them the time (a loop
        # turn in memory, a socket's round trip over TCP). In memory on a virtual
        # clock, what is left once the server is idle stays.
        def report() -> list[str]:
            return kernel_leftovers(kernel, self._keep)

        found = report() if await self.quiet() else await settle(report, _STOP)
        await kernel.shutdown(deadline=_STOP)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(_STOP):
                await self._task
        self._task = None
        found += [
            f"after shutdown: {line}" for line in kernel_leftovers(kernel) if line not in found
        ]
        logging.getLogger("statemachine_server").removeHandler(self._handler)
        if self._console is not None:
            self._console.close()
        return found

    async def __aenter__(self) -> AsyncSpecServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what a test uses --------------------------------------------------------------------

    @property
    def server(self) -> TCPServer:
        """The running server (its ``heap``, ``statistics()``...)."""
        if self._server is None:
            raise RuntimeError("the server is not started: call start() first")
        return self._server

    async def connect(self, name: str | None = None) -> AsyncClient:
        """A new client, connected (its ``connected`` handler has run)."""
        client = AsyncClient(self, name or f"client {len(self.clients) + 1}")
        self.clients.append(client)
        await client.open()
        await self.quiet()
        return client

    async def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, firing every timer due on the way
        (with a real clock: wait that long).

        Timer by timer: after each firing the loop runs what it scheduled (a
        closed transport's ``connection_lost``, say) before time moves on, as
        it would in real time, so a connection that closes at a timeout is gone
        before its drain deadline comes, not cut at it.
        """
        clock = self.clock
        if clock is None:
            await asyncio.sleep(seconds)
            return
        if seconds < 0:
            raise ValueError("time does not go backwards")
        await self.quiet()  # input already sent is handled first
        target = clock.now + seconds
        for _ in range(_MAX_FIRINGS):
            due = self.kernel.next_timer_due()
            if due is None or due > target:
                break
            clock.advance(max(0.0, due - clock.now))
            await self.quiet()
        clock.advance(max(0.0, target - clock.now))
        await self.quiet()

    @property
    def can_be_quiet(self) -> bool:
        """Whether the kit can tell that nothing more will happen until the test
        acts: in memory, on a virtual clock, with no outbound connections."""
        return self.clock is not None and self.transport == "memory" and not self.spec.clients

    async def quiet(self) -> bool:
        """Let the loop run what is pending; whether the server is now idle for
        good (see :attr:`can_be_quiet`; False otherwise)."""
        calm = 0
        for _ in range(1000):
            await asyncio.sleep(0)
            calm = calm + 1 if not self._busy() else 0
            if calm >= 2:  # idle across a loop turn: nothing was in flight
                return self.can_be_quiet
        return False

    async def idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight (no event, runnable work, pool call or
        child process), at most ``timeout`` seconds; whether it is so."""
        deadline = time.monotonic() + timeout
        while True:
            await self.quiet()
            if not self._busy():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)  # a pool call or a child: nothing to await here

    def _busy(self) -> bool:
        kernel = self.kernel
        stats = kernel.statistics()
        return bool(
            kernel.busy()
            or stats.jobs_runnable
            or stats.pool_calls
            or stats.pool_waiting
            or any(kernel.children.values())
            or any(c.pending_callbacks for c in self.clients)
        )


class _LogStream:
    """Where the console writes: the spec's log lines, markers taken out (in case
    compiled log actions reach the stream rather than :class:`LogLines`)."""

    def __init__(self, lines: list[str], observer: Observer | None):
        self.lines = lines
        self.observer = observer

    def write(self, text: str) -> int:
        for line in text.splitlines():
            mark = marker_in(line)
            if mark is not None and self.observer is not None and self.observer.marker(mark):
                continue
            self.lines.append(line)
        return len(text)

    def flush(self) -> None:
        pass


class _Problems(logging.Handler):
    """The server's warnings and errors, one line each."""

    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.into.append(f"{record.levelname.lower()}: {record.getMessage()}")
