"""The README's and docs' examples are the real files, and the diagram is the real machine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from statemachine_server.core import lifecycle

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_python_example_is_the_example_file() -> None:
    assert (ROOT / "examples" / "echo_server.py").read_text() in fenced(README, "python")


def test_readme_example_is_under_20_lines_of_code() -> None:
    code = (ROOT / "examples" / "echo_server.py").read_text().splitlines()
    assert len([line for line in code if line.strip()]) < 20


def test_readme_yaml_is_the_shipped_spec() -> None:
    assert (ROOT / "specs" / "echo.yaml").read_text() in fenced(README, "yaml")


def test_lifecycle_diagram_is_drawn_from_the_rules() -> None:
    (diagram,) = fenced((ROOT / "docs" / "lifecycle.md").read_text(), "mermaid")
    assert diagram == lifecycle.draw()


def test_quick_start_test_command_is_what_ci_runs() -> None:
    test_command = fenced(README, "sh")[1].strip()
    assert test_command.split("&& ", 1)[1] in (ROOT / ".ci" / "run").read_text()


def test_every_limit_is_documented_with_its_default() -> None:
    import msgspec

    from statemachine_server.limits import Limits

    doc = (ROOT / "docs" / "limits.md").read_text()
    for field in msgspec.structs.fields(Limits):
        default = field.default
        shown = (
            f"{default} bytes" if "water" in field.name or field.name == "max_output" else default
        )
        row = f"| `{field.name}` | {shown}"
        assert row in doc, row


def test_every_filter_limit_is_documented_with_its_default() -> None:
    from statemachine_server import filters

    doc = (ROOT / "docs" / "limits.md").read_text()
    for name in ["LINE", "BLOCK", "JSON", "MSGPACK"]:
        assert f"| {getattr(filters, 'DEFAULT_MAX_' + name)} bytes |" in doc, name


def test_filter_docs_examples_run() -> None:
    blocks = fenced((ROOT / "docs" / "filters.md").read_text(), "python")
    assert len(blocks) >= 7
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/filters.md example {i + 1}", "exec"), {"__name__": "example"})


def test_filter_docs_table_lists_every_filter() -> None:
    from statemachine_server.filters import FILTERS

    doc = (ROOT / "docs" / "filters.md").read_text()
    for name, cls in FILTERS.items():
        assert f"| `{name}` | `{cls.__name__}` |" in doc, name


def test_spec_reference_documents_every_key_with_its_default() -> None:
    import json

    import msgspec

    from statemachine_server.language import model

    doc = (ROOT / "docs" / "spec-reference.md").read_text()
    sections = {
        model.Spec: "## Top level",
        model.ServerSettings: "### `server`",
        model.LineFilterSettings: "### `server.filter`",
        model.StreamFilterSettings: "### `server.filter: stream`",
        model.BlockFilterSettings: "### `server.filter: block`",
        model.JSONFilterSettings: "### `server.filter: json`",
        model.MsgPackFilterSettings: "### `server.filter: msgpack`",
        model.Schema: "### `server.filter.schema`",
        model.ClientSettings: "### `clients.NAME`",
        model.LogSettings: "### `server.log`",
        model.TLSSettings: "### `server.tls`",
        model.State: "### `states.NAME`",
        model.StateTimeout: "### `states.NAME.timeout`",
        model.Rule: "### Rules",
        **{cls: f"### `{name}`" for name, cls in model.ACTIONS.items()},
    }

    def shown(field: Any) -> str:
        if field.required:
            return "required"
        if field.default_factory is not msgspec.NODEFAULT:
            value = field.default_factory()
            if isinstance(value, msgspec.Struct):
                return "defaults below"
            return f"`{json.dumps(value)}`"
        value = field.default
        if value is None:
            return "none"
        if isinstance(value, str):
            return f"`{json.dumps(value)}`"
        return json.dumps(value)

    for struct, heading in sections.items():
        assert f"\n{heading}\n" in doc, heading
        section = doc.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
        for field in msgspec.structs.fields(struct):
            if field.name.startswith("_"):
                continue
            row = f"| `{field.encode_name}` | {shown(field)} |"
            if field.name == "type" and struct is model.LineFilterSettings:
                row = '| `type` | `"line"` |'
            assert row in section, (heading, row)
    # Every action, template name and event is there.
    for name in model.ACTIONS:
        assert f"### `{name}`" in doc
    from statemachine_server.language.templates import NAMES

    for name in NAMES:
        assert f"`{{{name}}}`" in doc, name
    for event in model.BUILTIN_EVENTS:
        assert f"| `{event}` |" in doc, event


FIRST = (ROOT / "docs" / "first-protocol.md").read_text()
GREETER = ROOT / "docs" / "examples" / "greeter.yaml"


def test_walk_through_shows_the_real_files_and_errors(tmp_path: Path) -> None:
    import shutil

    from statemachine_server import SpecError
    from statemachine_server.language import load_spec

    assert GREETER.read_text() in fenced(FIRST, "yaml")
    assert (ROOT / "docs" / "examples" / "greeter_words.py").read_text() in fenced(FIRST, "python")
    broken = tmp_path / "greeter.yaml"
    text = GREETER.read_text().replace("goto: talking", "goto: taking")
    broken.write_text(text.replace("({result} words)", "({reslt} words)"))
    shutil.copy(ROOT / "docs" / "examples" / "greeter_words.py", tmp_path)
    try:
        load_spec(broken)
    except SpecError as exc:
        errors = [e.where_and_what().replace(str(tmp_path) + "/", "") for e in exc.errors]
    shown = next(b for b in fenced(FIRST, "text") if "check greeter.yaml" in b).splitlines()[1:]
    assert len(errors) == len(shown)
    for error, line in zip(errors, shown, strict=True):
        assert error.startswith(line.removesuffix("..."))
    # The generated function it names is one of the greeter's.
    named = re.search(r"`(<greeter\.yaml [^`]+>)`", FIRST)
    assert named is not None and named[1] in load_spec(GREETER).program.sources


async def test_walk_through_session_is_what_the_server_says() -> None:
    import asyncio
    import contextlib
    import io

    from statemachine_server import Kernel
    from statemachine_server.console import ConsoleLog
    from statemachine_server.language import build_server, load_spec

    session = next(b for b in fenced(FIRST, "text") if b.startswith("$ nc")).splitlines()[1:]
    sent = [line for line in session if line.split()[0] in ("SAY", "USER", "QUIT")]
    kernel = Kernel()
    started = asyncio.Event()
    console = ConsoleLog(kernel, io.StringIO())
    server = build_server(
        load_spec(GREETER), kernel, port=0, on_started=lambda s: started.set(), console=console
    )
    task = asyncio.create_task(kernel.serve())
    try:
        async with asyncio.timeout(20):
            await started.wait()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write("".join(line + "\n" for line in sent).encode())
            got = (await reader.read()).decode().splitlines()
        writer.close()
        assert got == [line for line in session if line not in sent]
    finally:
        await kernel.shutdown(deadline=1.0)
        kernel.stop()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(20):
                await task


def test_readme_diagrams_are_drawn_from_the_specs() -> None:
    from statemachine_server.language import load_spec
    from statemachine_server.language.graph import draw

    diagrams = fenced(README, "mermaid")
    assert draw(load_spec(ROOT / "specs" / "echo.yaml")) in diagrams
    assert draw(load_spec(ROOT / "specs" / "chat.yaml")) in diagrams
