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

Sockets made elsewhere: :func:`inherit` takes a listening socket this process
was given (``run --fd``, systemd's socket activation, a supervisor's workers),
and :func:`adopting` has the next :func:`bind_tcp` or :func:`bind_unix` return
it instead of binding, so a server built by code that binds for itself (a spec's
:func:`~statemachine_server.language.build_server`) serves it. Several processes
share a port either so, through one inherited socket, or with ``SO_REUSEPORT``
(``bind_tcp(..., reuse_port=True)``): one socket each, bound to the same port,
between which Linux balances new connections (:func:`reuse_port_balances`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "Listener", "adopting", "bind_tcp", "bind_unix", "inherit", "reserve_tcp",
    "reuse_port_balances", "set_reuse_port",
]  # fmt: skip

_OVERLOAD = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener(socket.socket):
    """A listening socket that reports an overload once per burst (see above)."""

    __slots__ = ("admit", "inherited", "quiet_until")
    quiet_until: float
    #: Called with each accepted client; False: close it at once (see above).
    admit: Callable[[socket.socket], bool] | None
    #: Made by another process or server: a Unix socket's file is not ours to remove.
    inherited: bool

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


#: The socket the next bind_tcp or bind_unix returns instead of binding (see adopting).
_adopted: Listener | None = None
#: Whether bind_tcp sets SO_REUSEPORT when not told (see set_reuse_port).
_reuse_default = False


def reuse_port_balances() -> bool:
    """Whether sockets bound to one port with ``SO_REUSEPORT`` share its new
    connections out (Linux 3.9 on). Elsewhere the option exists on some systems
    but hands every connection to one socket: processes share one socket instead."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def set_reuse_port(enabled: bool) -> None:
    """Have every later :func:`bind_tcp` in this process set ``SO_REUSEPORT``.

    A worker process sets it: the metrics port of its slot is then shared with the
    worker a reload starts in its place, until the old one has drained.
    """
    global _reuse_default
    _reuse_default = enabled


def bind_tcp(
    host: str, port: int, backlog: int, *, reuse_port: bool | None = None
) -> socket.socket:
    """A listening TCP socket; ``reuse_port``: set ``SO_REUSEPORT`` so that other
    sockets with it can bind the same port (default: see :func:`set_reuse_port`).
    Inside :func:`adopting`, the adopted socket instead."""
    adopted = _take_adopted()
    if adopted is not None:
        return adopted
    return _listen(*_tcp_socket(host, port, _reuse_default if reuse_port is None else reuse_port),
                   backlog)  # fmt: skip


def reserve_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound with ``SO_REUSEPORT`` but not listening: it holds the
    port (port 0: a free one, read back with ``getsockname()``) for sockets that
    bind it with ``SO_REUSEPORT`` too, and is given no connections."""
    sock, address, options = _tcp_socket(host, port, True)
    try:
        for level, name, value in options:
            sock.setsockopt(level, name, value)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp_socket(
    host: str, port: int, reuse_port: bool
) -> tuple[Listener, Any, list[tuple[int, int, int]]]:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, proto, _, address = infos[0]
    # The protocol number matters beyond the listener: accepted sockets inherit it, and
    # asyncio sets TCP_NODELAY on a transport only when its socket says IPPROTO_TCP.
    # With 0 there, small replies would wait on Nagle's algorithm for the peer's ACK.
    sock = Listener(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    options = [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)]
    if reuse_port:
        options.append((socket.SOL_SOCKET, socket.SO_REUSEPORT, 1))
    if family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1))
    return sock, address, options


def bind_unix(path: str, backlog: int) -> socket.socket:
    """A listening Unix domain socket at ``path``; inside :func:`adopting`, the
    adopted socket instead."""
    adopted = _take_adopted()
    if adopted is not None:
        return adopted
    # A socket file left by a server that died is in the way: replace it (asyncio's
    # create_unix_server does the same). Any other kind of file is an error.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    return _listen(Listener(socket.AF_UNIX, socket.SOCK_STREAM), path, [], backlog)


def inherit(fd: int) -> Listener:
    """The listening stream socket on file descriptor ``fd``, which this process
    was given (it takes the descriptor over: closing the socket closes it).

    Raises:
        ValueError: ``fd`` is no open socket, or not a listening stream socket.
    """
    try:
        sock = Listener(fileno=fd)
    except OSError as exc:
        raise ValueError(f"file descriptor {fd}: {exc.strerror or exc}") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()  # not ours to close
        raise ValueError(f"file descriptor {fd} is not a listening stream socket")
    _ready(sock)
    sock.inherited = True
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def adopting(sock: socket.socket) -> Iterator[None]:
    """Within it, the first :func:`bind_tcp` or :func:`bind_unix` returns ``sock``
    (a listening socket) instead of binding; it is closed on leaving if none did.
    One at a time, in the thread that builds servers."""
    global _adopted
    if _adopted is not None:
        raise RuntimeError("adopting: a socket is adopted already")
    if not isinstance(sock, Listener):
        sock = inherit(sock.detach())
    _adopted = sock
    try:
        yield
    finally:
        left, _adopted = _adopted, None
        if left is not None:
            left.close()


def _take_adopted() -> Listener | None:
    global _adopted
    sock, _adopted = _adopted, None
    return sock


def _ready(sock: Listener) -> None:
    sock.quiet_until = 0.0
    sock.admit = None
    sock.inherited = False


def _listen(
    sock: Listener, address: Any, options: list[tuple[int, int, int]], backlog: int
) -> Listener:
    # Set up, bind and listen; a socket that fails any step is closed, not leaked.
    _ready(sock)
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
