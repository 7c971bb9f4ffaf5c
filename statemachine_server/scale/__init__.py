"""Several processes on one port, and reloading a spec without dropping a client.

``run --workers N`` makes this process a :class:`Supervisor` of N worker
processes, each ``run`` again with a kernel of its own, sharing the listening
port (:mod:`.sockets`), restarted when they die and replaced on SIGHUP
(:mod:`.supervisor`); a worker's end of that is :mod:`.worker`. With one worker
(the default) there is no supervisor, and SIGHUP reloads in place
(:class:`Reloader`). ``docs/scaling.md`` tells the whole story.

This package sits just below the command line: it runs specs (``language``) on
sockets (``net``) and is driven by ``cli``.
"""

from .loaded import Load, Loaded
from .metrics import WorkersMetrics
from .reload import Reloader
from .sockets import Sockets, systemd_fds
from .supervisor import Supervisor
from .worker import WorkerLink

__all__ = [
    "Load", "Loaded", "Reloader", "Sockets", "Supervisor", "WorkerLink", "WorkersMetrics",
    "systemd_fds",
]  # fmt: skip
