"""Load a YAML spec into a :class:`~.model.Spec`, or fail with ``FILE:LINE:COLUMN``.

The file is untrusted. It is read with a size bound, parsed with PyYAML's *safe*
composer (no Python tags), turned into plain data while each node's position is
recorded by its path (``$.handlers.input[0]``), and then validated by msgspec.
msgspec's errors name a ``$.path`` but no line, so the path is mapped back to the
position of the node it names (or of its nearest ancestor).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ..errors import SpecError
from ..limits import Limits
from .model import (
    ACTION_MAIN_FIELD,
    Handlers,
    LineFilterSettings,
    LogSettings,
    ServerSettings,
    Spec,
)
from .templates import compile_template

__all__ = ["MAX_SPEC_BYTES", "builtin_spec_path", "load_spec", "load_spec_text"]

#: A spec is configuration, not data: 1 MiB is far beyond any real one.
MAX_SPEC_BYTES = 1 << 20

Path_ = tuple[str | int, ...]
_KEY = "<key>"  # marks a mapping key's own position: path + (name, _KEY)


@dataclass
class _Source:
    file: str
    marks: dict[Path_, tuple[int, int]]

    def error(self, message: str, path: Path_) -> SpecError:
        line, column = self.where(path)
        return SpecError(message, self.file, line, column)

    def where(self, path: Path_) -> tuple[int, int]:
        while True:
            if path in self.marks:
                return self.marks[path]
            if not path:
                return (1, 1)
            path = path[:-1]


def builtin_spec_path(name: str = "echo") -> Path:
    """Where the spec named ``name`` that ships inside the package lives."""
    return Path(str(resources.files("statemachine_server").joinpath("specs", f"{name}.yaml")))


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate a spec file.

    Raises:
        SpecError: the file cannot be read, or is not a valid spec.
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
    return load_spec_text(text, name)


def load_spec_text(text: str, file: str = "<string>") -> Spec:
    """Parse and validate a spec given as YAML text."""
    src = _Source(file, {})
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecError(f"invalid YAML: {problem}", file, line, column) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file) from None
    if node is None:
        raise SpecError("spec is empty: expected a mapping with 'server' and 'handlers'", file)
    data = _plain(node, (), src, set())
    if not isinstance(data, dict):
        raise src.error("expected a mapping at the top of the spec", ())
    _normalise(data, src)
    try:
        spec = msgspec.convert(data, Spec)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), src) from None
    _check(spec, src)
    return spec


# -- YAML nodes to plain data, with positions ----------------------------------------------

_constructor = yaml.SafeLoader("")  # only its scalar constructor is used
# Plain data only: no timestamps, binary, sets, merge keys or application tags.
_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


def _plain(node: yaml.Node, path: Path_, src: _Source, seen: set[int]) -> Any:
    src.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if id(node) in seen:
        # An alias to a node already converted: refuse instead of expanding it
        # again ("billion laughs").
        raise src.error("YAML aliases are not supported in specs", path)
    if node.tag not in _TAGS:
        raise src.error(f"unsupported YAML tag {node.tag!r}", path)
    if isinstance(node, yaml.ScalarNode):
        return _constructor.construct_object(node)
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*path, i), src, seen) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise src.error("mapping keys must be plain names", (*path, _KEY))
            key = str(key_node.value)
            key_path = (*path, key)
            src.marks[(*key_path, _KEY)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            if key in out:
                raise src.error(f"duplicate key {key!r}", (*key_path, _KEY))
            out[key] = _plain(value_node, key_path, src, seen)
        return out
    raise src.error("unsupported YAML node", path)


# -- short forms to the tagged forms msgspec decodes ------------------------------------------


def _normalise(data: dict[str, Any], src: _Source) -> None:
    server = data.get("server")
    if isinstance(server, dict) and isinstance(server.get("filter"), str):
        server["filter"] = {"type": server["filter"]}
    handlers = data.get("handlers")
    if not isinstance(handlers, dict):
        return
    for event, actions in handlers.items():
        if not isinstance(actions, list):
            continue
        for i, action in enumerate(actions):
            path: Path_ = ("handlers", event, i)
            if not isinstance(action, dict) or len(action) != 1:
                raise src.error(
                    'an action is a mapping with one key, its name, e.g. `reply: "{input}"`',
                    path,
                )
            ((name, value),) = action.items()
            if name not in ACTION_MAIN_FIELD:
                raise src.error(
                    f"unknown action {name!r}{_hint(name, ACTION_MAIN_FIELD)}", (*path, name, _KEY)
                )
            if isinstance(value, dict):
                actions[i] = {"action": name, **value}
            else:
                actions[i] = {"action": name, ACTION_MAIN_FIELD[name]: value}
            # The value's position serves for errors in the rewritten fields.
            src.marks.setdefault((*path, ACTION_MAIN_FIELD[name]), src.where((*path, name)))


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


#: Where each mapping of a spec lives, and the Struct that says its keys.
_PLACES: dict[Path_, type[msgspec.Struct]] = {
    (): Spec,
    ("server",): ServerSettings,
    ("server", "filter"): LineFilterSettings,
    ("server", "limits"): Limits,
    ("server", "log"): LogSettings,
    ("handlers",): Handlers,
}


def _keys(struct: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct)]


def _unknown_key_hint(word: str, path: Path_) -> str:
    struct = _PLACES.get(path)
    if struct is not None:
        hint = _hint(word, _keys(struct))
        if hint:
            return hint
    for place, other in _PLACES.items():
        if other is not struct and word in _keys(other):
            where = ".".join(map(str, place)) or "the top level"
            return f" (it belongs under {where})"
    if struct is not None:
        return ""
    return _hint(word, {key for known in _PLACES.values() for key in _keys(known)})


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _translate(message: str, src: _Source) -> SpecError:
    m = _AT.match(message)
    assert m is not None
    msg, raw_path = m.group("msg"), m.group("path") or ""
    path: Path_ = tuple(name or int(index) for name, index in _STEP.findall(raw_path))
    unknown = _UNKNOWN.search(msg)
    if unknown:
        field = unknown.group(1)
        return src.error(
            f"unknown key {field!r}{_unknown_key_hint(field, path)}", (*path, field, _KEY)
        )
    where = f" at ${raw_path}" if raw_path else ""
    return src.error(f"{msg}{where}", path)


def _check(spec: Spec, src: _Source) -> None:
    for event in ("connected", "input", "disconnected"):
        for i, action in enumerate(getattr(spec.handlers, event)):
            try:
                compile_template(action.text, has_input=event == "input")
            except ValueError as exc:
                raise src.error(str(exc), ("handlers", event, i, "text")) from None
