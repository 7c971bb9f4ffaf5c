"""Old import paths, kept working for one release after the package was re-laid.

``import statemachine_server.kernel`` (and every other path in :data:`MOVED`) gives
the module at its new place, the very same object, with a
:class:`DeprecationWarning` that names the new path. One import hook serves them
all, so the package tree holds no stub files beside the real modules.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "install"]

#: Old module path -> new module path.
MOVED: dict[str, str] = {
    "statemachine_server.kernel": "statemachine_server.core.kernel",
    "statemachine_server.lifecycle": "statemachine_server.core.lifecycle",
    "statemachine_server.timers": "statemachine_server.core.timers",
    "statemachine_server.connection": "statemachine_server.net.connection",
    "statemachine_server.net.tcp": "statemachine_server.net.server",
    "statemachine_server.spec": "statemachine_server.language",
    "statemachine_server.spec.runtime": "statemachine_server.language.build",
    **{
        f"statemachine_server.spec.{name}": f"statemachine_server.language.{name}"
        for name in (
            "clients", "framing", "graph", "loader", "messages", "model", "templates",
        )
    },
}  # fmt: skip


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads the module of its new one."""

    def __init__(self) -> None:
        # Old path -> the new module's own spec, from create_module to exec_module.
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} has moved to {new}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        # The module itself, not a copy: its classes stay the same objects.
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Already executed at its new path; the import system has just written the
        # old path's spec over the module's own: put that back, or relative
        # imports inside it would see two different packages.
        module.__spec__ = self._specs.pop(module.__spec__.name)  # type: ignore[union-attr]


def install() -> None:
    """Put the hook first on ``sys.meta_path`` (before the path finder, which would
    otherwise load ``spec.model`` a second time from the renamed folder)."""
    if not any(isinstance(finder, _Moved) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Moved())
