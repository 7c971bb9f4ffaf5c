"""Specs that listen with TLS or on a Unix domain socket, and their errors."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme
from conftest import TIMEOUT, run_cli

from statemachine_server import Kernel, SpecError
from statemachine_server.language import build_server, load_spec, load_spec_text
from statemachine_server.language.model import TLSSettings

ROOT = Path(__file__).resolve().parent.parent
ECHO = 'handlers:\n  input: [reply: "{input}"]\n'
LINES = b"".join(b"line %d\n" % i for i in range(100))


def write_spec(folder: Path, server: str) -> Path:
    spec = folder / "spec.yaml"
    spec.write_text(f"server:\n{server}{ECHO}")
    return spec


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> Path:
    """tmp_path/certs: server.pem and server.key (for 127.0.0.1 and localhost), ca.pem."""
    folder = tmp_path / "certs"
    folder.mkdir()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return folder


async def echo_through(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(LINES)
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(len(LINES)) == LINES


async def test_tls_spec_echoes(
    serve_spec: Any, ca: trustme.CA, certs: Path, tmp_path: Path
) -> None:
    # Paths relative to the spec's folder, whatever the current directory.
    spec = write_spec(
        tmp_path, "  port: 0\n  tls: {cert: certs/server.pem, key: certs/server.key}\n"
    )
    server = await serve_spec(spec)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client, server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    await echo_through(reader, writer)
    writer.close()


def test_tls_client_ca_requires_client_certificates(certs: Path, tmp_path: Path) -> None:
    tls = "{cert: certs/server.pem, key: certs/server.key, client_ca: certs/ca.pem}"
    spec = write_spec(tmp_path, f"  port: 0\n  tls: {tls}\n")
    server = build_server(load_spec(spec), Kernel())
    try:
        assert server.ssl is not None and server.ssl.verify_mode == ssl.CERT_REQUIRED
    finally:
        server.close()


async def test_unix_socket_spec_echoes(serve_spec: Any, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "  path: echo.sock\n")
    server = await serve_spec(spec)
    assert server.path == str(tmp_path / "echo.sock")
    reader, writer = await asyncio.open_unix_connection(server.path)
    await echo_through(reader, writer)
    writer.close()


async def test_unix_socket_spec_runs_from_the_command_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "  path: echo.sock\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemachine_server", "run", str(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            first = await proc.stdout.readline()
        assert first.decode() == f"listening on {tmp_path / 'echo.sock'}\n"
        reader, writer = await asyncio.open_unix_connection(tmp_path / "echo.sock")
        await echo_through(reader, writer)
        writer.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert not (tmp_path / "echo.sock").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_missing_certificate_is_one_line_at_load_time(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "  tls:\n    cert: missing.pem\n")
    missing = tmp_path / "missing.pem"
    for command in ("run", "check"):
        status, out, err = run_cli(command, str(spec))
        assert (status, out) == (2, "")
        assert err.endswith(f"{spec}:3:11: no such file: {missing}\n"), err
        assert err.count("\n") == 1


@pytest.mark.parametrize("problem", ["not PEM", "key of another certificate"])
def test_certificate_that_does_not_load_is_one_line_when_run(
    problem: str, ca: trustme.CA, certs: Path, tmp_path: Path
) -> None:
    if problem == "not PEM":
        (certs / "server.pem").write_text("not a certificate\n")
    else:
        ca.issue_cert("localhost").private_key_pem.write_to_path(str(certs / "server.key"))
    spec = write_spec(tmp_path, "  tls: {cert: certs/server.pem, key: certs/server.key}\n")
    status, out, err = run_cli("run", "--port", "0", str(spec))
    assert (status, out) == (1, "")  # nothing listened: a failure at start
    assert err.startswith(f"statemachine-server: {certs / 'server.pem'}: server.tls does not load")
    assert str(certs / "server.key") in err and err.count("\n") == 1 and "Traceback" not in err


def test_unreadable_certificate_is_named_by_build_server(tmp_path: Path) -> None:
    # The loader checks that the files exist; one may be gone when the server starts.
    spec = load_spec_text(ECHO, base_dir=tmp_path)
    settings = msgspec.structs.replace(spec.server, tls=TLSSettings(cert="gone.pem"))
    with pytest.raises(SpecError) as caught:
        build_server(msgspec.structs.replace(spec, server=settings), Kernel(), port=0)
    assert str(caught.value) == (
        f"{tmp_path / 'gone.pem'}: cannot read server.tls.cert: No such file or directory"
    )


def test_unix_socket_has_no_host_or_port(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text("server:\n  path: s.sock\n  port: 0\n" + ECHO, "s.yaml")
    assert str(caught.value) == "s.yaml:3:3: port is unused with path (a Unix socket): remove one"
    spec = write_spec(tmp_path, "  path: echo.sock\n")
    status, _, err = run_cli("run", "--port", "0", str(spec))
    assert (status, err.count("\n")) == (2, 1) and "--host/--port" in err
    assert not (tmp_path / "echo.sock").exists()
