"""``set``, ``unset`` and ``append``: each action compiled into one generated function.

The values are expressions (:mod:`.expressions`), templates (text with ``{...}``
fields, one field alone keeping its type) or YAML values; the names are heap
locations, ``NAME``, ``server.NAME``, ``NAME[KEY]...``. Each action becomes one
function of ``(s, i, m)`` whose statements are the writes in order, so a value
sees the writes before it, as a list of SCXML ``<assign>`` elements does. The
writes go through :mod:`.data`, which keeps maps, lists and text within their
bounds; a number, a boolean or null is stored directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .data import SERVER_DEFAULT, SESSION_DEFAULT, Bound, append, store, unset
from .expressions import ExprError, Location, Names, compile_expression, compile_location
from .generated import Sources
from .model import CollectionBound
from .report import KEY, Report, SpecPath, dotted, inside
from .runtime import Op
from .templates import TemplateCode, template_code

__all__ = ["Bounds", "compile_append", "compile_set", "compile_unset", "value_code"]

_DIRECT = frozenset({"int", "float", "bool", "null"})


class Bounds:
    """The spec's ``collections``: the bound of each heap name."""

    def __init__(self, declared: dict[str, CollectionBound], report: Report):
        self.declared: dict[str, Bound] = {}
        for name, c in declared.items():
            head, dot, key = name.partition(".")
            if not (key.isidentifier() and head == "server" if dot else name.isidentifier()):
                report(
                    f"collections: {name!r}: expected NAME (the session's heap) or "
                    "server.NAME (the server-wide heap)",
                    ("collections", name, KEY),
                )
                continue
            default = SERVER_DEFAULT if dot else SESSION_DEFAULT
            self.declared[name] = Bound(
                name if dot else f"heap.{name}",
                c.max_items or default.max_items,
                c.max_bytes or default.max_bytes,
                c.evict == "lru",
            )

    def of(self, name: str) -> Bound:
        """``NAME``'s or ``server.NAME``'s bound: declared, or its heap's default."""
        found = self.declared.get(name)
        if found is not None:
            return found
        default = SERVER_DEFAULT if name.startswith("server.") else SESSION_DEFAULT
        label = name if name.startswith("server.") else f"heap.{name}"
        return Bound(label, default.max_items, default.max_bytes)


def value_code(value: Any, names: Names, code: TemplateCode) -> tuple[str, str]:
    """A ``set`` value's Python source and type: an expression, a template, or
    the YAML value itself (bound as a constant; maps and lists are copied when
    stored)."""
    if isinstance(value, str):
        if "{" in value:
            # Sharing the values (and so the generated names) of the action's code.
            rendered = template_code(value, code.values, prefix=code.prefix, raw=True,
                                     names=names)  # fmt: skip
            return rendered.expr, "any"
        typed = compile_expression(value, names, code.name)
        return typed.source, typed.type
    if value is None or isinstance(value, bool):
        return repr(value), "bool" if isinstance(value, bool) else "null"
    kind = "int" if isinstance(value, int) else "float" if isinstance(value, float) else "any"
    return code.name(value), kind


class _Writes:
    """Compiles one action's writes into a function's lines."""

    def __init__(self, names: Names, bounds: Bounds, report: Report, where: SpecPath):
        self.names = names
        self.bounds = bounds
        self.report = report
        self.where = where
        self.values: dict[str, Any] = {}
        self.code = TemplateCode(self.values, "a")
        self.lines: list[str] = []

    def location(self, key: str, path: SpecPath) -> Location | None:
        try:
            return compile_location(key, self.names, self.code.name)
        except ExprError as exc:
            self.report(str(exc), inside(path, exc))
            return None

    def value(self, value: Any, path: SpecPath) -> tuple[str, str] | None:
        try:
            return value_code(value, self.names, self.code)
        except ExprError as exc:
            self.report(str(exc), inside(path, exc))
            return None

    def call(self, function: Callable[..., Any], loc: Location, *rest: str) -> str:
        indexes = "[" + "".join(f"{x}, " for x in loc.indexes) + "]"
        args = ", ".join((loc.heap, self.code.name(loc.key), indexes, *rest))
        return f"{self.code.name(function)}({args})"

    def build(self, sources: Sources) -> Op | None:
        if not self.lines:
            return None
        source = "def _f(s, i, m):\n" + "".join(f"    {line}\n" for line in self.lines)
        function: Op = sources.function(source, self.values, dotted(self.where))
        return function


def compile_set(
    values: dict[str, Any], names: Names, bounds: Bounds, sources: Sources, report: Report,
    where: SpecPath,
) -> Op | None:  # fmt: skip
    """``set: {LOCATION: VALUE, ...}``."""
    w = _Writes(names, bounds, report, where)
    for key, value in values.items():
        loc = w.location(key, (*where, "values", key, KEY))
        compiled = w.value(value, (*where, "values", key))
        if loc is None or compiled is None:
            continue
        source, kind = compiled
        if not loc.indexes and kind in _DIRECT:
            # A number, a boolean or null: nothing to bound.
            w.lines.append(f"{loc.heap}[{w.code.name(loc.key)}] = {source}")
            continue
        w.lines.append(w.call(store, loc, source, w.code.name(bounds.of(loc.name))))
    return w.build(sources)


def compile_append(
    values: dict[str, Any], names: Names, bounds: Bounds, sources: Sources, report: Report,
    where: SpecPath,
) -> Op | None:  # fmt: skip
    """``append: {LOCATION: VALUE, ...}``."""
    w = _Writes(names, bounds, report, where)
    for key, value in values.items():
        loc = w.location(key, (*where, "values", key, KEY))
        compiled = w.value(value, (*where, "values", key))
        if loc is None or compiled is None:
            continue
        w.lines.append(w.call(append, loc, compiled[0], w.code.name(bounds.of(loc.name))))
    return w.build(sources)


def compile_unset(
    locations: str | list[str], names: Names, sources: Sources, report: Report, where: SpecPath
) -> Op | None:
    """``unset: LOCATION`` or ``unset: [LOCATION, ...]``."""
    w = _Writes(names, Bounds({}, report), report, where)
    items = [locations] if isinstance(locations, str) else locations
    for k, key in enumerate(items):
        path = (*where, "names") if isinstance(locations, str) else (*where, "names", k)
        loc = w.location(key, path)
        if loc is not None:
            w.lines.append(w.call(unset, loc))
    return w.build(sources)
