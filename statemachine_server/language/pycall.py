"""The Python a spec names: ``call`` and ``work`` functions, schema types, by ``module:name``.

When a spec is compiled (:mod:`.compile`), each ``module:name`` it names is
imported here, once per compile, from beside the spec file first and then from
``sys.path``; a name that does not import is an error of the spec, one line, at
its node. A ``work`` in a worker process imports its function again there, by
name (:func:`call_in_worker`): a function found beside a spec cannot be pickled.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report import one_line

__all__ = ["Calls", "call_in_worker", "resolve_call"]


def resolve_call(target: str, base_dir: str | Path, *, kind: str = "call") -> Callable[..., Any]:
    """The function (or, for ``kind="schema"``, the object) ``module:name`` names.

    The module is looked for beside the spec (``base_dir/module.py``) first, then
    imported normally (``sys.path``). Modules are imported once per process, as
    any import is (beside a spec, under a name of their own: see
    :func:`_import`); the function itself is looked up at each call, so
    :class:`Calls` caches it for one compile.

    Raises:
        ValueError: a malformed name, a module that does not import, or no such
            callable (the message is one line).
    """
    module_name, colon, name = target.partition(":")
    if (
        not colon
        or not all(part.isidentifier() for part in module_name.split("."))
        or not name.isidentifier()
        or name.startswith("_")
    ):
        what = "function" if kind == "call" else "name"
        raise ValueError(
            f"{kind} {target!r}: expected `module:{what}` (a public {what}), "
            "e.g. `handlers:on_line`"
        )
    module = _import(module_name, Path(base_dir))
    fn = getattr(module, name, None)
    if fn is None:
        names = [n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n])]
        close = difflib.get_close_matches(name, names, n=1)
        near = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{kind} {target!r}: module {module_name!r} has no {name!r}{near}")
    if kind == "call" and not callable(fn):
        raise ValueError(f"call {target!r}: {name!r} is not callable")
    return fn  # type: ignore[no-any-return]


class Calls:
    """The functions one compile resolves, each once, beside one spec.

    A spec that calls ``handlers:on_line`` from ten rules looks it up once. The
    cache belongs to the compile, not to the process: a process that loads many
    specs (the tests, a server reloading its spec) neither keeps every function
    it ever resolved alive nor shares one spec's answers with another's, and two
    compiles never meet through a module global.

    Args:
        base_dir: the spec file's folder, searched first.
    """

    def __init__(self, base_dir: str | Path):
        self.base_dir = str(base_dir)
        self.found: dict[str, Callable[..., Any]] = {}

    def function(self, target: str) -> Callable[..., Any]:
        """``call`` and ``work``'s function (see :func:`resolve_call`)."""
        found = self.found.get(target)
        if found is None:
            found = self.found[target] = resolve_call(target, self.base_dir)
        return found

    def type(self, target: str) -> Any:
        """A schema's type: any object, so not cached as a function."""
        return resolve_call(target, self.base_dir, kind="schema")


def call_in_worker(base_dir: str, target: str, data: Any, match: dict[str, Any]) -> Any:
    """``work`` with ``in: process``: runs in a worker process, which imports the
    function by name (a function imported from beside a spec cannot be pickled)."""
    return resolve_call(target, base_dir)(data, match)


def _import(module_name: str, base_dir: Path) -> Any:
    beside = base_dir / f"{module_name}.py"
    try:
        if "." not in module_name and beside.is_file():
            # Under a name of its own, so that two specs' "handlers.py" in two
            # folders stay two modules.
            digest = hashlib.sha1(str(beside).encode()).hexdigest()[:12]
            unique = f"_statemachine_spec_{module_name}_{digest}"
            if unique in sys.modules:
                return sys.modules[unique]
            spec = importlib.util.spec_from_file_location(unique, beside)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[unique]
                raise
            return module
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or (exc.name and module_name.startswith(exc.name + ".")):
            raise ValueError(
                f"cannot import {module_name!r}: no {beside.name} beside the spec "
                f"({base_dir}) and no such module on sys.path"
            ) from None
        raise ValueError(f"cannot import {module_name!r}: {one_line(exc)}") from None
    except Exception as exc:
        raise ValueError(f"cannot import {module_name!r}: {one_line(exc)}") from None
