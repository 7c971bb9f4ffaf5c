"""Watching a running server from outside: Prometheus metrics and a health check.

:mod:`.metrics` reads the counters the kernel, the server and the spec keep and
writes them in Prometheus's text format; :mod:`.endpoint` serves that text over
HTTP. :func:`serve_metrics` puts them together for one server.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from ..core.kernel import Kernel
from ..net.server import TCPServer
from .endpoint import MetricsEndpoint, parse_address
from .metrics import CONTENT_TYPE, Source, collect, exposition

__all__ = ["MetricsEndpoint", "serve_metrics"]


def serve_metrics(
    kernel: Kernel, server: TCPServer, address: str, *, runtime: Any = None, name: str = "server"
) -> MetricsEndpoint:
    """Serve ``server``'s metrics at ``http://ADDRESS/metrics`` while ``kernel`` serves.

    Args:
        kernel: the kernel the server runs in.
        server: the server to watch (made with ``metered=True`` to count bytes).
        address: ``HOST:PORT``; port 0 picks a free one (see the endpoint's ``port``).
        runtime: the spec's runtime (protocol states, counted gotos), if any.
        name: the ``server`` label of ``statemachine_server_info``.

    Raises:
        OSError: the address cannot be listened on.
    """
    host, port = parse_address(address)
    try:
        version = metadata.version("statemachine-server")
    except metadata.PackageNotFoundError:  # run from a source tree not installed
        version = ""
    source = Source(kernel, server, runtime, name=name, version=version)
    return MetricsEndpoint(kernel, host, port, lambda: exposition(collect(source)), CONTENT_TYPE)
