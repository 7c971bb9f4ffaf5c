"""Conversation scripts: their syntax, running them, ``statemachine-server test`` and pytest."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import shutil
from pathlib import Path

import pytest

from statemachine_server.testkit import command
from statemachine_server.testkit.conversation import run_script
from statemachine_server.testkit.script import ScriptError, parse, render

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def test_every_kind_of_step() -> None:
    script = parse(
        """\
        # a comment, then headers
        spec: chat.yaml
        heap: folder={tmp}
        server: limits.idle_timeout=5
        transport: tcp
        clock: real
        timeout: 2.5

        < Welcome
        > alice
        >
        >> par
        > "two\\nlines"
        < /^hello/i
        < "/not a regex/"
        <closed
        ~ 30s
        ~ 500ms
        ~ 1.5
        ~ 2m
        [bob]
        open
        eof
        @alice close
        """.replace("        ", ""),
        "x.conv",
        "/specs",
    )
    assert script.spec == Path("/specs/chat.yaml")
    assert script.heap == {"folder": "{tmp}"}
    assert script.server == {"limits": {"idle_timeout": 5}}
    assert (script.transport, script.clock, script.timeout) == ("tcp", "real", 2.5)
    steps = [(s.kind, s.client, s.value) for s in script.steps]
    assert steps == [
        ("expect", "client", "Welcome"),
        ("send", "client", "alice"),
        ("send", "client", ""),
        ("raw", "client", "par"),
        ("send", "client", "two\nlines"),
        ("expect", "client", re.compile("^hello", re.I)),
        ("expect", "client", "/not a regex/"),
        ("closed", "client", None),
        ("advance", "client", 30.0),
        ("advance", "client", 0.5),
        ("advance", "client", 1.5),
        ("advance", "client", 120.0),
        ("open", "bob", None),
        ("eof", "bob", None),
        ("close", "alice", None),
    ]
    assert script.steps[0].line == 9


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("< a\nfrob\n", "x.conv:2: not a step: 'frob'"),
        ("< /a(/\n", "x.conv:1: bad regex: missing ), unterminated subpattern"),
        ("~ soon\n", "x.conv:1: expected a duration after ~"),
        ("transport: udp\n", "x.conv:1: transport: memory or tcp, not 'udp'"),
        ("heap: nothing\n", "x.conv:1: heap: expects NAME=VALUE"),
        ('> "bad \\q escape"\n', "x.conv:1: bad quoted text"),
    ],
)
def test_errors_name_the_file_and_line(text: str, error: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse(text, "x.conv")
    assert str(caught.value).startswith(error)


def test_render_reads_back_as_the_same_steps() -> None:
    steps = [
        ("expect", "plain text"),
        ("send", " padded "),
        ("send", ""),
        ("raw", "x"),
        ("expect", "/looks like a regex/"),
        ("expect", '"quoted"'),
        ("expect", {"ok": True}),
        ("advance", 61.5),
        ("expect", "a\x00b"),
        ("closed", None),
    ]
    script = parse(render(steps, spec="s.yaml", comment="made\nby a test"), "r.conv")
    again = [(s.kind, s.value) for s in script.steps]
    assert again == [
        ("expect", "plain text"),
        ("send", " padded "),
        ("send", ""),
        ("raw", "x"),
        ("expect", "/looks like a regex/"),
        ("expect", '"quoted"'),
        ("expect", '{"ok":true}'),
        ("advance", 61.5),
        ("expect", "a\x00b"),
        ("closed", None),
    ]
    assert script.spec == Path("s.yaml")


def test_a_failure_names_the_script_line_and_the_rule() -> None:
    script = parse(
        "< Welcome to chat. Your nick?\n> 9lives\n< Hello 9lives\n", "bad.conv", SPECS.parent
    )
    outcome = asyncio.run(run_script(script, SPECS / "chat.yaml"))
    assert not outcome.ok and outcome.steps == 3
    assert outcome.failure is not None
    lines = outcome.failure.splitlines()
    assert lines[0] == "bad.conv:3: client did not receive what was expected"
    assert lines[1:3] == [
        "  expected: Hello 9lives",
        "  received: A nick is a letter, then up to 15 letters, digits or _. Your nick?",
    ]
    chat = (Path(__file__).resolve().parent.parent / "specs" / "chat.yaml").read_text()
    line = next(n for n, text in enumerate(chat.splitlines(), 1) if "# not a command (" in text)
    where = rf"chat\.yaml:{line} \(states\.login\.handlers\.input\[1\]\)"
    assert re.match(r"  answered by: .*" + where, lines[3])


def test_a_conversation_that_leaves_a_job_running_fails() -> None:
    script = parse("> sleep 5\n", "job.conv")
    outcome = asyncio.run(run_script(script, SPECS / "jobs.yaml"))
    assert outcome.failure is not None
    assert outcome.failure.startswith("job.conv: the conversation left behind:")
    assert "1 job(s) still running" in outcome.failure
    finished = parse("> sleep 5\n~ 5s\n< slept 5 s\n", "job.conv")
    assert asyncio.run(run_script(finished, SPECS / "jobs.yaml")).ok


# -- statemachine-server test -----------------------------------------------------------------


def _test_command(*argv: str) -> tuple[int, str, str]:
    """The subcommand as cli.py wires it: its parser, then run()."""
    parser = argparse.ArgumentParser(prog="statemachine-server")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    status = command.run(parser.parse_args(["test", *argv]), out, err)
    return status, out.getvalue(), err.getvalue()


def test_command_runs_scripts() -> None:
    status, out, err = _test_command(
        str(SPECS / "chat.yaml"),
        str(SCRIPTS / "test_chat_rooms.conv"),
        str(SCRIPTS / "test_chat_nick_timeout.conv"),
    )
    assert (status, err) == (0, "")
    assert out.endswith("2 scripts: 2 passed\n")
    assert "PASS " in out


def test_command_exit_codes(tmp_path: Path) -> None:
    failing = tmp_path / "f.conv"
    failing.write_text("< Welcome to chat. Your nick?\n> ada\n< Hello bob\n")
    status, out, _ = _test_command(str(SPECS / "chat.yaml"), str(failing))
    assert status == 1
    assert f"FAIL {failing}:3: client did not receive what was expected" in out
    assert out.endswith("1 script: 0 passed, 1 failed\n")
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("version: 1\nhandlerz: {}\n")
    assert _test_command(str(bad_spec), str(failing))[0] == 2
    bad_script = tmp_path / "b.conv"
    bad_script.write_text("hello\n")
    status, _, err = _test_command(str(SPECS / "chat.yaml"), str(bad_script))
    assert (status, err) == (2, f"{bad_script}:1: not a step: 'hello' (expected > TEXT, >> TEXT, "
                                "< TEXT, < /REGEX/, <closed, ~ 30s, open, close, eof, [NAME], "
                                "@NAME STEP or # comment)\n")  # fmt: skip
    status, _, err = _test_command(str(SPECS / "echo.yaml"))
    assert status == 2 and "no scripts given" in err
    assert _test_command(str(SPECS / "echo.yaml"), "--set", "nothing")[0] == 2


def test_command_finds_the_scripts_beside_a_spec(tmp_path: Path) -> None:
    shutil.copy(SPECS / "echo.yaml", tmp_path / "echo.yaml")
    (tmp_path / "echo.conv").write_text("spec: echo.yaml\n> hi\n< hi\n")
    (tmp_path / "other.conv").write_text("spec: elsewhere.yaml\n> hi\n< no\n")
    status, out, _ = _test_command(str(tmp_path / "echo.yaml"))
    assert status == 0 and out.endswith("1 script: 1 passed\n")


# -- pytest collects test_*.conv -------------------------------------------------------------


def test_pytest_collects_conversations(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    shutil.copy(SPECS / "echo.yaml", pytester.path / "echo.yaml")
    # Beside its spec, named after it: no header needed.
    (pytester.path / "test_echo.conv").write_text("> hello\n< hello\n")
    (pytester.path / "test_wrong.conv").write_text("spec: echo.yaml\n> hello\n< goodbye\n")
    (pytester.path / "notes.conv").write_text("not collected: not named test_*.conv\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_wrong.conv:3: client did not receive what was expected",
        "  expected: goodbye",
        "  received: hello",
        "  answered by: *echo.yaml:14 (handlers.input)",
    ])  # fmt: skip
