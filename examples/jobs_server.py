"""Long tasks that never stall other clients: the POE recipe's advice, in Python.

    python examples/jobs_server.py [PORT]

then, with ``nc 127.0.0.1 PORT`` (several at once, to see them not wait):

* ``primes N``: counts the primes below N as chunked work: one candidate per
  step, run in the kernel's time slices, with a progress line now and then;
* ``sleep S``: answers after S seconds, on a timer: nothing is blocked;
* ``hash TEXT``: a slow key derivation (scrypt) in the process pool: CPU-bound
  work that cannot be chunked;
* ``shell``: runs a fixed program and streams its output lines back;
* anything else is echoed.

Lines sent while a job runs wait, in order, and are answered after it.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Generator
from typing import Any

from statemachine_server import Connection, Kernel, TCPServer
from statemachine_server.work import in_process, sleep


def count_primes(limit: int) -> Generator[str | None, None, int]:
    """One candidate per step; yields a progress line every 10,000 candidates."""
    found = 0
    for n in range(2, limit):
        found += all(n % d for d in range(2, int(n**0.5) + 1))
        yield f"... {n} checked, {found} primes so far" if n % 10_000 == 0 else None
    return found


def pause(seconds: float) -> Generator[Any, None, str]:
    yield sleep(seconds)
    return f"slept {seconds:g} s"


def slow_hash(text: str) -> str:
    """Runs in a worker process: it must be a module-level function."""
    return hashlib.scrypt(text.encode(), salt=b"example", n=1 << 14, r=8, p=1).hex()[:32]


def on_input(session: Connection, line: str) -> None:
    command, _, arg = line.partition(" ")
    reply = session.put  # reply(text) sends one line

    def done(session: Connection, result: object) -> None:
        reply(f"{command}: {result}")

    def failed(session: Connection, exc: BaseException) -> None:
        reply(f"{command} failed: {exc}")

    if command == "primes" and arg.isascii() and arg.isdigit() and int(arg) <= 10_000_000:
        session.work(
            count_primes(int(arg)), done,
            on_progress=lambda s, text: reply(text), progress_every=0.5,
            on_error=failed, timeout=60,
        )  # fmt: skip
    elif (
        command == "sleep"
        and arg.isascii()
        and arg.replace(".", "", 1).isdigit()
        and float(arg) <= 60
    ):
        session.work(pause(float(arg)), done)
    elif command == "hash" and arg:
        session.work(in_process(slow_hash, arg), done, on_error=failed)
    elif command == "shell":
        session.run_process(
            ["uname", "-a"],
            on_stdout=lambda s, out: reply(f"shell: {out}"),
            on_exit=lambda s, status: reply(f"shell: exit {status}"),
            on_error=failed,
        )
    else:
        reply(line)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 12346
    kernel = Kernel()
    server = TCPServer(kernel, port=port, on_input=on_input)
    print(f"listening on {server.host}:{server.port}", flush=True)
    kernel.run()


if __name__ == "__main__":
    main()
