"""The metrics endpoint: ``GET /metrics`` and ``GET /healthz`` over HTTP/1.1, nothing else.

A scraper is one more client, and an untrusted one (the port may be reachable
by more than the monitoring system): a request head is bounded (8 KiB), must
arrive within 5 s, and at most 32 scrapes are answered at once (others get 503).
Each connection answers one request and closes, as Prometheus's own client
library's server does; there is no keep-alive, no body read, no chunking.

``/healthz`` answers ``200 ok`` while the server serves and ``503 draining``
once a graceful shutdown has begun, so that a load balancer stops sending new
clients while the old ones finish.

The socket is bound when the endpoint is made (a port in use is an error before
anything serves, as for the server itself) and served with the kernel's loop; it
closes when the kernel stops serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..core.kernel import Kernel
from ..net.listen import bind_tcp

__all__ = [
    "MAX_HEAD", "MAX_SCRAPES", "READ_TIMEOUT", "MetricsAddressError", "MetricsEndpoint",
    "answer", "parse_address",
]  # fmt: skip

log = logging.getLogger("statemachine_server")

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
MAX_SCRAPES = 32

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}  # fmt: skip


class MetricsAddressError(OSError):
    """The metrics address cannot be listened on (``metrics_address`` says which,
    as ``HOST:PORT``: the server's own port binds too, and this is not it)."""

    def __init__(self, errno: int | None, strerror: str | None, address: str):
        super().__init__(errno, strerror)
        self.metrics_address = address


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port): ``:PORT`` is 127.0.0.1, ``[::1]:PORT`` IPv6."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


class MetricsEndpoint:
    """Serves ``render()`` at ``/metrics`` (``content_type``) and health at ``/healthz``.

    Args:
        kernel: the kernel whose loop serves it, and whose end closes it.
        host: the address to bind.
        port: the port; 0 picks a free one (read it back from :attr:`port`).
        render: the metrics text, made at each scrape.
        content_type: its media type.
    """

    def __init__(
        self,
        kernel: Kernel,
        host: str,
        port: int,
        render: Callable[[], str],
        content_type: str,
    ):
        self.kernel = kernel
        self.render = render
        self.content_type = content_type
        self.active = 0  # scrapes being answered
        self.scrapes = 0  # answered since the start
        self._server: asyncio.Server | None = None
        try:
            self._sock: Any = bind_tcp(host, port, 64)
        except OSError as exc:
            raise MetricsAddressError(exc.errno, exc.strerror, f"{host}:{port}") from None
        self.host, self.port = self._sock.getsockname()[:2]
        kernel.on_serve(self._serve)
        kernel.on_finish(self.close)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def _serve(self) -> None:
        if self._sock is None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Scrape(self), sock=self._sock)
        log.info("metrics at %s", self.url)

    def close(self) -> None:
        """Stop answering (done when the kernel stops serving)."""
        if self._server is not None:
            self._server.close()  # the socket too
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    def respond(self, head: bytes) -> bytes:
        """The whole response to a request ``head`` (request line and headers)."""
        response = answer(head, self.render, self.content_type, self.kernel.shutting_down)
        self.scrapes += 1
        return response


def answer(head: bytes, render: Callable[[], str], content_type: str, draining: bool) -> bytes:
    """The whole response to a request ``head`` (request line and headers):
    ``render()`` at ``/metrics``, health at ``/healthz`` (503 while ``draining``).
    Also what a supervisor of worker processes answers (see scale)."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _response(400, "bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target not in (b"/metrics", b"/healthz"):
        return _response(404, "not found: try /metrics or /healthz\n")
    if method not in (b"GET", b"HEAD"):
        return _response(405, "only GET and HEAD\n", extra="Allow: GET, HEAD\r\n")
    if target == b"/healthz":
        status, body, kind = 200, "ok\n", "text/plain; charset=utf-8"
        if draining:
            status, body = 503, "draining\n"
    else:
        status, body, kind = 200, render(), content_type
    return _response(status, body, kind, head_only=method == b"HEAD")


def _response(
    status: int,
    body: str,
    kind: str = "text/plain; charset=utf-8",
    *,
    extra: str = "",
    head_only: bool = False,
) -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if head_only else data)


class _Scrape(asyncio.Protocol):
    """One scraper's connection: read the head, answer, close."""

    def __init__(self, endpoint: MetricsEndpoint):
        self.endpoint = endpoint
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        endpoint = self.endpoint
        if endpoint.active >= MAX_SCRAPES:
            self._answer(_response(503, "too many scrapes at once\n"))
            return
        endpoint.active += 1
        self.counted = True
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(READ_TIMEOUT, self._answer, _response(408, "too slow\n"))

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._answer(_response(431, "request head too large\n"))
            return
        if end > MAX_HEAD:
            self._answer(_response(431, "request head too large\n"))
            return
        try:
            response = self.endpoint.respond(bytes(self.buffer[:end]))
        except Exception:  # a failing scrape must not take the server with it
            log.exception("metrics: rendering failed")
            response = _response(503, "metrics unavailable: see the server's log\n")
        self._answer(response)

    def _answer(self, response: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.endpoint.active -= 1
            self.counted = False
        self.transport = None
