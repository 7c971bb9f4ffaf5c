"""A line proxy: each client gets its own connection to an upstream server.

Lines from the client go upstream, lines from upstream go back to the client, in
order. A client that half-closes (``printf 'a\n' | nc ...``) still gets every reply:
its end of input is held, passed on upstream, and its connection ends with the
upstream one. Run an upstream (``python examples/echo_server.py 7000``), then
``python examples/line_proxy.py --port 7001 --upstream 127.0.0.1:7000``.
"""

from __future__ import annotations

import argparse

from statemachine_server import Connection, Kernel, TCPClient, TCPServer

#: Lines a client may send before its upstream connection is up; past it, it is
#: dropped (a bound, like every buffer here).
MAX_EARLY_LINES = 100_000


def line_proxy(kernel: Kernel, upstream: tuple[str, int], port: int = 0) -> TCPServer:
    def connected(down: Connection) -> None:
        down.heap["early"] = []
        down.heap["up"] = TCPClient(
            kernel,
            host=upstream[0],
            port=upstream[1],
            reconnect=None,  # one attempt: the client's session depends on it
            heap={"down": down},
            on_connected=upstream_connected,
            on_input=lambda up, line: up.heap["down"].put(line),
            on_disconnected=lambda up: upstream_gone(up.heap["down"]),
            on_connect_error=lambda client, exc: upstream_gone(client.heap["down"]),
        )
        down.hold(client_done)  # the client's end of input waits for upstream's

    def client_done(down: Connection) -> None:
        if "early" in down.heap:  # upstream not connected yet: after the early lines
            down.heap["half_closed"] = True
        else:
            down.heap["up"].connection.shutdown_output()  # it answers, then closes

    def upstream_connected(up: Connection) -> None:
        down = up.heap["down"]
        up.put(*down.heap.pop("early"))
        if down.heap.get("half_closed"):
            up.shutdown_output()

    def upstream_gone(down: Connection) -> None:
        down.release()
        down.close()  # after the replies already put

    def from_client(down: Connection, line: str) -> None:
        # "early" is there until upstream_connected has sent it: lines keep their order.
        early = down.heap.get("early")
        if early is None:
            down.heap["up"].put(line)
        elif len(early) < MAX_EARLY_LINES:
            early.append(line)
        else:
            down.close()

    def disconnected(down: Connection) -> None:
        down.heap["up"].close()

    return TCPServer(
        kernel,
        port=port,
        on_connected=connected,
        on_input=from_client,
        on_disconnected=disconnected,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7001)
    parser.add_argument("--upstream", default="127.0.0.1:7000", help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    kernel = Kernel()
    line_proxy(kernel, (host, int(port)), args.port)
    kernel.run()


if __name__ == "__main__":
    main()
