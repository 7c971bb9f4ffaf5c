"""Load a YAML spec into a :class:`~.model.Spec`, or fail with ``FILE:LINE:COLUMN``.

The file is untrusted. It is read with a size bound and turned into plain data
by :mod:`.yamlread` (no Python tags or aliases; libyaml's parser where PyYAML has
it; nesting bounded), each node's position recorded by its path
(``$.handlers.input[0]``). Short action forms are
rewritten to the tagged forms the model decodes. Then every value is checked
against the msgspec Structs, field by field, so that *every* error is found, not
only the first (msgspec stops at the first, and names a ``$.path`` but no line):
each error is placed at the node its path names, or its nearest ancestor.
Finally the spec is compiled (:func:`.compile.compile_spec`: templates, regexes,
``goto`` targets, ``call`` imports, reachability), which reports the errors of
meaning the same way, and the files ``server.tls`` names must exist. All errors
are raised together, in file order. The spec keeps what it compiled into
(:attr:`~.model.Spec.program`), which :func:`~.build.build_server` runs: the
first step from a spec file to running handlers compiles it, once.
"""

from __future__ import annotations

import functools
import gc
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

from ..errors import SpecError
from ..limits import Limits
from .compile import compile_spec
from .model import (
    ACTION_MAIN_FIELD,
    ClientSettings,
    LineFilterSettings,
    LogSettings,
    Rule,
    ServerSettings,
    Spec,
    State,
    StateTimeout,
    TLSSettings,
)
from .report import KEY, SpecPath, hint, json_path, offset_of
from .yamlread import read

__all__ = ["MAX_SPEC_BYTES", "builtin_spec_path", "load_spec", "load_spec_text"]

#: A spec is configuration, not data: 1 MiB is far beyond any real one.
MAX_SPEC_BYTES = 1 << 20
#: More errors than this are not worth reading: the rest are summed up.
MAX_ERRORS = 50


