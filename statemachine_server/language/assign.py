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

import re
from collections.abc import Callable, Iterator
from typing import Any

from .data import (
    SERVER_DEFAULT,
    SESSION_DEFAULT,
    Bound,
    Items,
    LRUTable,
    Table,
    append,
    keep,
    store,
    unset,
)
from .expressions import ExprError, Location, Names, compile_expression, compile_location
from .inline import Snippet
from .model import CollectionBound
from .report import KEY, Report, SpecPath, inside
from .templates import TemplateCode, template_code

__all__ = ["Bounds", "compile_append", "compile_set", "compile_unset", "value_code"]

_DIRECT = frozenset({"int", "float", "bool", "null"})
# A match group's value in generated code (expressions.py: m[NAME]).
_GROUP = re.compile(r"m\[\w+\]")
# Values stored as they are (data.keep() returns these unchanged).
_KEPT = frozenset({int, float, bool, type(None), Table, LRUTable, Items})


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

    def __init__(self, names: Names, bounds: Bounds, report: Report, prefix: str):
        self.names = names
        self.bounds = bounds
        self.report = report
        self.values: dict[str, Any] = {}
        self.code = TemplateCode(self.values, prefix)
        self.prefix = prefix
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

    def build(self) -> Snippet | None:
        return Snippet(self.lines, self.values) if self.lines else None

    def pairs(self, values: dict[str, Any], where: SpecPath) -> Iterator[tuple[Location, str, str]]:
        """Each ``LOCATION: VALUE`` compiled: the place, the value's source and
        type (those with errors reported and left out)."""
        for key, value in values.items():
            loc = self.location(key, (*where, "values", key, KEY))
            compiled = self.value(value, (*where, "values", key))
            if loc is not None and compiled is not None:
                yield loc, *compiled


def compile_set(
    values: dict[str, Any], names: Names, bounds: Bounds, report: Report, where: SpecPath,
    prefix: str, record_limit: int = 1 << 62,
) -> Snippet | None:  # fmt: skip
    """``set: {LOCATION: VALUE, ...}`` (``record_limit``: the longest record the
    spec's filters hand a handler)."""
    w = _Writes(names, bounds, report, prefix)
    for loc, source, kind in w.pairs(values, where):
        key = w.code.name(loc.key)
        if not loc.indexes and kind in _DIRECT:
            # A number, a boolean or null: nothing to bound.
            w.lines.append(f"{loc.heap}[{key}] = {source}")
            continue
        bound = w.code.name(bounds.of(loc.name))
        if (
            not loc.indexes
            and record_limit <= bounds.of(loc.name).max_bytes
            and (source == "i" or _GROUP.fullmatch(source))
        ):
            # The record or a match group: text no longer than a record, which the
            # filter bounds already.
            w.lines.append(f"{loc.heap}[{key}] = {source}")
            continue
        if not loc.indexes:
            # Inline for what needs no copy: short text, numbers, a heap's own map
            # or list; data.keep() for the rest (new maps and lists, long text).
            v, limit = f"{w.prefix}v", w.code.name(bounds.of(loc.name).max_bytes)
            w.values.update(_keep=keep, _len=len, _KEPT=_KEPT, _str=str)
            w.lines += [
                f"{v} = {source}",
                f"{loc.heap}[{key}] = {v} if ({v}.__class__ is _str and _len({v}) <= {limit}) "
                f"or {v}.__class__ in _KEPT else _keep({v}, {bound})",
            ]  # fmt: skip
            continue
        if len(loc.indexes) == 1:
            # An entry of a map in the heap: Table.put() directly when it is one
            # (data.store() otherwise: it makes the map, or says what is wrong).
            c, v = f"{w.prefix}c", f"{w.prefix}v"
            w.values.update(_keep=keep, _Table=Table, _LRUTable=LRUTable)
            w.lines += [
                f"{v} = {source}",
                f"{c} = {loc.heap}.get({key})",
                f"if {c}.__class__ is _LRUTable or {c}.__class__ is _Table:",
                f"    {c}.store({loc.indexes[0]}, {v})",
                "else:",
                f"    {w.call(store, loc, v, bound)}",
            ]  # fmt: skip
            continue
        w.lines.append(w.call(store, loc, source, bound))
    return w.build()


def compile_append(
    values: dict[str, Any], names: Names, bounds: Bounds, report: Report, where: SpecPath,
    prefix: str,
) -> Snippet | None:  # fmt: skip
    """``append: {LOCATION: VALUE, ...}``."""
    w = _Writes(names, bounds, report, prefix)
    for loc, source, _ in w.pairs(values, where):
        w.lines.append(w.call(append, loc, source, w.code.name(bounds.of(loc.name))))
    return w.build()


def compile_unset(
    locations: str | list[str], names: Names, report: Report, where: SpecPath, prefix: str
) -> Snippet | None:
    """``unset: LOCATION`` or ``unset: [LOCATION, ...]``."""
    w = _Writes(names, Bounds({}, report), report, prefix)
    items = [locations] if isinstance(locations, str) else locations
    for k, key in enumerate(items):
        path = (*where, "names") if isinstance(locations, str) else (*where, "names", k)
        loc = w.location(key, path)
        if loc is not None:
            w.lines.append(w.call(unset, loc))
    return w.build()
