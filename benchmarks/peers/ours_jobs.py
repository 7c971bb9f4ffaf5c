"""Peer ``ours-jobs-*``: an echo server that also runs a long job for one command.

Written with the public Python API. Every line is echoed back, except ``job``:
that starts a job of ``--job-seconds`` seconds of CPU work for its client, which
is answered ``job done STEPS SECONDS`` when the job ends. The job is:

* ``--job chunked``: a generator run with ``session.work()``: one step of
  ``--step-ms`` milliseconds of hashing per kernel event, so the kernel serves
  the other clients between steps (POE's chunked work);
* ``--job blocking``: the same steps, one after the other, inside the handler:
  nothing else runs until it returns.

Usage: ``python ours_jobs.py PORT [--job chunked|blocking] [--job-seconds S]
[--step-ms MS]``. Prints ``listening on HOST:PORT`` once served; SIGTERM stops it.
No logging: this peer measures scheduling, not the log.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Iterator

from statemachine_server import Connection, Kernel, TCPServer


def spin(seconds: float, seed: bytes) -> bytes:
    """CPU work for ``seconds``: hash a digest over and over."""
    end = time.perf_counter() + seconds
    digest = seed
    while time.perf_counter() < end:
        digest = hashlib.sha256(digest).digest()
    return digest


def steps(total: float, step: float) -> Iterator[None]:
    """The job as a generator: one ``step``-second slice of work per ``next()``."""
    digest = b"job"
    for _ in range(max(1, round(total / step))):
        digest = spin(step, digest)
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--job", choices=("chunked", "blocking"), default="chunked")
    parser.add_argument("--job-seconds", type=float, default=2.0)
    parser.add_argument("--step-ms", type=float, default=1.0)
    args = parser.parse_args()
    step = args.step_ms / 1000
    count = max(1, round(args.job_seconds / step))

    def on_input(session: Connection, line: str) -> None:
        if line != "job":
            session.put(line)
            return
        started = time.perf_counter()
        if args.job == "blocking":
            for _ in steps(args.job_seconds, step):
                pass
            session.put(f"job done {count} {time.perf_counter() - started:.3f}")
            return

        def done(session: Connection, result: object) -> None:
            session.put(f"job done {count} {time.perf_counter() - started:.3f}")

        session.work(steps(args.job_seconds, step), done)

    def announce(server: TCPServer) -> None:
        print(f"listening on {server.host}:{server.port}", flush=True)

    kernel = Kernel()
    TCPServer(kernel, port=args.port, on_input=on_input, on_started=announce)
    kernel.run(loop="asyncio")  # the standard loop, as the other asyncio peers


if __name__ == "__main__":
    main()
