"""What the worker and reload tests share: a ``run`` process, its output line by
line as it comes, its descendants (from /proc), and clients. No tests here."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TIMEOUT
from test_signals import descendants  # one walk of /proc for both

PREFIX = "STATEMACHINE_SERVER_"

#: Needs /proc (descendants) and SO_REUSEPORT's balancing or not: Linux.
linux_only = pytest.mark.skipif(
    not (Path("/proc/self/stat").exists() and hasattr(os, "pidfd_open")),
    reason="needs /proc and pidfd_open (Linux)",
)

#: A spec whose replies say which spec (the tag), which session and which process.
TAGGED = """\
version: 1
handlers:
  input:
    - equals: nap
      do:
        - call: helpers:nap
    - do:
        - call: {function: "helpers:pid", reply: false}
        - reply: "{tag} {input} {session.id} {result}"
"""
HELPERS = """\
import os, time

def pid(session, input, match):
    return str(os.getpid())

def nap(session, input, match):  # holds the event loop
    time.sleep(60)
"""


def tagged(folder: Path, tag: str, name: str = "tagged.yaml", *, drain: float = 0) -> Path:
    """Write the tagged spec (replies start with ``tag``) and its helpers; ``drain``:
    its ``server.limits.drain_timeout``, if not the default."""
    (folder / "helpers.py").write_text(HELPERS)
    path = folder / name
    text = TAGGED.replace("{tag}", tag)
    if drain:
        text = text.replace(
            "version: 1\n", f"version: 1\nserver:\n  limits: {{drain_timeout: {drain}}}\n"
        )
    path.write_text(text)
    return path


def environ(**variables: str) -> dict[str, str]:
    """This environment without our variables, plus ``variables`` (without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    return env | {PREFIX + name: value for name, value in variables.items()}


async def exited(pid: int) -> None:
    """Wait until process ``pid`` has ended (its pidfd becomes readable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class Served:
    """A ``run`` process: where it listens, and its output lines as they come."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self.port = 0
        self.first = ""
        self._changed = asyncio.Condition()
        self._ended: set[str] = set()  # the streams at their end
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, self.out, "out")),
            asyncio.create_task(self._read(proc.stderr, self.err, "err")),
        ]

    async def _read(self, stream: asyncio.StreamReader | None, into: list[str], name: str) -> None:
        assert stream is not None
        while line := await stream.readline():
            async with self._changed:
                into.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._ended.add(name)
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, pattern: str, *, stream: str = "err", count: int = 1) -> re.Match[str]:
        """The ``count``-th line of ``stream`` matching ``pattern``, once it comes."""
        lines = self.err if stream == "err" else self.out
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            hits = [m for line in lines if (m := rx.search(line))]
            return hits[count - 1] if len(hits) >= count else None

        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: found() is not None or stream in self._ended)
        match = found()
        assert match is not None, f"no {pattern!r} in {stream}: {lines}"
        return match

    async def ask(self, text: str) -> str:
        """Connect, send a line, read the reply line, close."""
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(text.encode() + b"\n")
                return (await reader.readline()).decode().rstrip("\n")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    def workers(self) -> set[int]:
        """The supervisor's children (its workers)."""
        return descendants(self.pid)

    async def wait(self) -> int:
        async with asyncio.timeout(TIMEOUT):
            status = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return status

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return await self.wait()


async def start(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    listening: bool = True,
    prefix: Sequence[str] = (),
    **popen: Any,
) -> Served:
    """``python -m statemachine_server run ARGS -v``; with ``listening``, once it
    says where it listens (its port is then read)."""
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "statemachine_server", "run", *args, "-v",
        cwd=cwd, env=env if env is not None else environ(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds, **popen,
    )  # fmt: skip
    served = Served(proc)
    if listening:
        match = await served.line(r"^listening on (\S+)$", stream="out")
        served.first = match.group(0)
        if ":" in match.group(1):
            served.port = int(match.group(1).rsplit(":", 1)[1])
    return served


@contextlib.asynccontextmanager
async def cleanup() -> AsyncIterator[Callable[[Served], Served]]:
    """Servers registered here are stopped at the end, their descendants too (by
    PID), and none of those may be left running."""
    servers: list[Served] = []
    try:
        yield lambda served: servers.append(served) or served
    finally:
        for served in servers:
            below = descendants(served.pid)
            if served.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    served.proc.kill()
            for pid in below:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await served.wait()
            async with asyncio.timeout(TIMEOUT):
                for pid in below:
                    await exited(pid)
