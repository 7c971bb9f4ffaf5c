"""The watchdog: a held loop is reported once per stall, and a work step past its
``timeout`` is interrupted even if it never yields; a second signal ends a blocked
server. Real time: the loop is really held (that is what is being tested)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from conftest import TIMEOUT

from statemachine_server import Kernel, Session
from statemachine_server.work import WorkTimeout


async def serve(kernel: Kernel) -> None:
    async with asyncio.timeout(TIMEOUT):
        await kernel.serve()


async def test_a_held_loop_is_logged_once_with_its_stack_and_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = Kernel(watchdog=0.1)

    def hold_the_loop(session: Session) -> None:
        time.sleep(0.5)  # the blocking call under test, not a wait for an event

    session = kernel.spawn({"started": lambda s: s.post("hold"), "hold": hold_the_loop})
    with caplog.at_level(logging.WARNING, logger="statemachine_server"):
        await serve(kernel)
    reports = [r.getMessage() for r in caplog.records if "watchdog" in r.getMessage()]
    assert len(reports) == 1, reports  # once per stall, however long it lasts
    assert f"session {session.id}" in reports[0]
    assert "hold_the_loop" in reports[0]  # the stack names the culprit
    assert kernel.statistics().stalls == 1


async def test_a_loop_that_keeps_turning_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    kernel = Kernel(watchdog=0.1)

    def steps() -> Generator[None, None, None]:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # chunked: each step is short
            yield

    kernel.spawn({"started": lambda s: s.work(steps())})
    with caplog.at_level(logging.WARNING, logger="statemachine_server"):
        await serve(kernel)
    assert kernel.statistics().stalls == 0
    assert not [r for r in caplog.records if "watchdog" in r.getMessage()]


def spin() -> Generator[None, None, None]:
    while True:  # never yields
        pass
    yield


def nap() -> Generator[None, None, None]:
    time.sleep(3600)  # a blocking call that never returns by itself
    yield


@pytest.mark.parametrize("step", [spin, nap], ids=["busy", "blocked-call"])
async def test_a_step_past_its_timeout_is_interrupted(step: Any) -> None:
    kernel = Kernel(watchdog=0.1)
    errors: list[BaseException] = []
    cleaned: list[bool] = []

    def job() -> Generator[None, None, None]:
        try:
            yield from step()
        finally:
            cleaned.append(True)

    def started(session: Session) -> None:
        session.work(job(), on_error=lambda s, exc: errors.append(exc), timeout=0.3)

    kernel.spawn({"started": started})
    began = time.monotonic()
    await serve(kernel)
    assert time.monotonic() - began < 2
    assert cleaned == [True]  # the step's finally ran
    assert len(errors) == 1 and isinstance(errors[0], WorkTimeout), errors
    assert kernel.statistics().handler_errors == 0


def test_the_watchdog_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="watchdog"):
        Kernel(watchdog=-1)
    assert Kernel(watchdog=0).statistics().stalls == 0


SPEC = """\
version: 1
server:
  name: spinner
  limits: {drain_timeout: 60}
handlers:
  input:
    - equals: spin
      do:
        - work: {function: "spinner:spin", timeout: 1, on_error: [reply: "stopped: {result}"]}
        - reply: "never"
    - equals: forever
      do:
        - work: "spinner:spin"
    - do:
        - reply: "{input}"
"""

MODULE = """\
def spin(session, input, match):
    print("spinning", flush=True)
    while True:
        pass
    yield
"""


async def start(tmp_path: Path, *options: str) -> tuple[asyncio.subprocess.Process, int]:
    (tmp_path / "spinner.yaml").write_text(SPEC)
    (tmp_path / "spinner.py").write_text(MODULE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemachine_server", "run", str(tmp_path / "spinner.yaml"),
        "--port", "0", "--watchdog", "0.2", *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = (await proc.stdout.readline()).decode()
    assert first.startswith("listening on 127.0.0.1:"), first
    return proc, int(first.rsplit(":", 1)[1])


async def test_a_spec_step_that_never_yields_times_out_and_the_server_goes_on(
    tmp_path: Path,
) -> None:
    proc, port = await start(tmp_path)
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"spin\n")
            assert await reader.readline() == b"stopped: work timed out after 1 s (interrupted)\n"
            writer.write(b"still here\n")  # the same connection goes on
            assert await reader.readline() == b"still here\n"
            writer.close()
            proc.send_signal(signal.SIGTERM)
            _, err = await proc.communicate()
        assert proc.returncode == 0
        assert b"watchdog: the event loop has been held" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_second_sigterm_ends_a_server_whose_loop_is_held(tmp_path: Path) -> None:
    proc, port = await start(tmp_path, "-v")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"forever\n")  # no timeout: it holds the loop for good
            await writer.drain()
            assert await proc.stdout.readline() == b"spinning\n"
            proc.send_signal(signal.SIGTERM)  # graceful: never runs, the loop is held
            while b"SIGTERM: shutting down" not in await proc.stderr.readline():
                pass  # heard, at once: two signals sent together would count as one
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        assert proc.returncode == 0
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
