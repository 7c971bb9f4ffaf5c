"""Conversation scripts as pytest tests: each ``test_*.conv`` file is one test.

The spec is the one its ``spec:`` header names or, without one, the spec
beside it with its name (``test_chat.conv`` runs ``chat.yaml``). The script
runs on a loop of its own (it needs no async plugin), and a failure shows
the script's message alone: its ``FILE:LINE``, expected and received, the
rule that answered; a Python traceback would only show the kit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..errors import SpecError
from .conversation import run_script
from .script import ScriptError, read_script

__all__ = ["ScriptFailed", "ScriptFile", "ScriptItem"]


class ScriptFailed(Exception):
    """A script's failure, reported as its message alone."""


class ScriptFile(pytest.File):
    """A ``test_*.conv`` file: one :class:`ScriptItem`."""

    def collect(self) -> Iterator[pytest.Item]:
        yield ScriptItem.from_parent(self, name=self.path.name)


class ScriptItem(pytest.Item):
    """One conversation script, run against its spec."""

    def runtest(self) -> None:
        script = read_script(self.path)
        spec = script.spec or _beside(self.path)
        if spec is None:
            raise ScriptError(
                "no spec: add a `spec: PATH` header, or put NAME.yaml beside test_NAME.conv",
                str(self.path),
            )
        with asyncio.Runner() as runner:
            outcome = runner.run(run_script(script, spec))
        if not outcome.ok:
            raise ScriptFailed(outcome.failure)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScriptFailed | ScriptError | SpecError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"conversation {self.path.name}"


def _beside(path: Path) -> Path | None:
    stem = path.stem.removeprefix("test_")
    for suffix in (".yaml", ".yml"):
        candidate = path.with_name(stem + suffix)
        if candidate.exists():
            return candidate
    return None
