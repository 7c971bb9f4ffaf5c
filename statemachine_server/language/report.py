"""How errors in a spec are located and phrased, for the loader and the compiler alike.

A node of a spec is named by its path from the top: ``("handlers", "input", 0)``,
written ``$.handlers.input[0]`` in messages (msgspec's notation). The loader knows
every node's line and column by its path; the compiler sees only the typed model,
so it reports errors of meaning as ``report(message, path)`` and the loader places
them. Generated code is named by the same paths (``<echo.yaml handlers.input>``),
so a traceback says which part of which spec a line came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

__all__ = ["KEY", "Report", "SpecPath", "dotted", "hint", "json_path", "one_line"]

#: A node's path: mapping keys and list indexes from the top of the spec.
SpecPath = tuple[str | int, ...]
#: Where an error goes: ``report(message, path)``.
Report = Callable[[str, SpecPath], None]
#: Ends the path of a mapping key itself (an unknown key is reported there,
#: not at its value): ``(*path, name, KEY)``.
KEY = "<key>"


def json_path(path: SpecPath) -> str:
    """``$.handlers.input[0]``: ``path`` as error messages write it."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path if p != KEY)


def dotted(path: SpecPath) -> str:
    """``handlers.input[0]``: ``path`` as generated code's filenames write it."""
    return json_path(path)[2:]


def hint(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line: an error line or a reply never spans lines."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