@dataclass
class Source:
    """Where each node of a spec file is, and the errors found so far."""

    file: str
    marks: dict[SpecPath, tuple[int, int]] = field(default_factory=dict)
    # A long-form action {reply: {text: x}} is rewritten to {action: reply, text: x}:
    # its fields' positions are still found under the old path.
    aliases: dict[SpecPath, SpecPath] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    #: Each text scalar's style ("" plain, "'", '"', "|", ">") and the spec's lines:
    #: to place an error inside an expression or template (``at(offset)``).
    styles: dict[SpecPath, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def error(self, message: str, path: SpecPath) -> SpecError:
        line, column = self.where(path)
        return SpecError(message, self.file, line, column)

    def report(self, message: str, path: SpecPath) -> None:
        """Note an error and go on looking for more (once: actions a ``use`` names
        are compiled at each use, and their errors found each time)."""
        error = self.error(message, path)
        if str(error) not in self.seen:
            self.seen.add(str(error))
            self.errors.append(error)

    def in_yaml(self, path: SpecPath) -> SpecPath:
        """Where a node of the model is in the YAML (a long-form action's fields sit
        one level deeper there, under the action's name)."""
        for k in range(len(path), 0, -1):
            alias = self.aliases.get(path[:k])
            if alias is not None:
                return (*alias, *path[k:])
        return path

    def where(self, path: SpecPath) -> tuple[int, int]:
        offset = offset_of(path)
        if offset is not None:
            return self._inside(path[:-1], offset)
        for k in range(len(path), 0, -1):
            alias = self.aliases.get(path[:k])
            if alias is not None:
                aliased = (*alias, *path[k:])
                if aliased in self.marks:
                    return self.marks[aliased]
                break
        while True:
            if path in self.marks:
                return self.marks[path]
            if not path:
                return (1, 1)
            path = path[:-1]

    def _inside(self, path: SpecPath, offset: int) -> tuple[int, int]:
        """The line and column ``offset`` characters into the text at ``path``."""
        line, column = self.where(path)
        found = self.in_yaml(path)
        style = self.styles.get(found, self.styles.get(path))
        if style is None:
            return line, column
        if style in ("|", ">"):
            # A block scalar: its text starts on the next line, indented.
            k = line  # 0-based index of the line after the indicator
            rest = offset
            while k < len(self.lines):
                text = self.lines[k]
                indent = len(text) - len(text.lstrip(" "))
                width = len(text) - indent + 1  # with its line break
                if rest < width or k + 1 >= len(self.lines):
                    return k + 1, indent + rest + 1
                rest -= width
                k += 1
            return line, column
        # A plain or quoted scalar, on one line or folded over several.
        quote = 1 if style in ("'", '"') else 0
        k, col, rest = line - 1, column - 1 + quote, offset
        while k < len(self.lines):
            room = len(self.lines[k]) - col
            if rest <= room or k + 1 >= len(self.lines):
                return k + 1, col + rest + 1
            rest -= room + 1  # a folded line break is one space
            k += 1
            col = len(self.lines[k]) - len(self.lines[k].lstrip(" "))
        return line, column


def builtin_spec_path(name: str = "echo") -> Path:
    """Where the spec named ``name`` that ships inside the package lives."""
    return Path(str(resources.files("statemachine_server").joinpath("specs", f"{name}.yaml")))


@functools.cache
def _builtin_folder() -> Path:
    # Found once: it costs ~25 us, as much as compiling a small spec's templates.
    return builtin_spec_path().resolve().parent


def load_spec(path: str | Path, *, server: Mapping[str, Any] | None = None) -> Spec:
    """Read, parse, validate and compile a spec file.

    ``call`` actions find modules beside the file first. The spec keeps its
    compiled program (:attr:`~.model.Spec.program`), which
    :func:`~.build.build_server` runs.

    Args:
        path: the file.
        server: ``server:`` settings that replace the spec's, as ``run``'s options
            and environment do (``{"port": 0, "log": {"format": "json"}}``: a
            mapping replaces the spec's keys one by one). They are checked as the
            spec's own are, and their errors name no line.

    Raises:
        SpecError: the file cannot be read, or is not a valid spec (every error
            found is in ``.errors``).
    """
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror or exc}", name) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is larger than {MAX_SPEC_BYTES} bytes", name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"spec is not UTF-8 (byte {exc.start})", name) from None
    folder = Path(path).resolve().parent
    # The origin names the spec in generated code's filenames (tracebacks).
    builtin = folder == _builtin_folder()
    origin = f"<builtin {Path(path).name}>" if builtin else Path(path).name
    return _load(text, name, folder, origin, server)


def load_spec_text(
    text: str,
    file: str = "<string>",
    *,
    base_dir: str | Path | None = None,
    server: Mapping[str, Any] | None = None,
) -> Spec:
    """Parse, validate and compile a spec given as YAML text.

    Args:
        text: the YAML.
        file: the name errors give.
        base_dir: where ``call`` looks for modules first (default: the current
            directory).
        server: settings that replace the spec's (see :func:`load_spec`).
    """
    origin = file if file.startswith("<") else Path(file).name
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return _load(text, file, base, origin, server)


def _load(
    text: str, file: str, base_dir: Path, origin: str, server: Mapping[str, Any] | None = None
) -> Spec:
    # Loading makes a few objects per character of the spec and frees none
    # until it ends: the cyclic collector, run every 700 allocations, would scan
    # them over and over (half of loading a spec of 10,000 states).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_unpaused(text, file, base_dir, origin, server)
    finally:
        if collecting:
            gc.enable()


def _load_unpaused(
    text: str, file: str, base_dir: Path, origin: str, server: Mapping[str, Any] | None
) -> Spec:
    doc = read(text, file)
    if doc is None:
        raise SpecError("spec is empty: expected a mapping with 'server' and 'handlers'", file)
    src = Source(file, marks=doc.marks, styles=doc.styles, lines=text.splitlines())
    data = doc.data
    if not isinstance(data, dict):
        raise src.error("expected a mapping at the top of the spec", ())
    if server:
        _replace_settings(data, server, src)
    _normalise(data, src)
    checked = _checked(data, src)
    if not isinstance(checked, Spec):
        assert src.errors  # the checker reported why
        raise _all(src.errors)
    spec = checked.located(base_dir, origin)
    # Compiled even after errors above (some items dropped): its own errors are
    # reported with them, all at once.
    program = compile_spec(spec, report=src.report)
    _check_listener(spec, data, src)
    if src.errors:
        raise _all(src.errors)
    return spec.compiled(program)


