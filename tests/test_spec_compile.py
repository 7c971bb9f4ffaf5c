"""Compiling a spec: once per spec, generated code that tracebacks and `check --show-code` show,
Python targets resolved per compile."""

from __future__ import annotations

import ast
import linecache
import sys
import traceback
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import ROOT, run_cli

from statemachine_server import Kernel
from statemachine_server.language import build_server, builtin_spec_path, load_spec, load_spec_text
from statemachine_server.language.model import BackoffSettings
from statemachine_server.net.client import Backoff
from statemachine_server.net.connection import INPUT_BATCH

ECHO = "handlers:\n  input:\n    - reply: '{input}'\n    - log: 'client {session.id}: {input}'\n"


class Broken:
    """A session without the connection's output interface: generated code fails on it."""

    id = 7
    state = "reading"


def failure_text(handler: Any, *args: Any) -> str:
    try:
        handler(*args)
    except AttributeError:
        return traceback.format_exc()
    raise AssertionError("the handler did not fail")


def test_a_generated_handler_s_traceback_shows_its_line_and_its_spec(tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_text(ECHO)
    spec = load_spec(tmp_path / "greet.yaml")
    text = failure_text(spec.program.handlers["input"], Broken(), "hi")
    assert 'File "<greet.yaml handlers.input>", line 3, in _f' in text
    assert "s.outbox.append(i)" in text  # the generated line itself


def test_a_template_s_traceback_names_its_node(tmp_path: Path) -> None:
    # Not the echo shape (a rule): templates are functions of their own.
    (tmp_path / "rules.yaml").write_text(
        "handlers:\n  input:\n    - match: x\n      do: [reply: 'hello {heap.name}']\n"
    )
    spec = load_spec(tmp_path / "rules.yaml")

    class NoHeap(Broken):
        def put(self, *records: str) -> None:
            pass

    text = failure_text(spec.program.handlers["input"], NoHeap(), "x")
    # The handler is one generated function: its rule's test and actions inline.
    assert 'File "<rules.yaml handlers.input>", line ' in text
    assert "s.heap.get(" in text  # the line that failed, shown


def test_generated_filenames_name_builtin_and_text_specs() -> None:
    # (A name another source took first gets " #DIGEST" before its ">": see below.)
    def names(spec: Any) -> list[str]:
        return [name.split(" #")[0].removesuffix(">") + ">" for name in spec.program.sources]

    builtin = names(load_spec(builtin_spec_path()))
    assert builtin == [
        "<builtin echo.yaml handlers.input>",
        "<builtin echo.yaml handlers.input (batch)>",
    ]
    assert names(load_spec_text(ECHO))[0] == "<string handlers.input>"


def test_two_sources_under_one_name_both_stay_readable(tmp_path: Path) -> None:
    # Every spec read from text is <string>: a second, different source gets a
    # name of its own, so the first one's traceback still shows its own lines.
    # (Spec text is never code: only a spec of another shape has another source.)
    file = f"<{tmp_path.name}>"  # a name no other test's spec has
    first = load_spec_text(ECHO, file).program.handlers["input"]
    second = load_spec_text(ECHO + "    - reply: 'again'\n", file).program.handlers["input"]
    names = [f.__code__.co_filename for f in (first, second)]
    assert names[0] == f"<{tmp_path.name} handlers.input>"
    assert names[1].startswith(f"<{tmp_path.name} handlers.input #") and names[1].endswith(">")
    assert "s.put(" not in "".join(linecache.getlines(names[0]))
    assert "s.put(" in "".join(linecache.getlines(names[1]))


def test_check_show_code_prints_each_generated_function_under_its_filename() -> None:
    status, out, _ = run_cli("check", "--show-code", "specs/echo.yaml")
    assert status == 0
    assert out.startswith("specs/echo.yaml: ok\n")
    program = load_spec(ROOT / "specs" / "echo.yaml").program
    for filename, source in program.sources.items():
        assert f"# {filename}\n{source}" in out
    assert "# <echo.yaml handlers.input (batch)>\ndef _f(s, records):\n" in out
    assert "            _out.append(i)\n" in out


def test_build_server_runs_the_program_the_loader_compiled() -> None:
    spec = load_spec_text(ECHO)
    server = build_server(spec, Kernel(), port=0)
    server.close()
    assert server.handlers[INPUT_BATCH] is spec.program.named[INPUT_BATCH]
    # A second server gets a program of its own (groups and timers are per server),
    # and so does a spec changed after loading (it still holds the old program).
    again = build_server(spec, Kernel(), port=0)
    again.close()
    assert again.handlers[INPUT_BATCH] is not server.handlers[INPUT_BATCH]
    changed = msgspec.structs.replace(spec, events=["poke"])
    assert changed.program is None  # not carried: it would not be the copy's
    other = build_server(changed, Kernel(), port=0)
    other.close()
    assert INPUT_BATCH not in other.handlers  # named events: not the echo shape any more


def test_the_program_is_no_part_of_the_spec_s_data() -> None:
    # Two loads of one text are equal specs and encode alike; each has its program.
    first, second = load_spec_text(ECHO), load_spec_text(ECHO)
    assert first == second and first.program is not second.program
    assert b"program" not in msgspec.json.encode(first)


def test_call_targets_are_resolved_per_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No process-wide cache of functions: a later compile sees the module as it is.
    (tmp_path / "probe_calls_module.py").write_text("def answer(s, i, m):\n    return 'one'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = "handlers:\n  input:\n    - call: probe_calls_module:answer\n"
    sent: list[str] = []

    class Session:
        id = 1

        def put(self, *records: str) -> None:
            sent.extend(records)

    load_spec_text(text).program.handlers["input"](Session(), "x")
    module = sys.modules["probe_calls_module"]
    monkeypatch.setattr(module, "answer", lambda s, i, m: "two")
    load_spec_text(text).program.handlers["input"](Session(), "x")
    assert sent == ["one", "two"]


def test_backoff_settings_mirror_the_client_s_backoff() -> None:
    # The model keeps its own copy of Backoff's fields (it imports no network code):
    # same names, same defaults.
    def fields(struct: Any) -> list[tuple[str, Any]]:
        return [(f.name, f.default) for f in msgspec.structs.fields(struct)]

    assert fields(BackoffSettings) == fields(Backoff)
    model = ROOT / "statemachine_server" / "language" / "model.py"
    imported = [
        node.module or ""
        for node in ast.walk(ast.parse(model.read_text()))
        if isinstance(node, ast.ImportFrom)
    ]
    assert not [m for m in imported if m.startswith(("net", "core", "work"))], imported
