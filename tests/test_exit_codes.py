"""``run``'s exit status, as a supervisor sees it: 2 when nothing could be started
(arguments, environment, spec), 1 when the server failed; one line on stderr."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, TIMEOUT


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m statemachine_server ARGS`` with none of our variables but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATEMACHINE_SERVER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine_server", *args],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env={**clean, **(env or {})},
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def python(code: str, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a listening socket of the test holds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_in_use_exits_1_with_one_line(taken_port: int) -> None:
    status, out, err = cli("run", "--port", str(taken_port))
    assert (status, out) == (1, "")
    assert err == f"statemachine-server: cannot listen on 127.0.0.1:{taken_port}: " \
                  "Address already in use\n"  # fmt: skip


def test_a_port_in_use_given_in_the_environment_exits_1(taken_port: int) -> None:
    status, _, err = cli("run", env={"STATEMACHINE_SERVER_PORT": str(taken_port)})
    assert status == 1 and err.count("\n") == 1 and f"127.0.0.1:{taken_port}" in err


def test_in_json_format_the_failure_is_one_json_object(taken_port: int) -> None:
    status, out, err = cli("run", "--port", str(taken_port), "--log-format", "json")
    assert (status, out) == (1, "")
    (line,) = err.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["logger"] == "statemachine_server"
    assert record["message"] == f"cannot listen on 127.0.0.1:{taken_port}: Address already in use"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind any port")
def test_a_port_without_permission_exits_1() -> None:
    status, _, err = cli("run", "--port", "1")
    assert status == 1 and err.count("\n") == 1 and "Permission denied" in err


def test_a_bad_spec_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("handlers:\n  input: [reply: '{sesion.id}']\n")
    status, out, err = cli("run", "--port", "0", str(bad))
    assert (status, out) == (2, "")
    assert err.startswith(f"statemachine-server: {bad}:2:20: unknown name 'sesion'")
    assert err.count("\n") == 1


def test_bad_arguments_and_values_exit_2() -> None:
    status, _, err = cli("run", "--no-such-option")
    assert status == 2 and "unrecognized arguments: --no-such-option" in err
    status, _, err = cli("run", "--watchdog", "soon")
    assert (status, err) == (2, "statemachine-server: --watchdog soon: expected 0 (off) or a "
                                "number of seconds\n")  # fmt: skip


# The top of main() is the last line of defence: here something the server calls
# at start raises, as a bug would.
CRASH = """
import sys
import statemachine_server.cli as cli

def broken(*args, **kwargs):
    raise RuntimeError("the kernel is broken")

cli.Kernel = broken
sys.exit(cli.main(["run", "--port", "0", *sys.argv[1:]]))
"""


def test_an_unexpected_error_exits_1_with_one_line() -> None:
    status, out, err = python(CRASH)
    assert (status, out) == (1, "")
    (line,) = err.splitlines()
    assert line.endswith(" ERROR unexpected error: RuntimeError: the kernel is broken")


def test_an_unexpected_error_shows_its_traceback_at_debug_level() -> None:
    status, _, err = python(CRASH, "--log-level", "debug")
    assert status == 1
    assert "ERROR unexpected error: RuntimeError: the kernel is broken\nTraceback" in err
    assert 'File "<string>", line 6, in broken' in err
