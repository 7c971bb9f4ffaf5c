"""``run --workers N``: a supervisor and N worker processes on one port, real
processes and real clients. Restarts, signals, session ids, inherited sockets
(``--fd``, systemd's ``LISTEN_FDS``), and the rule that groups need a bus."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TIMEOUT
from test_workers_support import Served, cleanup, environ, exited, linux_only, start, tagged

pytestmark = linux_only


async def ask_until_both(served: Served, tries: int = 200) -> dict[str, set[int]]:
    """Ask until replies came from two processes: pid -> the session ids it gave."""
    seen: dict[str, set[int]] = {}
    for i in range(tries):
        _, _, sid, pid = (await served.ask(f"x{i}")).split()
        seen.setdefault(pid, set()).add(int(sid))
        if len(seen) == 2 and i >= 8:
            break
    return seen


async def test_workers_share_the_port_and_never_share_a_session_id(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        assert served.first == f"listening on 127.0.0.1:{served.port}"
        workers = served.workers()
        assert len(workers) == 2
        seen = await ask_until_both(served)
        assert {int(pid) for pid in seen} == workers  # both serve; the supervisor does not
        ids = [sid for sids in seen.values() for sid in sids]
        assert len(ids) == len(set(ids))
        # Lanes 0 and 1 of 4: worker k's ids are k + 1, k + 5, k + 9...
        assert sorted({sid % 4 for sids in seen.values() for sid in sids}) == [1, 2]
        assert await served.stop() == 0
        assert [line for line in served.out if line.startswith("listening on")] == [served.first]
        assert "2 workers listening on 127.0.0.1:" in "\n".join(served.err)


async def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        workers = served.workers()
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"before\n")
            assert (await reader.readline()).startswith(b"A before ")
            served.proc.send_signal(signal.SIGTERM)
            assert await reader.read() == b""  # drained: closed by the server
            writer.close()
        assert await served.wait() == 0
        async with asyncio.timeout(TIMEOUT):
            for pid in workers:
                await exited(pid)
        err = "\n".join(served.err)
        assert "SIGTERM: draining the workers (2)" in err
        assert "second" not in err


async def test_ctrl_c_and_a_service_manager_signalling_every_process_drain_once(
    tmp_path: Path,
) -> None:
    # Ctrl-C signals the terminal's process group: the workers are not in it, so
    # only the supervisor hears it. systemd's default signals every process of the
    # service: each worker hears SIGTERM itself and the supervisor's order too,
    # which is not a signal: still one drain, not a stop at once.
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        ctrl_c = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path,
                                  start_new_session=True))  # fmt: skip
        os.killpg(ctrl_c.pid, signal.SIGINT)
        assert await ctrl_c.wait() == 0
        assert "SIGINT: draining the workers (2)" in "\n".join(ctrl_c.err)

        every = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        for pid in [every.pid, *every.workers()]:
            with contextlib.suppress(ProcessLookupError):  # a worker may be done already
                os.kill(pid, signal.SIGTERM)
        assert await every.wait() == 0
        for served in (ctrl_c, every):
            assert not [line for line in served.err if "second" in line or "stopping" in line]


async def test_a_second_signal_stops_workers_whose_loop_is_held(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path,
                                  env=environ(WATCHDOG="0")))  # fmt: skip
        async with asyncio.timeout(TIMEOUT):
            held = []
            for _ in range(2):  # nap on both workers (a connection each, till each naps)
                _, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(b"nap\n")
                held.append(writer)
            served.proc.send_signal(signal.SIGTERM)
            await served.line(r"SIGTERM: draining the workers \(2\)")
            served.proc.send_signal(signal.SIGTERM)
            assert await served.wait() == 0  # well before the 60 s nap
        assert "second SIGTERM: stopping the workers now" in "\n".join(served.err)
        for writer in held:
            writer.close()


async def test_a_worker_that_dies_is_started_again_with_a_growing_delay(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        victim = min(served.workers())
        for restart, delay in [(1, "0.1"), (2, "0.2"), (3, "0.4")]:  # the same slot each time
            before = served.workers()
            os.kill(victim, signal.SIGKILL)
            await served.line(
                rf"worker \d \(pid {victim}\) was killed by SIGKILL after [\d.]+ s; starting "
                rf"it again in {delay} s \(restart {restart}\)"
            )
            await served.line(r"INFO listening on", count=2 + restart)  # the new one's
            (victim,) = served.workers() - (before - {victim})
        assert len(served.workers()) == 2
        # It serves throughout: every reply comes from a live worker.
        for i in range(10):
            _, _, _, pid = (await served.ask(f"after{i}")).split()
            assert int(pid) in served.workers()
        assert await served.stop() == 0


async def test_killing_a_worker_leaves_the_other_workers_clients_alone(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        # Connections kept open until some land on each worker.
        conns: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        async with asyncio.timeout(TIMEOUT):
            while len(conns) < 2:
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(b"hi\n")
                pid = int((await reader.readline()).split()[-1])
                conns.setdefault(pid, []).append((reader, writer))
        victim, survivor = sorted(conns)
        os.kill(victim, signal.SIGKILL)
        await served.line(rf"worker \d \(pid {victim}\) was killed by SIGKILL")
        async with asyncio.timeout(TIMEOUT):
            for reader, _ in conns[victim]:
                assert await reader.read() == b""  # those went with their worker
            for i, (reader, writer) in enumerate(conns[survivor]):
                writer.write(b"still %d\n" % i)  # the same connection, the same worker
                tag, text, number, _, pid = (await reader.readline()).decode().split()
                assert (tag, text, number, int(pid)) == ("A", "still", str(i), survivor)
        for _, writer in conns[victim] + conns[survivor]:
            writer.close()
        assert await served.stop() == 0


async def test_workers_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0", cwd=tmp_path))
        workers = served.workers()
        served.proc.kill()
        assert await served.wait() == -signal.SIGKILL
        async with asyncio.timeout(TIMEOUT):  # they hear the end of their channel and drain
            for pid in workers:
                await exited(pid)


async def test_a_first_worker_that_cannot_start_stops_the_start_with_its_status(
    tmp_path: Path,
) -> None:
    # A TLS certificate that does not load (the workers load it, not the
    # supervisor): a worker's own error line, and the supervisor exits 1 instead
    # of restarting workers forever.
    spec = tagged(tmp_path, "A")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    tls = tmp_path / "tls.yaml"
    tls.write_text(
        spec.read_text().replace("version: 1\n", "version: 1\nserver:\n  tls: {cert: bad.pem}\n")
    )
    async with cleanup() as keep:
        served = keep(await start(str(tls), "--workers", "2", "--port", "0", cwd=tmp_path,
                                  listening=False))  # fmt: skip
        assert await served.wait() == 1
        err = "\n".join(served.err)
        assert "server.tls does not load" in err
        assert "before it listened" in err
        assert not [line for line in served.out if line.startswith("listening on")]


def test_groups_without_a_bus_are_refused_with_several_workers() -> None:
    for args, env in [(["--workers", "2"], {}), ([], {"WORKERS": "2"})]:
        proc = subprocess.run(
            [sys.executable, "-m", "statemachine_server", "run", "specs/chat.yaml", "--port", "0",
             *args],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=environ(**env),
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1
        assert proc.stderr.startswith("statemachine-server: --workers 2: the spec uses groups")
        assert "--bus redis://HOST:PORT" in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers 0: expected 1 to 1024, or auto (one per CPU)"),
        ([], {"WORKERS": "many"}, "STATEMACHINE_SERVER_WORKERS='many': expected 1 to 1024"),
        (["--bus", "http://x"], {}, "--bus http://x: "),
        ([], {"BUS": "nowhere"}, "STATEMACHINE_SERVER_BUS='nowhere': "),
        (["--fd", "x"], {}, "--fd x: expected a file descriptor number"),
        (["--fd", "0", "--port", "1"], {}, "--fd 0: the listening socket is inherited; --host"),
        (["--fd", "999"], {}, "--fd 999: file descriptor 999: Bad file descriptor"),
    ],
)  # fmt: skip
def test_bad_values_exit_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine_server", "run", *args],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=environ(**env),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"statemachine-server: {message}"), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_descriptor_that_is_no_listening_socket_exits_2() -> None:
    with socket.socket() as unbound:
        fd = unbound.fileno()
        proc = subprocess.run(
            [sys.executable, "-m", "statemachine_server", "run", "--fd", str(fd)],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=environ(),
            pass_fds=[fd],
        )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == (f"statemachine-server: --fd {fd}: file descriptor {fd} is not a "
                           "listening stream socket\n")  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_an_inherited_socket_is_served_instead_of_binding(
    tmp_path: Path, workers: str
) -> None:
    spec = tagged(tmp_path, "A")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        async with cleanup() as keep:
            served = keep(await start(str(spec), "--fd", str(fd), "--workers", workers,
                                      cwd=tmp_path, pass_fds=[fd]))  # fmt: skip
            assert served.port == port
            listener.close()  # ours: only the server's copies are left
            assert (await served.ask("hi")).startswith("A hi ")
            if workers == "2":
                assert len(await ask_until_both(served)) == 2
            assert await served.stop() == 0


async def test_systemd_socket_activation(tmp_path: Path) -> None:
    # As systemd starts a service: the socket on descriptor 3, LISTEN_FDS=1 and
    # LISTEN_PID the service's own pid (set here by a shim that then execs run).
    spec = tagged(tmp_path, "A")
    shim = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = "
        "str(os.getpid()); os.environ['LISTEN_FDS'] = '1'; os.execv(sys.argv[2], sys.argv[2:])"
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        async with cleanup() as keep:
            served = keep(await start(
                str(spec), "--workers", "2", cwd=tmp_path, pass_fds=[fd],
                prefix=[sys.executable, "-c", shim, str(fd)],
            ))  # fmt: skip
            assert served.port == port
            listener.close()
            assert len(await ask_until_both(served)) == 2
            for pid in served.workers():  # not passed on: a worker's children must not see it
                env = Path(f"/proc/{pid}/environ").read_bytes()
                assert b"LISTEN_FDS" not in env and b"LISTEN_PID" not in env
            assert await served.stop() == 0


async def test_workers_on_a_unix_socket_share_it_and_the_file_goes_with_them(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "unix.yaml"
    tagged(tmp_path, "A")
    spec.write_text((tmp_path / "tagged.yaml").read_text().replace(
        "version: 1\n", "version: 1\nserver:\n  path: s.sock\n"))  # fmt: skip
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", cwd=tmp_path))
        assert served.first == f"listening on {tmp_path / 's.sock'}"
        pids = set()
        for i in range(40):
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
                writer.write(f"u{i}\n".encode())
                pids.add((await reader.readline()).split()[-1])
                writer.close()
        assert {int(p) for p in pids} <= served.workers()
        assert await served.stop() == 0
        assert not (tmp_path / "s.sock").exists()


async def test_the_metrics_address_serves_the_sum_of_the_workers(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    spec = tagged(tmp_path, "A")
    with socket.socket() as probe:  # a free port for the supervisor's endpoint
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scrape() -> dict[tuple[str, str], float]:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await reader.read()
            writer.close()
        assert data.startswith(b"HTTP/1.1 200 ")
        text = data.partition(b"\r\n\r\n")[2].decode()
        families = parser.text_string_to_metric_families(text)
        return {(s.name, s.labels.get("state", "")): s.value for f in families for s in f.samples}

    async with cleanup() as keep:
        served = keep(await start(str(spec), "--workers", "2", "--port", "0",
                                  "--metrics", f"127.0.0.1:{port}", cwd=tmp_path))  # fmt: skip
        host, server_port = served.first.rsplit(" ", 1)[1].rsplit(":", 1)
        clients, pids = [], set()
        for i in range(24):  # SO_REUSEPORT spreads them over both workers
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection(host, int(server_port))
                writer.write(f"m{i}\n".encode())
                pids.add((await reader.readline()).split()[-1])
            clients.append(writer)
        got = await scrape()
        p = "statemachine_server_"
        assert got[(p + "connections", "reading")] == 24  # both workers' together
        assert got[(p + "connections_accepted_total", "")] == 24
        assert got[(p + "serving", "")] == 1
        assert len(pids) == 2, "one worker took every client: the sum was not tested"
        for writer in clients:
            writer.close()
        assert await served.stop() == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: auto is one worker")
async def test_workers_auto_is_one_per_cpu(tmp_path: Path) -> None:
    spec = tagged(tmp_path, "A")
    cpus = len(os.sched_getaffinity(0))
    async with cleanup() as keep:
        served = keep(await start(str(spec), "--port", "0", cwd=tmp_path,
                                  env=environ(WORKERS="auto")))  # fmt: skip
        assert len(served.workers()) == cpus
        assert await served.stop() == 0
