"""SIGHUP to ``run``: the spec again, without a refused or reset connection. In
place with one worker (the same process and socket), by new worker processes with
several. A spec that does not load is refused: its errors are logged, one line
each with FILE:LINE:COLUMN, and the running spec goes on."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest
from conftest import TIMEOUT
from test_workers_support import Served, cleanup, linux_only, start, tagged

pytestmark = linux_only

WORKERS = pytest.mark.parametrize("workers", ["1", "2"])


async def reload(served: Served, count: int, workers: str = "1") -> None:
    """SIGHUP, and wait until the ``count``-th reload is done: the old server (each
    old worker's, told so by the supervisor) no longer accepts."""
    served.proc.send_signal(signal.SIGHUP)
    await served.line(r"INFO reloaded: ", count=count)
    if workers != "1":
        await served.line(r"INFO worker: the new workers listen", count=count * int(workers))


@WORKERS
@pytest.mark.parametrize("loop", ["auto", "asyncio"])  # auto: uvloop where installed
async def test_sighup_serves_new_clients_with_the_new_spec(
    tmp_path: Path, workers: str, loop: str
) -> None:
    # The old server stops accepting as the new one starts: a client that comes
    # after "reloaded" is the new spec's (uvloop accepts in C: closed at once).
    spec = tagged(tmp_path, "A", drain=1)
    async with cleanup() as keep:
        served = keep(
            await start(
                str(spec), "--workers", workers, "--port", "0", "--loop", loop, cwd=tmp_path
            )
        )
        before = served.workers()
        assert (await served.ask("one")).startswith("A one ")
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"early\n")
            assert (await reader.readline()).startswith(b"A early ")
        tagged(tmp_path, "B", drain=1)
        await reload(served, 1, workers)
        replies = [await served.ask(f"two{i}") for i in range(6)]
        assert all(r.startswith(f"B two{i} ") for i, r in enumerate(replies)), replies
        # A client connected before goes on under the old spec, for the old spec's
        # drain_timeout; then it is closed in order (a drain), not reset.
        async with asyncio.timeout(TIMEOUT):
            writer.write(b"later\n")
            assert (await reader.readline()).startswith(b"A later ")
            assert await reader.read() == b""
            writer.close()
        if workers == "1":  # in place: the same process, no children
            assert served.workers() == before == set()
        else:  # new workers; the old ones ended
            await served.line(r"worker \d \(pid \d+\) exited with status 0", count=2)
            assert len(served.workers()) == 2 and not served.workers() & before
        assert await served.stop() == 0
        assert [line for line in served.out if line.startswith("listening on")] == [served.first]


@WORKERS
async def test_a_spec_that_does_not_load_is_refused_and_the_old_one_serves(
    tmp_path: Path, workers: str
) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", workers, "--port", "0", cwd=tmp_path))
        spec.write_text(spec.read_text().replace("reply:", "replay:").replace("equals:", "equal:"))
        served.proc.send_signal(signal.SIGHUP)
        await served.line(r"reload: refused; the running spec keeps serving")
        errors = [line for line in served.err if " ERROR reload: " in line][:-1]
        assert len(errors) >= 2
        for line in errors:  # one line each, where and what
            assert re.search(r" ERROR reload: \S*tagged\.yaml:\d+:\d+: \S", line), line
        assert (await served.ask("still")).startswith("A still ")
        # Fixed, it loads.
        tagged(tmp_path, "C")
        await reload(served, 1, workers)
        assert (await served.ask("fixed")).startswith("C fixed ")
        assert await served.stop() == 0


async def test_a_reload_to_groups_without_a_bus_is_refused_with_several_workers(
    tmp_path: Path,
) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        spec.write_text(spec.read_text() + "  connected:\n    - join: lobby\n")
        served.proc.send_signal(signal.SIGHUP)
        await served.line(r"reload: refused")
        refusal = [line for line in served.err if "the spec uses groups" in line]
        assert len(refusal) == 1 and " ERROR reload: --workers 2: " in refusal[0]
        assert (await served.ask("still")).startswith("A still ")
        assert await served.stop() == 0


@WORKERS
async def test_reloads_under_load_refuse_and_drop_no_client(tmp_path: Path, workers: str) -> None:
    # Clients connect, ask and close all the time while the spec is reloaded three
    # times: every one of them is answered, by one spec or the next.
    spec = tagged(tmp_path, "S0")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", workers, "--port", "0", cwd=tmp_path))
        stop = asyncio.Event()
        answers: list[str] = []

        async def client(n: int) -> None:
            i = 0
            while not stop.is_set():
                answers.append(await served.ask(f"c{n}-{i}"))
                i += 1

        clients = [asyncio.create_task(client(n)) for n in range(8)]
        for generation in (1, 2, 3):
            tagged(tmp_path, f"S{generation}")
            await reload(served, generation, workers)
            # New clients get the new spec from here on.
            assert (await served.ask("probe")).startswith(f"S{generation} probe ")
        stop.set()
        await asyncio.gather(*clients)  # any refused or reset connection raised here
        tags = {answer.split()[0] for answer in answers}
        assert {"S0", "S3"} <= tags, tags
        assert all(re.fullmatch(r"S\d c\d-\d+ \d+ \d+", a) for a in answers)
        assert await served.stop() == 0


async def test_a_reload_keeps_a_unix_socket_file_and_removes_it_at_the_end(
    tmp_path: Path,
) -> None:
    tagged(tmp_path, "A")
    spec = tmp_path / "unix.yaml"

    def write(tag: str) -> None:
        text = (tmp_path / "tagged.yaml").read_text().replace('reply: "A', f'reply: "{tag}')
        spec.write_text(text.replace("version: 1\n", "version: 1\nserver:\n  path: s.sock\n"))

    async def ask(text: str) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
            writer.write(text.encode() + b"\n")
            reply = await reader.readline()
            writer.close()
            return reply

    write("A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), cwd=tmp_path))
        assert (await ask("x")).startswith(b"A x ")
        write("B")
        await reload(served, 1)
        assert (tmp_path / "s.sock").exists()
        assert (await ask("y")).startswith(b"B y ")
        assert await served.stop() == 0
        assert not (tmp_path / "s.sock").exists()


async def test_sighup_to_a_worker_is_ignored(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        worker = min(served.workers())
        os.kill(worker, signal.SIGHUP)
        await served.line(r"SIGHUP to a worker: ignored \(send it to the supervisor, pid \d+\)")
        assert worker in served.workers()
        assert await served.stop() == 0


@WORKERS
async def test_a_spec_whose_server_cannot_start_is_abandoned(tmp_path: Path, workers: str) -> None:
    # It loads, but its TLS certificate does not: the new server (the new workers)
    # cannot start. The old spec goes on, its metrics endpoint too.
    spec = tagged(tmp_path, "A")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", workers, "--port", "0",
                                  "--metrics", "127.0.0.1:0", cwd=tmp_path))  # fmt: skip
        count = int(workers)
        ports = [
            int((await served.line(r"metrics at http://127\.0\.0\.1:(\d+)/", count=n)).group(1))
            for n in range(1, count + 1)
        ]
        spec.write_text(spec.read_text().replace(
            "version: 1\n", "version: 1\nserver:\n  tls: {cert: bad.pem}\n"))  # fmt: skip
        served.proc.send_signal(signal.SIGHUP)
        await served.line(r"ERROR reload: .*; the running spec keeps serving")
        assert (await served.ask("still")).startswith("A still ")
        for port in ports:
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
                assert b" 200 " in await reader.readline()
                writer.close()
        assert await served.stop() == 0
