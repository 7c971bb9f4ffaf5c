"""One metrics view of all the workers: the supervisor's endpoint.

With several workers, the metrics address is the supervisor's. Each worker
serves its own metrics on a free port of 127.0.0.1 and tells the supervisor
which (``M<port>;`` after ``R`` on its channel, see :mod:`.worker`); a scrape of
the supervisor fetches every listening worker's text and answers their sum
(:func:`~..observe.merge.merge`): what an operator asks is how many connections
the server has, not which worker holds them. A worker that does not answer in
time is left out of that scrape (and logged). The supervisor's loop is a plain
selector loop, so a scrape is answered there, blocking: it reads a bounded head
and waits at most ``FETCH_TIMEOUT`` per worker, and the supervisor serves no
client, so nothing else waits on it. A reload keeps the address bound at start.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable

from ..net.listen import bind_tcp
from ..observe.endpoint import MAX_HEAD, MetricsAddressError, answer, parse_address
from ..observe.merge import merge
from ..observe.metrics import CONTENT_TYPE

__all__ = ["FETCH_TIMEOUT", "WorkersMetrics", "fetch"]

log = logging.getLogger("statemachine_server")

#: Seconds a scrape waits for a worker's text, and for the scraper's request.
FETCH_TIMEOUT = 2.0


def fetch(port: int, timeout: float = FETCH_TIMEOUT) -> str:
    """A worker's metrics text from ``127.0.0.1:port`` (OSError if it does not answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n")
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        status = head.split(b"\r\n", 1)[0]
        raise OSError(f"worker metrics on port {port}: {status!r}")
    return body.decode()


class WorkersMetrics:
    """The supervisor's metrics socket, bound at start (an address in use fails
    the start, exit 1, as with one worker)."""

    def __init__(self, address: str):
        host, port = parse_address(address)
        try:
            self.sock = bind_tcp(host, port, 16)
        except OSError as exc:
            raise MetricsAddressError(exc.errno, exc.strerror, f"{host}:{port}") from None
        self.sock.setblocking(False)

    def answer_one(self, ports: Callable[[], Iterable[int]], draining: bool) -> None:
        """Accept one scraper and answer it (called when the socket is readable)."""
        try:
            conn, _ = self.sock.accept()
        except OSError:  # gone before we took it
            return
        with conn:
            conn.settimeout(FETCH_TIMEOUT)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) <= MAX_HEAD:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                request = head.split(b"\r\n\r\n", 1)[0][:MAX_HEAD]
                conn.sendall(answer(request, lambda: self._gather(ports()), CONTENT_TYPE, draining))
            except OSError:  # a scraper that stalled or left
                return

    def _gather(self, ports: Iterable[int]) -> str:
        texts = []
        for port in ports:
            try:
                texts.append(fetch(port))
            except OSError as exc:
                log.warning("metrics: worker on port %d left out of this scrape: %s", port, exc)
        return merge(texts)

    def close(self) -> None:
        self.sock.close()
