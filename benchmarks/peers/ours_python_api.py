"""Peer ``ours-python-api``: the echo+log server written with the public Python API.

The same server as the built-in echo spec (``ours-spec``): echo each line back and
log it as ``client ID: LINE``. The log line is written with ``sys.stdout.write``
(no flush per line: Python's own buffer batches the writes to the pipe), so the
spec-vs-python scenario compares the spec's compiled handlers and tick-batched
console log with the plainest hand-written handler.

Usage: ``python ours_python_api.py PORT`` (0 picks a free port). Prints
``listening on HOST:PORT`` once served; SIGTERM shuts down gracefully (status 0).
"""

from __future__ import annotations

import sys

from statemachine_server import Connection, Kernel, TCPServer


def on_input(session: Connection, line: str) -> None:
    session.client.put(line)  # echo it back to the client
    sys.stdout.write(f"client {session.id}: {line}\n")  # and log it


def announce(server: TCPServer) -> None:
    print(f"listening on {server.host}:{server.port}", flush=True)


def main(port: int) -> None:
    kernel = Kernel()
    TCPServer(kernel, port=port, on_input=on_input, on_started=announce)
    kernel.run(loop="asyncio")  # the standard loop, as the other asyncio peers


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
