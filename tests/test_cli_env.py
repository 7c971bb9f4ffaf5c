"""``run`` configured from the environment, as a container or a unit file does it:
real processes, each with only the variables the test gives it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import ROOT, TIMEOUT

PREFIX = "STATEMACHINE_SERVER_"
# A greeting from the server heap, so that what --set and its variable did shows.
GREETER = """
server:
  port: 1   # never used: every test gives a port
  heap: {greeting: hello, name: world, times: 1}
handlers:
  connected:
    - reply: "{server.greeting}, {server.name} x{server.times + 1}"
    - log: "greeted {session.id}"
    - close
"""


def environ(**variables: str) -> dict[str, str]:
    """This process's environment without our variables, plus ``variables``
    (named without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    return env | {PREFIX + name: value for name, value in variables.items()}


def cli(*args: str, **variables: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine_server", *args],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=environ(**variables),
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


class Served:
    """A server process: its port, and what it wrote once stopped."""

    def __init__(self, proc: asyncio.subprocess.Process, first: str):
        self.proc = proc
        self.first = first
        self.port = int(re.findall(r"listening on 127\.0\.0\.1:(\d+)", first)[0])
        self.out = ""
        self.err = ""

    async def greeting(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        async with asyncio.timeout(TIMEOUT):
            data = await reader.read()
        writer.close()
        return data.decode()

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            out, err = await self.proc.communicate()
        self.out, self.err = out.decode(), err.decode()
        assert self.proc.returncode is not None
        return self.proc.returncode


@asynccontextmanager
async def served(*args: str, **variables: str) -> AsyncIterator[Served]:
    """``run ARGS`` with ``variables``, once it says where it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemachine_server", "run", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env=environ(**variables),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            first = (await proc.stdout.readline()).decode()
        assert "listening on 127.0.0.1:" in first, first
        yield Served(proc, first)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
def greeter(tmp_path: Path) -> str:
    path = tmp_path / "greeter.yaml"
    path.write_text(GREETER)
    return str(path)


async def test_port_and_spec_from_the_environment(greeter: str) -> None:
    async with served(PORT="0", SPEC=greeter) as server:
        assert await server.greeting() == "hello, world x2\n"
        assert await server.stop() == 0
    assert server.out.splitlines()[0].startswith("greeted ")


async def test_the_command_line_wins_over_the_environment(greeter: str) -> None:
    # The variables are not even read when the option is given.
    async with served(greeter, "--port", "0", PORT="not a port", SPEC="no/such.yaml") as server:
        assert await server.greeting() == "hello, world x2\n"
        await server.stop()


async def test_set_from_the_environment_and_the_command_line(greeter: str) -> None:
    # Comma-separated; --set wins for a name given in both; the spec's value otherwise.
    async with served(
        greeter, "--port", "0", "--set", "name=moon", SET="greeting=bonjour, name=earth"
    ) as server:
        assert await server.greeting() == "bonjour, moon x2\n"
        await server.stop()
    # One item a line (a value may then hold commas); numbers keep their type.
    async with served(greeter, "--port", "0", SET="name=a, b\ntimes=41\n") as server:
        assert await server.greeting() == "hello, a, b x42\n"
        await server.stop()


async def test_log_format_from_the_environment_and_the_spec(greeter: str, tmp_path: Path) -> None:
    async with served(greeter, "--port", "0", LOG_FORMAT="json") as server:
        await server.greeting()
        await server.stop()
    lines = [json.loads(line) for line in [server.first, *server.out.splitlines()]]
    assert lines[0]["message"] == f"listening on 127.0.0.1:{server.port}"
    assert lines[1]["logger"] == "spec" and lines[1]["message"].startswith("greeted ")
    assert all(json.loads(line)["level"] for line in server.err.splitlines())
    # The spec's own choice, and the command line over it.
    spec = tmp_path / "json.yaml"
    spec.write_text(GREETER.replace("  port: 1", "  log: {format: json}"))
    async with served(str(spec), "--port", "0") as server:
        await server.greeting()
        await server.stop()
    assert json.loads(server.out.splitlines()[0])["state"] == "reading"
    async with served(str(spec), "--port", "0", "--log-format", "text") as server:
        await server.greeting()
        await server.stop()
    assert server.out.splitlines()[0].startswith("greeted ")


async def test_log_level_and_its_alias(greeter: str) -> None:
    for options, variables in [((), {"LOG_LEVEL": "info"}), (("-v",), {}), ((), {})]:
        async with served(greeter, "--port", "0", *options, **variables) as server:
            await server.stop()
        shown = "INFO listening on 127.0.0.1:" in server.err
        assert shown == (options != () or variables != {}), (options, variables, server.err)


async def test_trace_from_the_environment(greeter: str) -> None:
    async with served(greeter, "--port", "0", TRACE="yes") as server:
        await server.greeting()
        await server.stop()
    assert "reading --close--> closing" in server.err
    async with served(greeter, "--port", "0", "--no-trace", TRACE="on") as server:
        await server.greeting()
        await server.stop()
    assert "-->" not in server.err


async def test_metrics_from_the_environment(greeter: str) -> None:
    async with served(greeter, "--port", "0", METRICS="127.0.0.1:0", LOG_LEVEL="info") as server:
        await server.stop()
    assert "metrics at http://127.0.0.1:" in server.err


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "http", "STATEMACHINE_SERVER_PORT='http': expected 0 to 65535"),
        ("PORT", "65536", "STATEMACHINE_SERVER_PORT='65536': expected 0 to 65535"),
        ("TRACE", "maybe", "STATEMACHINE_SERVER_TRACE='maybe': expected 1/0, true/false, "
                           "yes/no or on/off"),
        ("WATCHDOG", "-1", "STATEMACHINE_SERVER_WATCHDOG='-1': expected 0 (off) or a number "
                           "of seconds"),
        ("LOOP", "trio", "STATEMACHINE_SERVER_LOOP='trio': expected one of auto, asyncio, uvloop"),
        ("LOG_LEVEL", "loud", "STATEMACHINE_SERVER_LOG_LEVEL='loud': expected one of debug, "
                              "info, warning, error"),
        ("LOG_FORMAT", "xml", "STATEMACHINE_SERVER_LOG_FORMAT='xml': expected one of text, json"),
        ("METRICS", "9100", "STATEMACHINE_SERVER_METRICS='9100': expected HOST:PORT, "
                            "e.g. 127.0.0.1:9100"),
        ("SET", "greeting", "STATEMACHINE_SERVER_SET item 'greeting': expected NAME=VALUE"),
        ("SET", "times=many", "STATEMACHINE_SERVER_SET item 'times=many': expected an integer "
                              "(the spec's server.heap.times is 1)"),
        ("SPEC", "no/such.yaml", "no/such.yaml: cannot read spec"),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_variable_and_exit_2(
    greeter: str, name: str, value: str, expected: str
) -> None:
    args = {"SPEC": ("--port", "0"), "PORT": (greeter,)}.get(name, (greeter, "--port", "0"))
    status, out, err = cli("run", *args, **{name: value})
    assert (status, out) == (2, "")
    assert err.startswith(f"statemachine-server: {expected}"), err
    assert err.count("\n") == 1


def test_an_unknown_variable_is_warned_about_with_the_closest_name() -> None:
    # A bad spec ends the run at once: the warnings come before it is read.
    status, _, err = cli("run", "no/such.yaml", PROT="8080", VERBOSE="1")
    assert status == 2
    warnings, error = err.splitlines()[:2], err.splitlines()[2]
    assert warnings[0].endswith(
        " WARNING STATEMACHINE_SERVER_PROT is not a setting "
        "(did you mean 'STATEMACHINE_SERVER_PORT'?): ignored"
    )
    assert warnings[1].endswith(
        " WARNING STATEMACHINE_SERVER_VERBOSE is not a setting (set "
        "STATEMACHINE_SERVER_LOG_LEVEL=info (-v is --log-level info) instead): ignored"
    )
    assert error.startswith("statemachine-server: no/such.yaml: cannot read spec")


def test_an_empty_variable_is_an_unset_one(greeter: str) -> None:
    status, _, err = cli("run", "no/such.yaml", PORT="", TRACE="", LOG_LEVEL="")
    assert status == 2 and err.count("\n") == 1 and "cannot read spec" in err


def test_check_and_graph_read_no_variables() -> None:
    status, out, err = cli("check", "specs/echo.yaml", PORT="http", PROT="1")
    assert (status, out, err) == (0, "specs/echo.yaml: ok\n", "")


def test_the_operations_table_names_every_option_with_its_variable() -> None:
    _, usage, _ = cli("run", "--help")
    options = set(re.findall(r"\[(--[a-z-]+)", usage)) - {"--no-trace", "--verbose"}
    assert len(options) == 12, options
    doc = (ROOT / "docs" / "operations.md").read_text()
    rows = {row.split("|")[1]: row for row in doc.splitlines() if row.startswith("| `")}
    for option in [*options, "SPEC"]:
        (row,) = [row for cell, row in rows.items() if f"`{option}" in cell]
        name = "SPEC" if option == "SPEC" else option[2:].replace("-", "_").upper()
        assert f"`{PREFIX}{name}`" in row, row
