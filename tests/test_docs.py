"""The README's and docs' examples are the real files, and the diagram is the real machine."""

from __future__ import annotations

import re
from pathlib import Path

from statemachine_server import lifecycle

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