def _replace_settings(data: dict[str, Any], server: Mapping[str, Any], src: Source) -> None:
    """``server`` over the spec's ``server:``, one key at a time (a mapping's own
    keys too); what was replaced has no position left: its errors name no line."""
    block = data.get("server")
    if not isinstance(block, dict):
        block = data["server"] = {} if block is None else block
        if not isinstance(block, dict):
            return  # reported by the checks, at the spec's own value
    for key, value in server.items():
        old = block.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            block[key] = {**old, **value}
            replaced: list[SpecPath] = [("server", key, name) for name in value]
        else:
            block[key] = dict(value) if isinstance(value, Mapping) else value
            replaced = [("server", key)]
        for path in replaced:
            src.marks[path] = (0, 0)
            src.styles.pop(path, None)


def _checked(data: dict[str, Any], src: Source) -> Any:
    """The spec as its model, or ``_BAD`` with every error reported.

    msgspec converts a valid spec in a third of the time the walk takes, and
    finds the same (every Struct forbids unknown keys; only the top has private
    fields, which msgspec would fill): the walk runs only when there is an error
    to find and place, all of them rather than the first."""
    if not src.errors and not any(key.startswith("_") for key in data):
        try:
            return msgspec.convert(data, Spec)
        except msgspec.ValidationError:
            pass
    return Checker(src).value(data, Spec, ())


def _check_listener(spec: Spec, data: dict[str, Any], src: Source) -> None:
    """A Unix socket has no host or port; ``tls`` files exist (whether they load is
    known when the server starts, which reads them)."""
    server = data["server"] if isinstance(data.get("server"), dict) else {}
    if spec.server.path is not None:
        for key in ("host", "port"):
            if key in server:
                src.report(
                    f"{key} is unused with path (a Unix socket): remove one", ("server", key, KEY)
                )
    tls = spec.server.tls
    for key in ("cert", "key", "client_ca"):
        name = getattr(tls, key, None)
        if name is not None and not (file := spec.base_dir / name).is_file():
            what = "not a file" if file.exists() else "no such file"
            src.report(f"{what}: {file}", ("server", "tls", key))


def _all(errors: list[SpecError]) -> SpecError:
    if len(errors) > MAX_ERRORS:
        rest = len(errors) - MAX_ERRORS
        errors = sorted(errors, key=lambda e: (e.line, e.column))[:MAX_ERRORS]
        last = errors[-1]
        errors.append(SpecError(f"... and {rest} more errors", last.file, last.line, last.column))
    return SpecError.several(errors)


# -- short forms to the tagged forms the model decodes ----------------------------------------


class _Skip:
    """An item already reported as wrong: the checker drops it without a second error."""


SKIP = _Skip()


def _filter_short_forms(owner: Any) -> None:
    if isinstance(owner, dict) and isinstance(owner.get("filter"), str):
        owner["filter"] = {"type": owner["filter"]}
    if isinstance(owner, dict) and isinstance(owner.get("filter"), dict):
        owner["filter"].setdefault("type", "line")  # the one framing with no type to name


def _normalise(data: dict[str, Any], src: Source) -> None:
    _filter_short_forms(data.get("server"))
    named = data.get("actions")
    if isinstance(named, dict):
        for name, items in named.items():
            if isinstance(items, list):
                _actions(items, ("actions", name), src)
    handlers = data.get("handlers")
    if isinstance(handlers, dict):
        _handlers(handlers, ("handlers",), src)
    clients = data.get("clients")
    if isinstance(clients, dict):
        for name, client in clients.items():
            _filter_short_forms(client)
            if isinstance(client, dict) and isinstance(client.get("handlers"), dict):
                _handlers(client["handlers"], ("clients", name, "handlers"), src)
    states = data.get("states")
    if isinstance(states, dict):
        for name, state in states.items():
            if not isinstance(state, dict):
                continue
            path: SpecPath = ("states", name)
            for key in ("enter", "exit"):
                if isinstance(state.get(key), list):
                    _actions(state[key], (*path, key), src)
            timeout = state.get("timeout")
            if isinstance(timeout, dict) and isinstance(timeout.get("do"), list):
                _actions(timeout["do"], (*path, "timeout", "do"), src)
            if isinstance(state.get("handlers"), dict):
                _handlers(state["handlers"], (*path, "handlers"), src)


