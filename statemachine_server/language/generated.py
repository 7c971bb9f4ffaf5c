"""Generated source into functions: compiled once, run without builtins, debuggable.

The compiler writes Python source for templates (:mod:`.templates`) and for
echo-shaped handlers (:mod:`.codegen`), made only of fixed fragments and generated
names; spec text reaches it as values bound to those names, never as code. This
module is where that source becomes functions, on the way from a spec file to
running handlers (loader, compiler, here, then :mod:`.build`).

Generated code is code: each function's source is registered with
:mod:`linecache` under a filename that says which spec and which node of it the
function came from, ``<echo.yaml handlers.input>``, so a traceback through it
shows the generated line, and ``statemachine-server check --show-code`` prints
every one (:attr:`Sources.by_name`).
"""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Callable
from typing import Any

__all__ = ["Sources", "build_function"]


def build_function(source: str, values: dict[str, Any], filename: str) -> Callable[..., Any]:
    """Compile generated ``source``, which binds ``_f``, with ``values`` as its globals.

    The source is registered with :mod:`linecache` under ``filename`` (or, if
    another source has that name already, under ``filename`` with a digest of
    this source: two specs read from text are both ``<string>``); the function's
    ``__code__.co_filename`` says which.
    """
    filename = _register(filename, source)
    # No builtins: the code calls only what ``values`` binds, by generated names.
    namespace = dict(values, __builtins__={})
    exec(compile(source, filename, "exec"), namespace)
    function: Callable[..., Any] = namespace["_f"]
    return function


def _register(filename: str, source: str) -> str:
    lines = source.splitlines(keepends=True)
    if filename in linecache.cache and linecache.getlines(filename) != lines:
        digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        filename = f"{filename.removesuffix('>')} #{digest}>"
    # A modification time of None: linecache.checkcache() keeps the entry (no
    # file to compare it with), as for doctest's examples.
    linecache.cache[filename] = (len(source), None, lines, filename)
    return filename


class Sources:
    """The functions generated for one spec, each under a name that says where from.

    Args:
        origin: the spec's origin (``echo.yaml``, ``<builtin echo.yaml>``,
            ``<string>``); filenames are ``<ORIGIN WHERE>``.
    """

    def __init__(self, origin: str):
        self.origin = origin.removeprefix("<").removesuffix(">") or "spec"
        #: Filename to source, in the order made.
        self.by_name: dict[str, str] = {}

    def function(self, source: str, values: dict[str, Any], where: str) -> Callable[..., Any]:
        """:func:`build_function` under ``<ORIGIN WHERE>`` (``where``: the node's
        dotted path, e.g. ``handlers.input[0].text``)."""
        function = build_function(source, values, f"<{self.origin} {where}>")
        self.by_name[function.__code__.co_filename] = source
        return function
