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
    "StreamFilter", "TCPClient", "TCPServer", "VirtualClock", "__version__", "server_ssl_context",
    # Specs from Python: load, run, and what a call target may do besides the heaps.
    "build_server", "goto", "load_spec", "load_spec_text", "raise_event",
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


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name) for every package import in a module, TYPE_CHECKING
    blocks and function bodies included."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("statemachine_server")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("statemachine_server"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, alias.name))
    return out


#: Layers, lowest first: a module may import its own layer and those below it.
LAYERS = [
    {"errors", "limits", "compat"},
    {"filters"},
    {"work"},
    {"core"},
    {"console", "testing", "logs"},
    {"net"},
    {"observe"},
    {"bus"},  # groups across processes: below the language, whose runtime uses it
    {"language"},
    {"testkit"},
    {"scale"},  # the supervisor and reloads: run's, just below the command line
    {"cli", "__main__", ""},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_imports_point_down_with_no_cycles_and_no_private_names() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, imported in _imports(name, path):
            if target == name or target not in MODULES:
                continue
            graph[name].add(target)
            assert not (imported or "").startswith("_") or imported.startswith("__"), (
                f"{name} imports the private name {imported} from {target}"
            )
            if name != "statemachine_server":  # the package's own __init__ exports all
                assert _layer(target) <= _layer(name), f"{name} reaches up to {target}"
    # No cycles, TYPE_CHECKING imports included (a package's __init__ re-exporting its
    # own modules aside).
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if MODULES[nxt].name == "__init__.py" and node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [])


def test_no_module_reaches_into_another_objects_private_attributes() -> None:
    # ``x._name`` where x is not self or cls: each module uses others' public names.
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_old_import_paths_work_for_one_release() -> None:
    import importlib
    import sys
    import warnings

    from statemachine_server.compat import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert any(
            issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught
        ), old
    from statemachine_server.spec.runtime import build_server  # type: ignore[import-not-found]

    assert build_server is statemachine_server.language.build_server
    from statemachine_server.kernel import Kernel  # type: ignore[import-not-found]

    assert Kernel is statemachine_server.Kernel


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