def _handlers(handlers: dict[str, Any], path: SpecPath, src: Source) -> None:
    for event, items in handlers.items():
        if isinstance(items, list):
            _actions(items, (*path, event), src, rules=True)


def _actions(items: list[Any], path: SpecPath, src: Source, rules: bool = False) -> None:
    for i, item in enumerate(items):
        where: SpecPath = (*path, i)
        if rules and isinstance(item, dict) and "do" in item:
            item["action"] = "rule"
            if isinstance(item["do"], list):
                _actions(item["do"], (*where, "do"), src)
            continue
        if isinstance(item, dict) and "if" in item and "do" in item:
            src.report("an `if` action takes `then` (and `else`); `do` is for a rule, in a "
                       "handler's own list", where)  # fmt: skip
            items[i] = SKIP
            continue
        if isinstance(item, dict) and "if" in item and ("then" in item or "else" in item):
            # {if: EXPR, then: [...], else: [...]}: a conditional action.
            item["action"] = "if"
            for key in ("then", "else"):
                if isinstance(item.get(key), list):
                    _actions(item[key], (*where, key), src)
            continue
        items[i] = _action(item, where, src, rules)


#: Actions whose long form holds lists of actions, and under which keys.
_NESTED_ACTIONS: dict[str, tuple[str, ...]] = {
    "work": ("progress", "on_error"),
    "run": ("stdout", "stderr", "on_error"),
    "foreach": ("do",),
}


def _action(item: Any, path: SpecPath, src: Source, rules: bool) -> Any:
    if isinstance(item, str) and item in ACTION_MAIN_FIELD:
        if ACTION_MAIN_FIELD[item] is None:
            return {"action": item}
        src.report(f"action {item!r} needs a value, e.g. `{item}: ...`", path)
        return SKIP
    if not isinstance(item, dict) or len(item) != 1:
        rule = "; a rule is a mapping with `do` and at most one condition" if rules else ""
        if isinstance(item, str):
            src.report(f"unknown action {item!r}{hint(item, ACTION_MAIN_FIELD)}", path)
        else:
            src.report(
                "an action is a mapping with one key, its name, e.g. "
                f'`reply: "{{input}}"`, or a bare name such as `close`{rule}',
                path,
            )
        return SKIP
    ((name, value),) = item.items()
    if name not in ACTION_MAIN_FIELD:
        more = " (a rule needs `do`)" if name in ("match", "equals", "prefix", "message") else ""
        if name in ("then", "else"):
            more = (" (an `if` action is one mapping, `{if: EXPR, then: [...]}`: inside a [...] "
                    "list, write it in braces)")  # fmt: skip
        src.report(
            f"unknown action {name!r}{hint(name, ACTION_MAIN_FIELD)}{more}", (*path, name, KEY)
        )
        return SKIP
    main = ACTION_MAIN_FIELD[name]
    if main is None:
        if value is None or value == {}:
            return {"action": name}
        src.report(f"{name} takes no value: write `- {name}`", (*path, name))
        return SKIP
    # set's mapping is its values; reply's is the structured reply itself, unless
    # it is the long form, {text: ...} (which a reply {"text": ...} must use too).
    structured = name == "reply" and isinstance(value, dict) and set(value) != {"text"}
    if isinstance(value, dict) and name not in ("set", "append") and not structured:
        src.aliases[path] = (*src.in_yaml(path), name)
        long_form = {**value, "action": name}
        for key in _NESTED_ACTIONS.get(name, ()):
            if isinstance(long_form.get(key), list):
                _actions(long_form[key], (*path, key), src)
        return long_form
    # The value's position serves for errors in the field it fills.
    src.marks.setdefault((*path, main), src.where((*path, name)))
    style = src.styles.get((*src.in_yaml(path), name))
    if style is not None:
        src.styles.setdefault((*path, main), style)
    if isinstance(value, dict):  # {NAME: TEMPLATE}: keep the names' positions
        src.aliases[(*path, main)] = (*path, name)
    return {"action": name, main: value}


