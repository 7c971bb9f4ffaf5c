"""The Perl Cookbook's POE echo server (recipe 17.15), on statemachine-server."""

import sys

from statemachine_server import ConsoleLog, Kernel, TCPServer

kernel = Kernel()
console = ConsoleLog(kernel)  # the recipe's print: one write per kernel tick, never blocking


def handle_input(session, line):
    session.client.put(line)  # echo it back to the client
    console.write(f"client {session.id}: {line}")  # and log it to the console


port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345
loop = sys.argv[2] if len(sys.argv) > 2 else "auto"  # uvloop if installed; or asyncio
server = TCPServer(kernel, port=port, on_input=handle_input)
print(f"listening on {server.host}:{server.port}", flush=True)
try:
    kernel.run(loop=loop)
finally:
    console.close()  # what the console still holds is written before exiting
