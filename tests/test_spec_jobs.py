"""specs/jobs.yaml and the work and run actions, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

from conftest import TIMEOUT

from statemachine_server import Kernel, TCPServer
from statemachine_server.console import ConsoleLog
from statemachine_server.language import load_spec, load_spec_text
from statemachine_server.language.build import build_server

SPECS = Path(__file__).resolve().parent.parent / "specs"


async def start(spec: Any) -> tuple[Kernel, TCPServer, asyncio.Task[None]]:
    kernel = Kernel()
    started = asyncio.Event()
    server = build_server(
        spec, kernel, port=0, console=ConsoleLog(kernel, io.StringIO()),
        on_started=lambda s: started.set(),
    )  # fmt: skip
    task = asyncio.create_task(kernel.serve())
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    return kernel, server, task


async def stop(kernel: Kernel, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(TIMEOUT):
        await kernel.shutdown(deadline=1.0)
        await task


async def lines(reader: asyncio.StreamReader, count: int) -> list[str]:
    async with asyncio.timeout(TIMEOUT * 2):
        return [(await reader.readline()).decode().rstrip("\n") for _ in range(count)]


async def test_jobs_spec_every_command_while_others_are_served() -> None:
    kernel, server, task = await start(load_spec(SPECS / "jobs.yaml"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        other_reader, other_writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"primes 30000\nafter\n")
        other_writer.write(b"hello\n")
        assert await lines(other_reader, 1) == ["hello"]
        assert await lines(reader, 3) == [
            "... 10000 checked, 1229 primes so far",  # progress: one per 0.5 s at most
            "primes below 30000: 3245",
            "after",  # sent during the job: waited, in order
        ]
        writer.write(b"sleep 0.05\nhash abc\nshell\n")
        expected = hashlib.scrypt(b"abc", salt=b"example", n=1 << 14, r=8, p=1).hex()[:32]
        got = await lines(reader, 4)
        assert got[:2] == ["slept 0.05 s", f"hash: {expected}"]
        assert got[2].startswith("shell: Linux") and got[3] == "shell: exit 0"
        writer.close()
        other_writer.close()
    finally:
        await stop(kernel, task)


FAILING = """\
handlers:
  input:
    - match: '^slow (?P<seconds>[0-9]+)$'
      do:
        - work: {function: "jobs:pause", timeout: 0.05}
        - reply: never
    - equals: raise
      do:
        - work: {function: "jobs:slow_hash", in: thread, on_error: [reply: "failed: {result}"]}
        - reply: never
    - equals: missing
      do:
        - run: [/nonexistent/program]
        - reply: never
    - equals: status
      do:
        - run: {argv: [sh, -c, "echo out; echo err >&2; exit 3"], stderr: [reply: "2> {result}"]}
        - reply: "exit {result}"
    - do: [reply: "{input}"]
"""


async def test_work_and_run_failures_are_replies_and_the_connection_goes_on() -> None:
    spec = load_spec_text(FAILING, "failing.yaml", base_dir=SPECS)
    kernel, server, task = await start(spec)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"slow 5\nraise\nmissing\nstatus\nstill here\n")
        got = await lines(reader, 7)
        assert got[0] == "error: work timed out after 0.05 s"
        assert got[1] == "failed: KeyError: 'text'"  # no match group: the function raised
        assert got[2].startswith("error: FileNotFoundError")
        assert sorted(got[3:5]) == ["2> err", "out"]  # two pipes: their order may vary
        assert got[5:] == ["exit 3", "still here"]
        writer.close()
    finally:
        await stop(kernel, task)
