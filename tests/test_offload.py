"""Work that cannot be chunked, over real sockets: thread and process pools, and
child processes (no zombies, no leaked descriptors, killed when the client goes)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from conftest import TIMEOUT, connect

from statemachine_server import Connection, LimitReached, Limits
from statemachine_server.work import in_process, in_thread

PY = sys.executable


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> str:
    writer.write(line.encode() + b"\n")
    async with asyncio.timeout(TIMEOUT * 2):  # a process pool starts its workers
        return (await reader.readline()).decode().rstrip("\n")


async def wait_until(condition: Any) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def reply_error(session: Connection, exc: BaseException) -> None:
    session.put(f"error: {type(exc).__name__}: {exc}")


async def test_thread_and_process_pool_results_and_errors(serve: Any) -> None:
    def on_input(session: Connection, line: str) -> None:
        word, _, arg = line.partition(" ")
        done = lambda s, result: s.put(f"{word} = {result}")  # noqa: E731
        if word == "thread":
            session.work(in_thread(len, arg), done)
        elif word == "process":  # int() of a non-number raises in the worker
            session.work(in_process(int, arg), done, on_error=reply_error)
        else:
            session.put(line)

    server = await serve(on_input=on_input)
    reader, writer = await connect(server)
    assert await ask(reader, writer, "thread abcd") == "thread = 4"
    assert await ask(reader, writer, "process 1024") == "process = 1024"
    answer = await ask(reader, writer, "process nope")
    assert answer.startswith("error: ValueError: invalid literal for int()")
    assert await ask(reader, writer, "still here") == "still here"  # the server goes on
    writer.close()


async def test_a_job_can_call_a_pool_between_steps(serve: Any) -> None:
    def job(text: str) -> Generator[Any, Any, str]:
        size = yield in_thread(len, text)
        yield  # an ordinary step
        return f"{text} has {size} characters"

    server = await serve(on_input=lambda s, line: s.work(job(line), lambda s, r: s.put(r)))
    reader, writer = await connect(server)
    assert await ask(reader, writer, "hello") == "hello has 5 characters"
    writer.close()


async def test_pool_calls_beyond_the_cap_wait_their_turn(serve: Any) -> None:
    gate = threading.Event()

    def blocked(x: str) -> str:
        gate.wait(TIMEOUT)
        return x

    server = await serve(
        on_input=lambda s, line: s.work(in_thread(blocked, line), lambda s, r: s.put(r)),
        limits=Limits(max_pool_jobs=1),
    )
    kernel = server.kernel
    first = await connect(server)
    second = await connect(server)
    first[1].write(b"one\n")
    second[1].write(b"two\n")
    await wait_until(lambda: kernel.statistics().pool_waiting == 1)
    assert kernel.statistics().pool_calls == 1
    gate.set()
    async with asyncio.timeout(TIMEOUT):
        assert await first[0].readline() == b"one\n"
        assert await second[0].readline() == b"two\n"
    assert kernel.statistics().pool_calls == 0
    for _, writer in (first, second):
        writer.close()


def child_server(serve: Any, **limits: Any) -> Any:
    def on_input(session: Connection, line: str) -> None:
        session.run_process(
            [PY, "-c", line],
            on_stdout=lambda s, out: s.put(f"out: {out}"),
            on_stderr=lambda s, err: s.put(f"err: {err}"),
            on_exit=lambda s, status: s.put(f"exit {status}"),
        )

    return serve(on_input=on_input, on_error=reply_error, limits=Limits(**limits))


async def test_child_output_lines_then_its_exit_status(serve: Any) -> None:
    server = await child_server(serve)
    reader, writer = await connect(server)
    writer.write(b"import sys; print('a'); print('b', flush=True); sys.exit(3)\n")
    async with asyncio.timeout(TIMEOUT):
        got = [(await reader.readline()).decode().strip() for _ in range(3)]
    assert got == ["out: a", "out: b", "exit 3"]
    writer.close()


async def test_child_stdin_and_stderr(serve: Any) -> None:
    def on_input(session: Connection, line: str) -> None:
        code = "import sys; d = sys.stdin.read(); sys.stderr.write(d.upper())"
        session.run_process(
            [PY, "-c", code],
            stdin=line.replace(",", "\n"),
            on_stderr=lambda s, err: s.put(err),
            on_exit=lambda s, status: s.put(f"exit {status}"),
        )

    server = await serve(on_input=on_input)
    reader, writer = await connect(server)
    writer.write(b"x,y\n")
    async with asyncio.timeout(TIMEOUT):
        got = [(await reader.readline()).decode().strip() for _ in range(3)]
    assert got == ["X", "Y", "exit 0"]
    writer.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_100_children_leave_no_zombie_and_no_descriptor(serve: Any) -> None:
    pids: list[int] = []

    def on_input(session: Connection, line: str) -> None:
        child = session.run_process(
            [PY, "-c", "print('hi')"] if line == "py" else ["true"],
            on_exit=lambda s, status: s.put(f"{child.pid} {status}"),
        )

    server = await serve(on_input=on_input)
    reader, writer = await connect(server)
    await ask(reader, writer, "py")  # warm-up: the loop's child watcher, its pipes
    before = open_fds()
    async with asyncio.timeout(TIMEOUT * 3):
        for _ in range(2):  # 50 at once, twice: under the default max_children (64)
            writer.write(b"true\n" * 50)
            for _ in range(50):
                pid, status = (await reader.readline()).split()
                assert status == b"0"
                pids.append(int(pid))
    assert len(set(pids)) == 100
    for pid in pids:  # reaped: no /proc entry left behind (a zombie keeps one)
        assert not Path(f"/proc/{pid}").exists() or _state(pid) != "Z"
    assert open_fds() <= before
    writer.close()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


async def test_child_is_killed_when_its_client_leaves(serve: Any) -> None:
    started: list[int] = []
    exits: list[int] = []

    def on_input(session: Connection, line: str) -> None:
        child = session.run_process(
            [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"],
            on_stdout=lambda s, out: s.put(out),
            on_exit=lambda s, status: exits.append(status),
        )
        started.append(0)
        session.heap["child"] = child

    server = await serve(on_input=on_input)
    reader, writer = await connect(server)
    writer.write(b"go\n")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"up\n"
    writer.close()
    await wait_until(lambda: exits)
    assert exits == [-15]  # SIGTERM
    await wait_until(lambda: server.kernel.statistics().sessions == 1)  # only the server


async def test_too_many_children_is_an_error_for_that_client_only(serve: Any) -> None:
    server = await child_server(serve, max_children=1)
    first = await connect(server)
    first[1].write(b"import time; print('up', flush=True); time.sleep(60)\n")
    async with asyncio.timeout(TIMEOUT):
        assert await first[0].readline() == b"out: up\n"
    second = await connect(server)
    second[1].write(b"print('never')\n")
    async with asyncio.timeout(TIMEOUT):
        answer = await second[0].readline()
    assert answer.startswith(b"error: LimitReached: 1 child processes")
    for _, writer in (first, second):
        writer.close()


async def test_a_job_can_wait_for_a_child(serve: Any) -> None:
    def job(session: Connection) -> Generator[Any, Any, str]:
        lines: list[str] = []
        child = session.run_process(
            [PY, "-c", "print(6 * 7)"], on_stdout=lambda s, out: lines.append(out)
        )
        status = yield child
        return f"{lines} {status}"

    server = await serve(on_input=lambda s, line: s.work(job(s), lambda s, r: s.put(r)))
    reader, writer = await connect(server)
    assert await ask(reader, writer, "go") == "['42'] 0"
    writer.close()


async def test_a_program_that_does_not_exist_is_that_clients_error(serve: Any) -> None:
    def on_input(session: Connection, line: str) -> None:
        session.run_process(["/nonexistent/program"], on_error=reply_error)

    server = await serve(on_input=on_input)
    reader, writer = await connect(server)
    assert (await ask(reader, writer, "go")).startswith("error: FileNotFoundError")
    writer.close()


def test_limit_reached_is_exported() -> None:
    assert issubclass(LimitReached, Exception)
