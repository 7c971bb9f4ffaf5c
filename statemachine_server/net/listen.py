"""Listening sockets: bound at once, so the real port is known before serving.

When accepting fails for want of file descriptors or memory (EMFILE, ENFILE,
ENOBUFS, ENOMEM), the server should log it, stop accepting for a second and try
again, rather than spin (trio's rule), and so recover by itself once clients
leave (``tests/test_hostile.py``). asyncio's accept loop nearly does this, but on
such an error it goes on calling ``accept()`` up to ``backlog`` times, logging a
traceback and scheduling a retry each time: :class:`Listener` makes the calls
after the first one in a burst report "nothing to accept" instead. (uvloop
accepts in C and handles this itself.)

A TLS server also sets :attr:`Listener.admit`: a client it refuses (too many
handshakes in progress) is closed as soon as it is accepted, before asyncio
spends a TLS object and its 256 KiB read buffer on it. (uvloop does not call
this ``accept()``: there only the handshake timeout applies.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Listener", "bind_tcp", "bind_unix"]

_OVERLOAD = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener(socket.socket):
    """A listening socket that reports an overload once per burst (see above)."""

    __slots__ = ("admit", "quiet_until")
    quiet_until: float
    #: Called with each accepted client; False: close it at once (see above).
    admit: Callable[[socket.socket], bool] | None

    def accept(self) -> tuple[socket.socket, Any]:
        if time.monotonic() < self.quiet_until:
            raise BlockingIOError(errno.EAGAIN, "accepting paused after an overload")
        while True:
            try:
                conn, address = super().accept()
            except OSError as exc:
                if exc.errno in _OVERLOAD:
                    # asyncio retries after a second; stay quiet for half of that.
                    self.quiet_until = time.monotonic() + 0.5
                raise
            if self.admit is None or self.admit(conn):
                return conn, address
            conn.close()  # refused; the next one, or EAGAIN, ends asyncio's burst


def bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, address = infos[0]
    # The protocol number matters beyond the listener: accepted sockets inherit it, and
    # asyncio sets TCP_NODELAY on a transport only when its socket says IPPROTO_TCP.
    # With 0 there, small replies would wait on Nagle's algorithm for the peer's ACK.
    sock = Listener(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    options = [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)]
    if family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1))
    return _listen(sock, address, backlog, options)


def bind_unix(path: str, backlog: int) -> socket.socket:
    # A socket file left by a server that died is in the way: replace it (asyncio's
    # create_unix_server does the same). Any other kind of file is an error.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    return _listen(Listener(socket.AF_UNIX, socket.SOCK_STREAM), path, backlog, [])


def _listen(
    sock: Listener, address: Any, backlog: int, options: list[tuple[int, int, int]]
) -> Listener:
    # Set up, bind and listen; a socket that fails any step is closed, not leaked.
    sock.quiet_until = 0.0
    sock.admit = None
    try:
        for level, name, value in options:
            sock.setsockopt(level, name, value)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
