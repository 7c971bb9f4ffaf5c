"""The Perl Cookbook's POE echo server (recipe 17.15), on statemachine-server."""

import sys

from statemachine_server import Kernel, TCPServer


def handle_input(session, line):
    session.client.put(line)  # echo it back to the client
    print(f"client {session.id}: {line}")  # and log it to the console


kernel = Kernel()
port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345
server = TCPServer(kernel, port=port, on_input=handle_input)
print(f"listening on {server.host}:{server.port}", flush=True)
kernel.run()
