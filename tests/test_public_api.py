"""The public API is exactly ``__all__``, and the layout keeps its layering."""

from __future__ import annotations

import ast
from pathlib import Path

import statemachine_server

PACKAGE = Path(statemachine_server.__file__).parent

EXPECTED = {
    "Backoff", "BlockFilter", "Connection", "ConsoleLog", "Filter", "InvalidRecord", "JSONFilter",
    "Kernel", "KernelStatistics", "LimitReached", "Limits", "LineFilter", "MsgPackFilter",
    "ProtocolError", "RecordTooLong",
    "ServerStatistics", "Session", "SpecError", "Stack", "StateMachineServerError",
    "StreamFilter", "TCPClient", "TCPServer", "__version__", "server_ssl_context",
}  # fmt: skip


def test_all_is_the_public_api() -> None:
    assert set(statemachine_server.__all__) == EXPECTED
    for name in statemachine_server.__all__:
        assert getattr(statemachine_server, name) is not None


def test_public_names_have_docstrings() -> None:
    for name in statemachine_server.__all__:
        obj = getattr(statemachine_server, name)
        if callable(obj):
            assert obj.__doc__, name


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add((node.module or "").split(".")[0])
    return found


def test_sans_io_modules_do_not_reach_up() -> None:
    # Filters and the lifecycle rules know nothing of sockets, kernels or specs.
    for module in [*PACKAGE.joinpath("filters").glob("*.py"), PACKAGE / "core" / "lifecycle.py"]:
        assert not imports_of(module) & {"net", "kernel", "connection", "language", "cli"}, module
    assert not imports_of(PACKAGE / "core" / "kernel.py") & {"net", "language", "cli"}
    assert not imports_of(PACKAGE / "core" / "timers.py")
    for module in PACKAGE.joinpath("work").glob("*.py"):
        assert not imports_of(module) & {"net", "language", "cli"}, module
