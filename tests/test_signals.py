"""Signals and what the server started: SIGHUP drains like SIGTERM, and on every way
out (SIGTERM, SIGINT, SIGHUP, a normal stop, an exception that leaves the loop) no
child process, pool worker, forkserver or resource tracker is left running. Linux:
descendants are found by walking /proc, and awaited with pidfds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import TIMEOUT

pytestmark = pytest.mark.skipif(
    not (Path("/proc/self/stat").exists() and hasattr(os, "pidfd_open")),
    reason="needs /proc and pidfd_open (Linux)",
)

SCRIPT = """\
import socket, sys, time
from statemachine_server import Kernel, TCPServer
from statemachine_server.work import in_process

# A child that ignores SIGTERM, so only a SIGKILL ends it.
CHILD = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('started', flush=True); time.sleep(300)")


def nap(port):  # in a pool worker: say so, then outlast any drain
    socket.create_connection(("127.0.0.1", port)).sendall(b"worker")
    time.sleep(300)


def on_input(session, line):
    word, _, arg = line.partition(" ")
    if word == "child":
        session.run_process([sys.executable, "-c", CHILD], on_stdout=lambda s, l: s.put(l))
    elif word == "pool":
        session.work(in_process(nap, int(arg)))
    elif word == "stop":
        session.kernel.stop()
    elif word == "exit":
        sys.exit(3)  # SystemExit leaves the loop: the program ends from a handler
    else:
        session.put(line)


if __name__ == "__main__":
    kernel = Kernel()
    server = TCPServer(kernel, port=0, on_input=on_input)
    print(f"listening on {server.host}:{server.port}", flush=True)
    kernel.run(drain_timeout=1)
"""


def descendants(root: int) -> set[int]:
    """Every process below ``root``, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.add(pid)
            todo.append(pid)
    return found


async def exited(pid_fd: int) -> None:
    """Wait until the process behind ``pid_fd`` has ended (it becomes readable)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(pid_fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(pid_fd)


@pytest.mark.parametrize(
    ("how", "status"),
    [("SIGTERM", 0), ("SIGINT", 0), ("SIGHUP", 0), ("stop", 0), ("exit", 3)],
)
async def test_nothing_the_server_started_outlives_it(
    tmp_path: Path, how: str, status: int
) -> None:
    (tmp_path / "kids.py").write_text(SCRIPT)
    worker_said = asyncio.get_running_loop().create_future()

    async def on_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker_said.set_result(await reader.read())
        writer.close()

    listener = await asyncio.start_server(on_worker, "127.0.0.1", 0)
    worker_port = listener.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(tmp_path / "kids.py"), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    fds: list[int] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            port = int((await proc.stdout.readline()).decode().rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"child\n")
            assert await reader.readline() == b"started\n"
            writer.write(f"pool {worker_port}\n".encode())
            assert await worker_said == b"worker"
            started = descendants(proc.pid)
            for pid in started:
                with contextlib.suppress(ProcessLookupError):  # a helper already gone
                    fds.append(os.pidfd_open(pid))
            # The child, the forkserver, its worker, the resource tracker.
            assert len(fds) >= 4, started
            if how.startswith("SIG"):
                proc.send_signal(getattr(signal, how))
            else:
                _r2, second = await asyncio.open_connection("127.0.0.1", port)
                second.write(f"{how}\n".encode())
                await second.drain()
                second.close()
            _out, err = await proc.communicate()
            assert proc.returncode == status, err.decode(errors="replace")
            if how.startswith("SIG"):  # drained: an orderly end of the connection
                assert await reader.read() == b""
            for fd in fds:
                await exited(fd)
        writer.close()
    finally:
        for fd in fds:
            os.close(fd)
        listener.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# A spec server made with the Python API and run by Kernel.run(): there SIGHUP
# drains like SIGTERM (the command line's run reloads on SIGHUP: test_reload.py).
_LIBRARY_SERVER = """
from statemachine_server import Kernel
from statemachine_server.language import build_server, builtin_spec_path, load_spec
kernel = Kernel()
server = build_server(load_spec(builtin_spec_path()), kernel, port=0,
                      on_started=lambda s: print(f"listening on 127.0.0.1:{s.port}", flush=True))
kernel.run()
"""


async def test_sighup_drains_a_library_spec_server_like_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LIBRARY_SERVER,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            port = int((await proc.stdout.readline()).decode().rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello\n")
            assert await reader.readline() == b"hello\n"
            proc.send_signal(signal.SIGHUP)
            assert await reader.read() == b""  # closed by the server, in order
            await proc.wait()
        assert proc.returncode == 0
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
