"""Log formats and redaction: the spec's log lines (text, JSON) and the server's diagnostics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TIMEOUT, wait_until

from statemachine_server import ConsoleLog, Kernel
from statemachine_server.console import clean
from statemachine_server.errors import SpecError
from statemachine_server.language import builtin_spec_path, load_spec, load_spec_text
from statemachine_server.logs import (
    JSONFormatter,
    TextFormatter,
    iso_time,
    redacted_template,
    shown_heap,
)

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# A login whose password and the server's token must never reach a log.
LOGIN = r"""
server:
  log: {format: FORMAT, redact: [password, server.token]}
  heap: {token: s3cret}
heap: {user: "", password: ""}
states:
  start:
    handlers:
      input:
        - match: '^login (?P<user>\S+) (?P<pw>\S+)$'
          do:
            - set: {user: "{match.user}", password: "{match.pw}"}
            - log: "login {heap.user} pw={heap.password} token={server.token} \
                    ({len(heap.password)} chars) {{heap.password}}"
            - reply: ok
            - goto: done
  done:
    handlers:
      input:
        - equals: boom
          do: [reply: "{heap.user + 1}"]
        - do: [close]
"""
LOGGED = "login bob pw=[redacted] token=[redacted] ([redacted] chars) {heap.password}"
# The echo shape (one generated function, see codegen): redacted the same way.
ECHO = """
server:
  log: {format: FORMAT, redact: [server.token]}
  heap: {token: s3cret}
handlers:
  input:
    - reply: "{input}"
    - log: "client {session.id}: {input} {server.token}"
