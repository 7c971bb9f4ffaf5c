"""The command line and the Python example, as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import ROOT, TIMEOUT, run_cli

ENV = {**os.environ, "PYTHONUNBUFFERED": "0"}


@asynccontextmanager
async def server_process(*argv: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """Start a server process, wait for `listening on HOST:PORT`, stop it by PID after."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=ENV
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            first = (await proc.stdout.readline()).decode()
        assert first.startswith("listening on 127.0.0.1:"), first
        yield proc, int(first.rsplit(":", 1)[1])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    async with asyncio.timeout(TIMEOUT):
        data = await reader.read()
    writer.close()
    return data


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


SPEC_SERVER = (sys.executable, "-m", "statemachine_server", "run", "--port", "0")
EXAMPLE_SERVER = (sys.executable, str(ROOT / "examples" / "echo_server.py"), "0")


@pytest.mark.parametrize("argv", [SPEC_SERVER, EXAMPLE_SERVER], ids=["spec", "example"])
async def test_echo_server_echoes_logs_and_stops_on_sigterm(argv: tuple[str, ...]) -> None:
    async with server_process(*argv) as (proc, port):
        assert await exchange(port, b"hello\r\nworld\n\xff\xfe\n") == b"hello\nworld\n\xff\xfe\n"
        status, out, err = await stop(proc)
    assert status == 0, err
    log = out.splitlines()
    assert len(log) == 3 and all(line.startswith("client ") for line in log)
    sid = log[0].split()[1].rstrip(":")
    assert log[:2] == [f"client {sid}: hello", f"client {sid}: world"]
    assert "Traceback" not in err


async def test_spec_and_example_answer_identically() -> None:
    payload = b"".join(b"line %d \xc3\xa9\n" % i for i in range(300)) + b"\n\r\n\x00\n"
    results = []
    for argv in (SPEC_SERVER, EXAMPLE_SERVER):
        async with server_process(*argv) as (proc, port):
            results.append(await exchange(port, payload))
            await stop(proc)
    assert results[0] == results[1] == payload.replace(b"\r\n", b"\n")


async def test_sigterm_answers_what_was_received_first() -> None:
    async with server_process(*SPEC_SERVER) as (proc, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"one\n")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readline() == b"one\n"
        status, _, _ = await stop(proc)
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""  # closed cleanly
        writer.close()
    assert status == 0


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
async def test_uvloop() -> None:
    async with server_process(*SPEC_SERVER, "--loop", "uvloop") as (proc, port):
        assert await exchange(port, b"fast\n" * 100) == b"fast\n" * 100
        status, _, _ = await stop(proc)
    assert status == 0


def test_the_default_loop_is_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from statemachine_server.core.running import loop_factory

    assert loop_factory("asyncio") is None
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        assert loop_factory("auto") is uvloop.new_event_loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: import fails
    assert loop_factory("auto") is None
    with pytest.raises(ValueError, match=r"--loop uvloop needs uvloop"):
        loop_factory("uvloop")


async def test_trace_logs_every_transition() -> None:
    async with server_process(*SPEC_SERVER, "--trace") as (proc, port):
        await exchange(port, b"x\n")
        _, _, err = await stop(proc)
    for step in (
        "accepting --connected--> reading",
        "reading --eof--> closing",
        "closing --closed--> closed",
    ):
        assert step in err


def test_bad_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: high\n")
    status, _, err = run_cli("run", str(bad))
    assert status == 2
    assert err == f"statemachine-server: {bad}:2:9: Expected `int`, got `str` at $.server.port\n"


def test_missing_spec_and_bad_port() -> None:
    status, _, err = run_cli("run", "no/such/spec.yaml")
    assert (status, err.count("\n")) == (2, 1) and "cannot read spec" in err
    status, _, err = run_cli("run", "--port", "70000")
    assert (status, err.count("\n")) == (2, 1) and "--port 70000" in err


def test_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = run_cli("run", "--port", str(port))
    assert status == 1 and "cannot listen on 127.0.0.1" in err and "Traceback" not in err


def test_check_and_graph() -> None:
    status, out, _ = run_cli("check", "specs/echo.yaml")
    assert (status, out) == (0, "specs/echo.yaml: ok\n")
    status, out, _ = run_cli("graph")
    assert status == 0 and "stateDiagram-v2" in out and "reading --> working" in out


async def test_a_log_nobody_reads_does_not_stall_clients() -> None:
    # stdout is a pipe that is not read while 200 clients x 200 lines are served
    # (about 1 MB of log, far more than a pipe holds); every line is there at the end.
    async with server_process(*SPEC_SERVER) as (proc, port):

        async def client(n: int) -> None:
            payload = b"".join(b"c%d l%d\n" % (n, i) for i in range(200))
            assert await exchange(port, payload) == payload

        async with asyncio.timeout(TIMEOUT * 3):
            await asyncio.gather(*(client(n) for n in range(200)))
        status, out, err = await stop(proc)
    assert status == 0, err
    log = out.splitlines()
    assert len(log) == 200 * 200
    assert all(line.startswith("client ") for line in log)


def test_check_reports_every_error_of_every_spec_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  prot: 1\nhandlers:\n  input: [reply: '{sesion.id}']\n")
    status, out, err = run_cli("check", "specs/chat.yaml", str(bad), "specs/smtp-sink.yaml")
    assert status == 2
    assert out == "specs/chat.yaml: ok\nspecs/smtp-sink.yaml: ok\n"
    assert err.splitlines() == [
        f"{bad}:2:3: unknown key 'prot' (did you mean 'port'?)",
        f"{bad}:4:20: unknown name 'sesion' (did you mean 'session'?): the dotted names are "
        "heap.NAME, server.NAME, match.NAME, session.id and session.state",
    ]
    status, _, err = run_cli("run", str(bad))
    assert status == 2 and len(err.splitlines()) == 2 and "Traceback" not in err


def test_every_shipped_spec_checks_and_graphs() -> None:
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.yaml"))
    status, out, _ = run_cli("check", *specs)
    assert status == 0 and out.count(": ok\n") == len(specs) >= 4
    for spec in specs:
        status, out, _ = run_cli("graph", spec)
        assert status == 0 and out.startswith("---\n") and "stateDiagram-v2" in out
        status, out, _ = run_cli("graph", spec, "--format", "dot")
        assert status == 0 and out.startswith("digraph ") and out.rstrip().endswith("}")
    _, out, _ = run_cli("graph", "specs/smtp-sink.yaml")
    assert "reading_mail --> reading_recipients: input" in out


async def test_run_set_overrides_the_server_heap(tmp_path: Path) -> None:
    import smtplib

    argv = (*SPEC_SERVER, "specs/smtp-sink.yaml", "--set", f"folder={tmp_path}")
    async with server_process(*argv) as (proc, port):

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("a@b", ["c@d"], "Subject: x\r\n\r\nhello\r\n")

        async with asyncio.timeout(TIMEOUT):
            await asyncio.to_thread(send)
        status, _, err = await stop(proc)
    assert status == 0, err
    (message,) = tmp_path.glob("*.eml")
    assert message.read_bytes().endswith(b"\r\n\r\nhello\r\n")
    status, _, err = run_cli("run", "--set", "no-equals")
    assert status == 2 and "--set 'no-equals': expected NAME=VALUE" in err
