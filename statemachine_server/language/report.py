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

__all__ = [
    "KEY", "Report", "SpecPath", "at", "dotted", "hint", "inside", "json_path", "offset_of",
    "one_line",
]  # fmt: skip

#: A node's path: mapping keys and list indexes from the top of the spec.
SpecPath = tuple[str | int, ...]
#: Where an error goes: ``report(message, path)``.
Report = Callable[[str, SpecPath], None]
#: Ends the path of a mapping key itself (an unknown key is reported there,
#: not at its value): ``(*path, name, KEY)``.
KEY = "<key>"


_AT = "<at "


def at(offset: int) -> str:
    """Ends the path of an error inside a text (an expression, a template):
    ``(*path, at(12))`` is 12 characters into the text at ``path``."""
    return f"{_AT}{offset}>"


def offset_of(path: SpecPath) -> int | None:
    """The offset :func:`at` put at the end of ``path``, if any."""
    last = path[-1] if path else None
    if isinstance(last, str) and last.startswith(_AT):
        return int(last[len(_AT) : -1])
    return None


def inside(path: SpecPath, exc: BaseException) -> SpecPath:
    """``path``, made precise by the offset an expression's error carries."""
    offset = getattr(exc, "offset", None)
    return (*path, at(offset)) if isinstance(offset, int) else path


def json_path(path: SpecPath) -> str:
    """``$.handlers.input[0]``: ``path`` as error messages write it."""
    return "$" + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in path
        if p != KEY and not (isinstance(p, str) and p.startswith(_AT))
    )  # fmt: skip


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
