"""``statemachine-server test``: the test kit's command, from the command line."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli


def test_a_script_that_passes_exits_0() -> None:
    status, out, _ = run_cli("test", "specs/chat.yaml", "tests/scripts/test_chat_rooms.conv")
    assert status == 0, out
    assert "1 passed" in out


def test_a_script_that_fails_exits_1_naming_its_line(tmp_path: Path) -> None:
    script = tmp_path / "test_wrong.conv"
    script.write_text("> alice\n< nobody says this\n")
    status, out, err = run_cli("test", "specs/chat.yaml", str(script))
    assert status == 1
    assert f"{script}:2" in out + err


def test_explore_covers_the_chat_spec() -> None:
    status, out, _ = run_cli("test", "specs/chat.yaml", "--explore")
    assert status == 0
    assert "rules             7/7" in out
