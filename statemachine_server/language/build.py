"""Run a loaded spec: the :class:`TCPServer` it declares, with its compiled handlers.

The last step from a spec file to running handlers: the loader (:mod:`.loader`)
validated the spec and compiled it once (:mod:`.compile`); :func:`build_server`
binds that program to a kernel and a console, makes the TLS context and the
outbound clients, and creates the listening server.

This module is also where the old ``statemachine_server.spec.runtime`` path
leads (``compat.py``): it re-exports what that module exported.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..console import ConsoleLog
from ..core.kernel import Kernel
from ..errors import SpecError
from ..net.server import TCPServer
from ..net.tls import server_ssl_context
from .clients import Outbound
from .compile import compile_spec, program_of
from .data import keep
from .model import Spec, TLSSettings
from .pycall import resolve_call
from .runtime import STATE_TIMEOUT, Program

__all__ = [
    "STATE_TIMEOUT", "Program", "beside_spec", "build_server", "compile_spec", "resolve_call",
]  # fmt: skip


def beside_spec(spec: Spec, name: str) -> Path:
    """A file the spec names (``server.tls``, ``server.path``): relative to the spec
    file's folder, as ``call`` modules are found, so the spec runs from anywhere."""
    return spec.base_dir / name


def build_server(
    spec: Spec,
    kernel: Kernel,
    *,
    host: str | None = None,
    port: int | None = None,
    console: ConsoleLog | None = None,
    on_started: Callable[[TCPServer], Any] | None = None,
    heap: dict[str, Any] | None = None,
) -> TCPServer:
    """Create (and bind) the server a spec declares.

    Args:
        spec: a validated spec (from :func:`~.loader.load_spec`).
        kernel: the kernel to run it in.
        host: overrides ``server.host`` (unused with ``server.path``).
        port: overrides ``server.port`` (unused with ``server.path``).
        console: where ``log`` actions write (stdout by default).
        on_started: called with the server once it is being served.
        heap: overrides of ``server.heap`` values (``run --set NAME=VALUE``).

    Raises:
        SpecError: the spec does not compile (a spec from the loader always does),
            or ``server.tls``'s files do not load (before anything listens).
        OSError: the address or socket path cannot be listened on.
    """
    console = console or ConsoleLog(kernel)
    settings = spec.server
    program = program_of(spec)  # the loader's, unless another server runs it
    outbound = None
    if program.clients:
        outbound = Outbound(kernel, program.clients, str(spec.base_dir))
    if settings.log.format == "json":  # its ops append (time, session, state, text)
        console.json = True
    program.runtime.bind(console.lines.append, outbound)
    handlers = dict(program.handlers)
    if outbound is not None:
        handlers["connected"] = _first(outbound.connected, handlers.get("connected"))
        handlers["disconnected"] = _then(handlers.get("disconnected"), outbound.gone)
    context = None if settings.tls is None else _tls_context(spec, settings.tls)
    server = TCPServer(
        kernel,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        on_input=handlers.get("input"),
        on_connected=handlers.get("connected"),
        on_disconnected=handlers.get("disconnected"),
        on_error=handlers.get("error"),
        on_flushed=handlers.get("flushed"),
        on_high=handlers.get("high"),
        on_low=handlers.get("low"),
        on_timeout=handlers.get("timeout"),
        on_started=on_started,
        filter=program.filter_factory,
        handlers=program.named,
        limits=settings.limits,
        path=None if settings.path is None else beside_spec(spec, settings.path),
        ssl=context,
        metered=settings.metrics is not None,
    )
    # The server-wide heap, {server.NAME}: the server session's own heap.
    server.heap.update(name=settings.name, host=server.host, port=server.port)
    bound = program.bound
    for name, value in {**settings.heap, **(heap or {})}.items():
        # Maps and lists bounded as the spec's collections say (data.py).
        server.heap[name] = value if bound is None else keep(value, bound(f"server.{name}"))
    if settings.metrics is not None:
        from ..observe import serve_metrics  # only a server with metrics pays for it

        try:
            server.metrics = serve_metrics(
                kernel, server, settings.metrics, runtime=program.runtime, name=settings.name
            )
        except OSError:
            server.close()  # nothing listens after an error
            raise
    if settings.bus is not None:
        try:
            _start_bus(kernel, settings.bus, settings.name, program)
        except SpecError:
            server.close()
            raise
    if outbound is not None:
        try:
            outbound.start_shared(server)
        except SpecError:
            server.close()
            raise
    return server


def _start_bus(kernel: Kernel, url: str, name: str, program: Program) -> None:
    """``server.bus``: groups, broadcasts and posts across the processes sharing
    that Redis, from when the kernel serves until it is done."""
    from ..bus.redisbus import Bus  # only a server with a bus imports redis

    try:
        bus = Bus(kernel, url, name=name, receiver=program.runtime)
    except ValueError as exc:  # redis-py's reading of the URL
        raise SpecError(f"server.bus: {exc}", url) from None
    program.runtime.attach_bus(bus, kernel)


def _tls_context(spec: Spec, tls: TLSSettings) -> ssl.SSLContext:
    """``server.tls``'s context; a file that does not load is one :class:`SpecError` line."""
    files = {
        key: beside_spec(spec, name)
        for key in ("cert", "key", "client_ca")
        if (name := getattr(tls, key)) is not None
    }
    # ssl names no file when one is missing: try each first, to say which.
    for key, file in files.items():
        try:
            file.open("rb").close()
        except OSError as exc:
            raise SpecError(
                f"cannot read server.tls.{key}: {exc.strerror or exc}", str(file)
            ) from None
    try:
        return server_ssl_context(files["cert"], files.get("key"), client_ca=files.get("client_ca"))
    except OSError as exc:  # ssl.SSLError: not PEM, no key, a key that does not match...
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc))
        others = "".join(f", {key} {file}" for key, file in files.items() if key != "cert")
        raise SpecError(
            f"server.tls does not load{others and f' ({others[2:]})'}: {reason}", str(files["cert"])
        ) from None


def _first(first: Callable[[Any], None], then: Callable[..., Any] | None) -> Callable[[Any], None]:
    if then is None:
        return first

    def both(session: Any) -> None:
        first(session)
        then(session)

    return both


def _then(first: Callable[..., Any] | None, then: Callable[[Any], None]) -> Callable[[Any], None]:
    if first is None:
        return then

    def both(session: Any) -> None:
        try:
            first(session)
        finally:
            then(session)

    return both