# -- checking values against the Structs, every error at once ------------------------------

_BAD: Any = object()  # a value that failed (already reported)

#: Where each mapping of a spec lives, and the Struct that says its keys: for
#: "it belongs under ..." hints.
_PLACES: dict[str, type[msgspec.Struct]] = {
    "the top level": Spec,
    "server": ServerSettings,
    "server.filter": LineFilterSettings,
    "server.limits": Limits,
    "server.log": LogSettings,
    "server.tls": TLSSettings,
    "a state": State,
    "a state's timeout": StateTimeout,
    "a rule": Rule,
    "a client": ClientSettings,
}


def keys_of(struct: type[msgspec.Struct]) -> list[str]:
    """The YAML keys a Struct takes (private fields excluded)."""
    return list(_fields(struct))


@functools.cache
def _fields(struct: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """A Struct's public fields by the name written in YAML (``in`` for ``in_``)."""
    # Cached per class (classes do not change): msgspec.structs.fields evaluates
    # the annotations at each call, which was a fifth of loading a spec.
    return {f.encode_name: f for f in msgspec.structs.fields(struct) if not f.name.startswith("_")}


def _unknown_key_hint(word: str, struct: type[msgspec.Struct]) -> str:
    near = hint(word, keys_of(struct))
    if near:
        return near
    for place, other in _PLACES.items():
        if other is not struct and word in keys_of(other):
            return f" (it belongs under {place})"
    return ""


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNION_TYPES = (Union, types.UnionType)


def _literals(tp: Any) -> list[Any]:
    """The values a ``Literal`` type (maybe inside ``X | None`` or ``Annotated``) allows."""
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    return [v for arg in get_args(tp) for v in _literals(arg)]


def _yaml_scalar(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _tag(struct: Any) -> tuple[str | None, Any]:
    config = struct.__struct_config__
    return config.tag_field, config.tag


_STRUCT, _VARIANTS, _LEAF = object(), object(), object()


def _shape(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """What :meth:`Checker.value` does with ``tp``: a Struct, ``list`` (of args[0]),
    ``dict`` (args), a union of Structs (the Structs, the other types, whether
    None is allowed), or a leaf that msgspec converts."""
    try:
        return _shape_cached(tp)
    except TypeError:  # unhashable (an Annotated constraint): not worth caching
        return _shape_cached.__wrapped__(tp)


@functools.cache
def _shape_cached(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    # Cached per type: working it out per value (520,000 subclass checks for a spec
    # of 10,000 states, one union of ~30 actions each) was a fifth of checking one.
    if _is_struct(tp):
        return _STRUCT, ()
    origin, args = get_origin(tp), get_args(tp)
    if origin is list or origin is dict:
        return origin, args
    if origin in _UNION_TYPES:
        structs = [a for a in args if _is_struct(a)]
        if structs:
            others = tuple(a for a in args if not _is_struct(a) and a is not type(None))
            return _VARIANTS, (tuple(structs), others, type(None) in args)
    return _LEAF, ()


class Checker:
    """Checks plain data against a type, reporting every error to ``src``."""

    def __init__(self, src: Source):
        self.src = src

    def value(self, value: Any, tp: Any, path: SpecPath) -> Any:
        """``value`` converted to ``tp``, or ``_BAD`` once its errors are reported."""
        if value is SKIP:
            return _BAD
        kind, args = _shape(tp)
        if kind is _STRUCT:
            return self.struct(value, tp, path)
        if kind is list:
            if not isinstance(value, list):
                return self.leaf(value, tp, path)
            return [self.item(v, args[0], (*path, i)) for i, v in enumerate(value)]
        if kind is dict:
            if not isinstance(value, dict):
                return self.leaf(value, tp, path)
            out = {}
            for k, v in value.items():
                key = self.leaf(k, args[0], (*path, k, KEY))
                val = self.value(v, args[1], (*path, k))
                if key is not _BAD and val is not _BAD:
                    out[key] = val
            return out
        if kind is _VARIANTS:
            structs, others, optional = args
            if value is None and optional:
                return None
            if others and not isinstance(value, dict):  # `schema: module:Type`
                return self.leaf(value, others[0], path)
            return self.variant(value, structs, path)
        return self.leaf(value, tp, path)

    def item(self, value: Any, tp: Any, path: SpecPath) -> Any:
        # A bad list item stays as None, so the items after it keep their index
        # (their paths must still find their positions); the spec is never used.
        checked = self.value(value, tp, path)
        return None if checked is _BAD else checked

    def leaf(self, value: Any, tp: Any, path: SpecPath) -> Any:
        try:
            return msgspec.convert(value, tp)
        except msgspec.ValidationError as exc:
            m = _AT.match(str(exc))
            assert m is not None
            msg, after = m.group("msg"), ""
            if "matching regex" in msg and "list" in msg:  # a schema's field type
                msg = "expected a field type: str, int, float, bool, any or list[T] of those, "
                msg += "with ? after it if optional"
            elif "matching regex '^(\\\\[" in msg:  # an Address
                msg = "expected HOST:PORT, e.g. 127.0.0.1:9100"
            elif "matching regex '^rediss?" in msg:  # a RedisURL
                msg = "expected a Redis URL: redis://HOST:PORT/DB (rediss:// for TLS)"
            elif "matching regex '^(server" in msg:  # a HeapRef
                msg = "expected a heap name: NAME (the session's) or server.NAME"
            elif "matching regex '^[A-Za-z][" in msg:  # a schema's name
                msg = "expected a name (letters, digits and _, starting with a letter)"
            elif "matching regex" in msg:  # a Name
                msg = "expected a name (letters, digits and _, not starting with a digit)"
            elif msg.startswith("Invalid enum value"):
                allowed = _literals(tp)
                if allowed:
                    after = f" (expected one of: {', '.join(repr(a) for a in allowed)})"
            elif msg.startswith("Expected `str`, got `") and isinstance(value, int | float):
                # YAML reads 0, 1.5, true, null as those: text must be quoted.
                after = f" (to give the text, quote it: '{_yaml_scalar(value)}')"
            self.src.report(f"{msg} at {json_path(path)}{m.group('path') or ''}{after}", path)
            return _BAD

    def variant(self, value: Any, structs: tuple[Any, ...], path: SpecPath) -> Any:
        if not isinstance(value, dict):
            return self.leaf(value, structs[0], path)
        tag_field = _tag(structs[0])[0]
        tag = value.get(tag_field) if tag_field else None
        for struct in structs:
            if _tag(struct)[1] == tag:
                return self.struct(value, struct, path)
        tags = [str(_tag(s)[1]) for s in structs]
        near = hint(str(tag), tags) or f" (expected one of {', '.join(tags)})"
        self.src.report(f"unknown {tag_field} {tag!r}{near}", path)
        return _BAD

    def struct(self, value: Any, struct: Any, path: SpecPath) -> Any:
        if not isinstance(value, dict):
            return self.leaf(value, struct, path)
        tag_field, tag = _tag(struct)
        fields = _fields(struct)
        kwargs: dict[str, Any] = {}
        ok = True
        for key, item in value.items():
            if key == tag_field and tag_field is not None:
                if item != tag:
                    what = "filter type" if tag_field == "type" else tag_field
                    self.src.report(f"unknown {what} {item!r} (expected {tag!r})", (*path, key))
                    ok = False
                continue
            info = fields.get(key)
            if info is None:
                self.src.report(
                    f"unknown key {key!r}{_unknown_key_hint(key, struct)}", (*path, key, KEY)
                )
                continue  # reported; the rest of the mapping is still checked
            checked = self.value(item, info.type, (*path, key))
            if checked is _BAD:
                if info.required:
                    ok = False
            else:
                kwargs[info.name] = checked
        for name, info in fields.items():
            if info.required and name not in value:
                self.src.report(f"missing required key {name!r}", path)
                ok = False
        if not ok:
            return _BAD
        try:
            return struct(**kwargs)
        except (ValueError, TypeError) as exc:  # __post_init__ checks, e.g. Limits
            self.src.report(str(exc), path)
            return _BAD
