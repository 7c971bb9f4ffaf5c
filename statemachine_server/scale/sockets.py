"""The listening sockets a supervisor hands its workers, and inherited ones.

Where the system balances ``SO_REUSEPORT`` sockets (Linux), each worker slot has
a socket of its own, all bound to the one port, and the kernel shares new
connections out between them. The supervisor makes them, not the workers: a
reload then hands slot *i*'s socket, with the connections already in its accept
queue, to the new worker of slot *i* before the old one stops accepting, so no
queued connection is ever reset. (A socket a worker bound for itself would take
its queue with it when that worker stops accepting: Linux resets those clients
unless ``net.ipv4.tcp_migrate_req`` is set.) A slot's socket lives as long as a
worker serves it: a worker that dies alone takes it along, so that new
connections go to the other slots until its replacement is up.

Elsewhere, and for a Unix socket or an inherited one (``--fd``, systemd's
``LISTEN_FDS``), every worker serves the same socket: the processes then take
turns at one accept queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import MutableMapping

from ..net.listen import bind_tcp, bind_unix, reserve_tcp, reuse_port_balances

__all__ = ["Sockets", "systemd_fds"]

log = logging.getLogger("statemachine_server")

#: systemd passes sockets from this descriptor on (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


def systemd_fds(env: MutableMapping[str, str]) -> list[int]:
    """The sockets systemd passed this process (``LISTEN_FDS``, for our
    ``LISTEN_PID``), removing its variables so that no child takes them for its
    own (sd_listen_fds(3) with ``unset_environment``). None: an empty list.

    Raises:
        ValueError: ``LISTEN_FDS`` is not a number.
    """
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = env.get("LISTEN_FDS", "0")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not count.isdigit():
        raise ValueError(f"LISTEN_FDS={count!r}: expected a number of sockets")
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


class Sockets:
    """The listening sockets of a supervisor's worker slots.

    Make them with :meth:`tcp`, :meth:`unix` or :meth:`shared`; a worker of a slot
    is given :meth:`take` ``(slot)``, and :meth:`give_back` when it has ended.
    """

    def __init__(self, where: str, shared: socket.socket | None, path: str | None = None):
        #: Where they listen, as ``listening on`` says it.
        self.where = where
        self._shared = shared
        self._path = path  # a Unix socket file to remove at the end
        self._slots: dict[int, socket.socket] = {}
        self._users: dict[int, int] = {}  # the workers serving each slot's socket
        self._reserved: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._backlog = 0

    @classmethod
    def open(
        cls, inherited: socket.socket | None, path: str | None, host: str, port: int, backlog: int
    ) -> Sockets:
        """The ``inherited`` socket if any, else a Unix socket at ``path`` if any, else
        TCP sockets on ``host:port`` (see :meth:`shared`, :meth:`unix`, :meth:`tcp`).

        Raises:
            OSError: the address cannot be listened on.
        """
        if inherited is not None:
            return cls.shared(inherited)
        if path is not None:
            return cls.unix(path, backlog)
        return cls.tcp(host, port, backlog)

    @classmethod
    def shared(cls, sock: socket.socket) -> Sockets:
        """One socket every worker serves (inherited: it is not removed at the end)."""
        name = sock.getsockname()
        where = str(name) if sock.family == socket.AF_UNIX else f"{name[0]}:{name[1]}"
        return cls(where, sock)

    @classmethod
    def unix(cls, path: str, backlog: int) -> Sockets:
        """One Unix socket at ``path`` that every worker serves, removed at the end.

        Raises:
            OSError: it cannot be made.
        """
        return cls(path, bind_unix(path, backlog), path)

    @classmethod
    def tcp(cls, host: str, port: int, backlog: int) -> Sockets:
        """Sockets on ``host:port`` (0: a free port): one per slot where the system
        balances ``SO_REUSEPORT``, else one for all.

        Raises:
            OSError: the address cannot be listened on (in use, no permission...).
        """
        # Bound first as a single server binds it, without SO_REUSEPORT: a port
        # in use, even by another server of ours, fails here as it would there.
        probe = bind_tcp(host, port, backlog, reuse_port=False)
        if not reuse_port_balances():
            name = probe.getsockname()
            return cls(f"{name[0]}:{name[1]}", probe)
        host, port = probe.getsockname()[:2]
        probe.close()
        self = cls(f"{host}:{port}", None)
        # Held for as long as the supervisor runs, bound but not listening (so it is
        # given no connections): the port stays ours while no worker is up.
        self._reserved = reserve_tcp(host, port)
        self._address = (host, port)
        self._backlog = backlog
        return self

    def take(self, slot: int) -> socket.socket:
        """The listening socket for a new worker of ``slot``: the slot's own while
        any worker of the slot still serves it (a reload's new worker takes over
        the old one's, queue and all), else a new one."""
        if self._shared is not None:
            return self._shared
        sock = self._slots.get(slot)
        if sock is None:
            assert self._address is not None
            sock = self._slots[slot] = bind_tcp(*self._address, self._backlog, reuse_port=True)
        self._users[slot] = self._users.get(slot, 0) + 1
        return sock

    def give_back(self, slot: int) -> None:
        """A worker of ``slot`` has ended. With the last one, the slot's socket is
        closed: clients in its accept queue are reset (no one would accept them)
        and new ones go to the other slots' sockets until the slot has a worker
        again."""
        if self._shared is not None:
            return
        self._users[slot] -= 1
        if not self._users[slot]:
            del self._users[slot]
            self._slots.pop(slot).close()

    def close(self) -> None:
        """Close them all; remove the Unix socket file made here."""
        for sock in [self._shared, self._reserved, *self._slots.values()]:
            if sock is not None:
                sock.close()
        self._slots.clear()
        self._users.clear()
        self._shared = self._reserved = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None
