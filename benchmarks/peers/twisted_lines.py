"""Peer ``twisted``: Twisted's ``LineReceiver`` echo, on the default reactor.

``delimiter = b"\\n"`` so it speaks the same framing as the others; each line is
sent back with ``sendLine``. No logging.

Usage: ``python twisted_lines.py PORT [MAX_LENGTH]`` (0 picks a free port;
MAX_LENGTH replaces ``LineReceiver.MAX_LENGTH``, 16384 bytes, for the large-lines
scenarios). Prints ``listening on HOST:PORT`` once bound; SIGTERM stops the
reactor (exit status 0).
"""

from __future__ import annotations

import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class Echo(LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)


class EchoFactory(protocol.Factory):
    protocol = Echo


def main(port: int, max_length: int | None = None) -> None:
    if max_length is not None:
        Echo.MAX_LENGTH = max_length
    listening = reactor.listenTCP(port, EchoFactory(), interface="127.0.0.1")  # type: ignore[attr-defined]
    address = listening.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 0,
        int(sys.argv[2]) if len(sys.argv) > 2 else None,
    )
