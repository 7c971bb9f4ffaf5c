"""Peer ``memcached``: the real memcached, one worker thread, started like the other peers.

memcached prints nothing when it is ready and cannot pick its own port and say
which, so this launcher does both around it: it takes a free port on 127.0.0.1,
forks a helper that waits until that port accepts a connection and then prints
``listening on 127.0.0.1:PORT``, and replaces itself with memcached (``exec``), so
the PID the harness sees, pins, times and signals is memcached's own. The helper
is forked twice over, so it never becomes memcached's child, and gives up after
20 s (the harness's own wait); then the harness reports that nothing listened.

Command: ``memcached -t 1 -p PORT -l 127.0.0.1 -U 0`` (one worker thread, no
UDP), plus ``-u nobody`` when run as root, which memcached refuses otherwise.

Usage: ``python memcached.py [PORT]`` (0 or nothing picks a free port). SIGTERM
stops memcached with exit status 0.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time

READY_WAIT_S = 20.0
POLL_S = 0.01


def _free_port() -> int:
    # The port may in principle be taken between this close and memcached's bind;
    # on a machine that only runs the harness nothing else is binding.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _announce(port: int) -> None:
    """In the helper: wait until ``port`` accepts, then print the readiness line."""
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                pass
        except OSError:
            time.sleep(POLL_S)
            continue
        os.write(1, f"listening on 127.0.0.1:{port}\n".encode())
        return


def main(argv: list[str]) -> int:
    binary = shutil.which("memcached")
    if binary is None:
        print("memcached is not installed (apt-get install memcached)", file=sys.stderr)
        return 1
    port = int(argv[0]) if argv and argv[0] != "0" else _free_port()
    command = [binary, "-t", "1", "-p", str(port), "-l", "127.0.0.1", "-U", "0"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        try:
            if os.fork() == 0:
                _announce(port)
        finally:
            os._exit(0)
    os.waitpid(child, 0)  # the helper itself lives on, adopted by init
    os.execv(binary, command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