"""


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    async with asyncio.timeout(TIMEOUT):
        data = await reader.read()
    writer.close()
    return data


async def logged(serve_spec: Any, spec: str, fmt: str, payload: bytes) -> tuple[str, int]:
    """What the console wrote while serving ``payload`` to one client, and the
    session's id (the server's sessions before it: the listener)."""
    kernel = Kernel()
    stream = io.StringIO()
    console = ConsoleLog(kernel, stream=stream)
    server = await serve_spec(spec.replace("FORMAT", fmt), kernel=kernel, console=console)
    await exchange(server.port, payload)
    kernel.tick()  # the last tick's lines: written at its end
    return stream.getvalue(), server.id + 1


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_log_action_writes_redacted_names_as_redacted(serve_spec: Any, fmt: str) -> None:
    out, sid = await logged(serve_spec, LOGIN, fmt, b"login bob hunter2\nbye\n")
    assert "hunter2" not in out and "s3cret" not in out
    if fmt == "text":
        assert out == LOGGED + "\n"
        return
    (line,) = out.splitlines()
    record = json.loads(line)
    assert TIME.fullmatch(record.pop("time"))
    assert record == {"level": "info", "logger": "spec", "message": LOGGED, "session": sid,
                      "state": "start"}  # fmt: skip


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_the_echo_shape_redacts_and_writes_json_too(serve_spec: Any, fmt: str) -> None:
    out, sid = await logged(serve_spec, ECHO, fmt, b"hello\nworld\n")
    lines = [f"client {sid}: {word} [redacted]" for word in ("hello", "world")]
    if fmt == "text":
        assert out.splitlines() == lines
        return
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in records] == lines
    assert {(r["session"], r["state"], r["logger"]) for r in records} == {(sid, "reading", "spec")}


def test_text_log_ops_compile_as_before_and_json_ones_to_records() -> None:
    text = load_spec(builtin_spec_path())
    json_spec = load_spec(builtin_spec_path(), server={"log": {"format": "json"}})
    # Nothing the template does not read is redacted: the same code.
    hidden = load_spec(builtin_spec_path(), server={"log": {"redact": ["server.name"]}})
    assert hidden.program.sources == text.program.sources
    source = "".join(text.program.sources.values())
    assert '    _w(f"{' in source and "_now" not in source
    source = "".join(json_spec.program.sources.values())
    assert '_w((_now(), s.id, s.state, f"{' in source


@pytest.mark.parametrize("redact", ["[password]", "[]"])
def test_a_redacted_field_is_checked_as_written(redact: str) -> None:
    spec = f"heap: {{password: ''}}\nserver: {{log: {{redact: {redact}}}}}\n" \
           "handlers:\n  input: [log: 'x {len(heap.password, 2)}']\n"  # fmt: skip
    with pytest.raises(SpecError) as caught:
        load_spec_text(spec, "t.yaml")
    assert caught.value.where_and_what() == "t.yaml:4:20: len() takes 1 argument, not 2"


def test_redacted_template_rule() -> None:
    redact = {"password", "server.token"}

    def rewrite(fields: list[str]) -> str | None:
        return redacted_template([("a{", f, 0) for f in fields], redact)

    assert rewrite(["heap.user", "server.password", "heap.token"]) is None
    assert rewrite(["heap.password"]) == "a{{[redacted]"
    assert rewrite(["'*' * len(heap.password)", "heap.user"]) == "a{{[redacted]a{{{heap.user}"
    assert rewrite(["server.token if true else 1"]) == "a{{[redacted]"
    assert rewrite(["heap.password +"]) is None  # a syntax error: the compiler reports it


def test_console_json_lines_are_one_object_each_cleaned_and_cut_as_text() -> None:
    stream = io.StringIO()
    console = ConsoleLog(Kernel(), stream=stream, max_line=16)
    console.json = True
    console.lines.append((0.5, 7, "reading", "esc \x1b and\nnewline"))
    console.lines.append((1.0, 7, None, "x" * 40))
    console.write("from Python")
    console.close()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    # The message is the line text format writes.
    assert [r["message"] for r in records] == [
        clean("esc \x1b and\nnewline", 16),
        "x" * 13 + "...",
        "from Python",
    ]
    assert records[0]["message"].startswith("esc \\x1b and\\")
    assert records[0]["time"] == "1970-01-01T00:00:00.500Z"
    assert (records[0]["session"], records[0]["state"]) == (7, "reading")
    assert "session" not in records[2] and TIME.fullmatch(records[2]["time"])


def record(level: int = logging.ERROR, **extra: Any) -> logging.LogRecord:
    try:
        raise ValueError("bad value")
    except ValueError:
        exc_info = sys.exc_info()
    item = logging.LogRecord("statemachine_server", level, __file__, 1, "session %d: %s", (3, "x"),
                             exc_info if level >= logging.ERROR else None)  # fmt: skip
    item.__dict__.update(extra)
    return item


def test_text_diagnostics_are_timed_in_utc_with_milliseconds() -> None:
    line = TextFormatter().format(record(logging.WARNING))
    assert re.fullmatch(TIME.pattern + " WARNING session 3: x", line)
    assert iso_time(86400 * 365 + 1.25) == "1971-01-01T00:00:01.250Z"


def test_json_diagnostics_carry_the_session_and_the_traceback() -> None:
    item = record(session=3, state="start", heap={"user": "bob", "password": "hunter2"})
    fields = json.loads(JSONFormatter(redact=["password"]).format(item))
    assert fields["level"] == "error" and fields["logger"] == "statemachine_server"
    assert (fields["message"], fields["session"], fields["state"]) == ("session 3: x", 3, "start")
    assert fields["traceback"].endswith("ValueError: bad value")
    assert "heap" not in fields  # not above debug level: client data
    fields = json.loads(JSONFormatter(redact=["password"], show_heap=True).format(item))
    assert fields["heap"] == {"user": "bob", "password": "[redacted]"}
    line = TextFormatter(redact=["password"], show_heap=True).format(item)
    assert line.splitlines()[0].endswith(
        'session 3: x (heap: {"user": "bob", "password": "[redacted]"})'
    )


def test_a_heap_shown_in_a_report_is_cut() -> None:
    shown = shown_heap({"n": 1, "big": "x" * 1000, "items": list(range(1000)), "k": None}, ())
    assert shown["n"] == 1 and shown["k"] is None
    assert len(shown["big"]) == 200 and shown["big"].endswith("...")
    assert shown["items"].startswith("[0, 1, 2") and len(shown["items"]) == 200


async def test_diagnostics_about_a_session_carry_its_id_and_state(
    serve_spec: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve_spec(LOGIN.replace("FORMAT", "text"))
    with caplog.at_level(logging.ERROR, "statemachine_server"):
        await exchange(server.port, b"login bob hunter2\nboom\n")
    (report,) = [r for r in caplog.records if "handler raised" in r.getMessage()]
    assert (report.session, report.state) == (server.id + 1, "done")  # type: ignore[attr-defined]
    assert report.heap == {"user": "bob", "password": "hunter2"}  # type: ignore[attr-defined]
    # What a formatter shows of it: redacted (tested above).


# -- a handler's error, reported by a real server -----------------------------------------


async def serve_and_fail(spec: Path, *options: str) -> str:
    """Log in, make the handler raise; the server's stderr once it has stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEMACHINE_SERVER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemachine_server", "run", str(spec), "--port", "0", *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            first = (await proc.stdout.readline()).decode()
            port = int(re.findall(r"listening on 127\.0\.0\.1:(\d+)", first)[0])
            assert await exchange(port, b"login bob hunter2\nboom\n") == b"ok\n"
            proc.send_signal(signal.SIGTERM)
            _, err = await proc.communicate()
        assert proc.returncode == 0
        return err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_handler_error_report_shows_the_heap_redacted_at_debug_level(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "login.yaml"
    spec.write_text(LOGIN.replace("FORMAT", "text"))
    err = await serve_and_fail(spec, "--log-format", "json", "--log-level", "debug")
    records = [json.loads(line) for line in err.splitlines()]
    (report,) = [r for r in records if "handler raised TypeError" in r["message"]]
    assert report["level"] == "error" and report["state"] == "done"
    assert isinstance(report["session"], int)
    assert report["heap"] == {"user": "bob", "password": "[redacted]"}
    assert report["traceback"].startswith("Traceback") and "TypeError" in report["traceback"]
    assert "hunter2" not in err and "s3cret" not in err
    # Text: the heap after the message; not at all at the default level.
    err = await serve_and_fail(spec, "--log-level", "debug")
    assert '(heap: {"user": "bob", "password": "[redacted]"})\nTraceback' in err
    err = await serve_and_fail(spec)
    assert "handler raised TypeError" in err and "(heap:" not in err and "hunter2" not in err


@pytest.mark.parametrize("states", [False, True])
async def test_an_outbound_client_s_log_lines_in_json(serve_spec: Any, states: bool) -> None:
    # The handlers of a client shared by the server run as the client's connection.
    feed = await serve_spec("handlers:\n  connected: [reply: hi, close]\n")
    kernel = Kernel()
    stream = io.StringIO()
    console = ConsoleLog(kernel, stream=stream)
    machine = "states:\n  only:\n    handlers:\n      input: [close]\n" if states else ""
    await serve_spec(
        f"""
server: {{log: {{format: json}}}}
clients:
  feed:
    port: {feed.port}
    per: server
    reconnect: {{initial: 30}}
    handlers:
      input: [log: "feed said {{input}}"]
      disconnected: [log: "feed gone"]
{machine}""",
        kernel=kernel,
        console=console,
    )
    await wait_until(lambda: "feed gone" in stream.getvalue())
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["message"] for r in records] == ["feed said hi", "feed gone"]
    assert all(isinstance(r["session"], int) and "state" in r for r in records)
