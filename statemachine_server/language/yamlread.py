"""Reading a spec's YAML into plain data with positions: bounded, fast where it can be.

The first step of loading. libyaml's scanner and parser read the text where
they read it as PyYAML does (a fifth of the time), PyYAML's own otherwise, whose
messages every error gives. Their events are turned into plain data (dicts,
lists, text, numbers, booleans, null) in one loop, without PyYAML's node tree,
and each value's line and column are kept by its path for the errors to come.
Collections nested deeper than :data:`MAX_DEPTH` are one error at the node that
goes too deep; aliases, application tags and duplicate keys are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import SpecError
from .report import KEY, SpecPath

__all__ = ["MAX_DEPTH", "Document", "Fast", "Reference", "events", "events_with", "read"]

#: Collections nested deeper than this are refused, at the node that goes too
#: deep: nothing deeper is ever built. Precedents: SnakeYAML refuses more than 50
#: levels (``nestingDepthLimit``), serde_yaml more than 128; the bundled specs'
#: deepest is 14 (memcache-lite).
MAX_DEPTH = 100


@dataclass
class Document:
    """A spec's plain data, and where each of its values (and keys) was written."""

    data: Any
    #: ``path -> (line, column)``, both from 1; a key at ``(*path, KEY)``.
    marks: dict[SpecPath, tuple[int, int]] = field(default_factory=dict)
    #: Each scalar's style: "" plain, "'", '"', "|", ">".
    styles: dict[SpecPath, str] = field(default_factory=dict)


class Reference(yaml.SafeLoader):
    """The reference: PyYAML's own scanner and parser, whose messages errors give."""


#: Where libyaml reads what PyYAML refuses, or reads it otherwise: tabs (PyYAML
#: refuses more of them), tags (``!``, ``!x``, ``!*a``) and a comment right after
#: a block scalar's indicator (``|#``). Such a spec is read by PyYAML alone.
_LIBYAML_DIFFERS = re.compile(r"\t|(?<![^\s\[{,])!|[|>][-+0-9]*#")

Fast: Any = None
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class Fast(CParser):  # type: ignore[no-redef]
        """libyaml's scanner and parser (measured on a spec of 10,000 states: its
        events in 0.09 s, where PyYAML's pure-Python scanner took 1.5 s)."""


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


_STARTS = frozenset((yaml.SequenceStartEvent, yaml.MappingStartEvent))
_ENDS = frozenset((yaml.SequenceEndEvent, yaml.MappingEndEvent))


def events_with(parser: Any, text: str) -> list[yaml.Event]:
    """Every event of ``text`` as ``parser`` reads it, nesting bounded as it goes
    (before a later syntax error: ``[`` ten thousand times is too deep, not
    unclosed)."""
    reader = parser(text)
    out: list[yaml.Event] = []
    append, get = out.append, reader.get_event
    depth = 0
    try:
        while True:
            event = get()
            kind = type(event)
            if kind in _STARTS:
                if depth == MAX_DEPTH:
                    raise _TooDeep(event.start_mark)
                depth += 1
            elif kind in _ENDS:
                depth -= 1
            elif kind is yaml.StreamEndEvent:
                append(event)
                return out
            append(event)
    finally:
        reader.dispose()


def events(text: str, file: str) -> list[yaml.Event]:
    """The spec's YAML events, or :class:`SpecError` with a position."""
    try:
        if Fast is not None and not _LIBYAML_DIFFERS.search(text):
            try:
                return events_with(Fast, text)
            except (yaml.YAMLError, ValueError):
                # libyaml words its errors its own way: the reference says it
                # again, as the messages have always read.
                pass
        return events_with(Reference, text)
    except _TooDeep as exc:
        raise SpecError(
            f"YAML nested deeper than {MAX_DEPTH} levels", file, exc.mark.line + 1,
            exc.mark.column + 1,
        ) from None  # fmt: skip
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecError(f"invalid YAML: {problem}", file, line, column) from None
    except (yaml.YAMLError, ValueError) as exc:
        # ValueError: e.g. an int too long to convert.
        raise SpecError(f"invalid YAML: {type(exc).__name__}", file) from None


# -- events to plain data ---------------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_OUTSIDE = frozenset((yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentStartEvent,
                      yaml.DocumentEndEvent))  # fmt: skip
# Plain data only: no timestamps, binary, sets, merge keys or application tags.
_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)
_resolver = yaml.resolver.Resolver()
# Only its scalar constructors are used, called directly: construct_object would
# keep every node it is given, for ever.
_constructor = yaml.SafeLoader("")


def _error(message: str, file: str, event: Any) -> SpecError:
    mark = event.start_mark
    return SpecError(message, file, mark.line + 1, mark.column + 1)


def _scalar(event: Any, file: str) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        if event.style or tag == "!":  # quoted, a block, or "!": text, as PyYAML resolves it
            return event.value
        tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    if tag == _STR:
        return event.value
    if tag not in _TAGS or tag in (_SEQ, _MAP):
        raise _error(f"unsupported YAML tag {tag!r}", file, event)
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return _constructor.yaml_constructors[tag](_constructor, node)
    except (ValueError, yaml.YAMLError) as exc:
        raise _error(f"invalid YAML value: {exc}", file, event) from None


def read(text: str, file: str) -> Document | None:
    """The spec as plain data with positions (``None`` for an empty stream), or
    :class:`SpecError`: a YAML error first, then the first value refused."""
    stream: list[Any] = events(text, file)
    doc = Document(None)
    marks, styles = doc.marks, doc.styles
    # Each open collection: [value, its path, the key whose value comes next
    # (None: a key comes next), whether it is a mapping].
    stack: list[list[Any]] = []
    top: list[Any] | None = None
    documents = 0
    for event in stream:
        kind = type(event)
        if kind in _ENDS:
            value = stack.pop()[0]
            top = stack[-1] if stack else None
            if top is None:
                doc.data = value
            continue
        if kind in _OUTSIDE:
            if kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _error("invalid YAML: expected a single document", file, event)
            continue
        mark = event.start_mark
        if top is None:
            path: SpecPath = ()
        elif not top[3]:
            path = (*top[1], len(top[0]))
        elif top[2] is not None:
            path = (*top[1], top[2])
        else:  # this event is a key
            if kind is not yaml.ScalarEvent:
                raise _error("mapping keys must be plain names", file, event)
            key = str(event.value)
            if key in top[0]:
                raise _error(f"duplicate key {key!r}", file, event)
            marks[(*top[1], key, KEY)] = (mark.line + 1, mark.column + 1)
            top[2] = key
            continue
        marks[path] = (mark.line + 1, mark.column + 1)
        if kind is yaml.ScalarEvent:
            styles[path] = event.style or ""
            value = _scalar(event, file)
        elif kind in _STARTS:
            is_map = kind is yaml.MappingStartEvent
            tag = event.tag
            if tag is not None and tag != "!" and tag != (_MAP if is_map else _SEQ):
                raise _error(f"unsupported YAML tag {tag!r}", file, event)
            value = {} if is_map else []
            stack.append([value, path, None, is_map])
        elif kind is yaml.AliasEvent:
            # Refused rather than expanded again and again ("billion laughs").
            raise _error("YAML aliases are not supported in specs", file, event)
        else:  # pragma: no cover - PyYAML has no other events
            raise _error(f"unsupported YAML event {kind.__name__}", file, event)
        if top is not None:
            if top[3]:
                top[0][top[2]] = value
                top[2] = None
            else:
                top[0].append(value)
        if kind in _STARTS:
            top = stack[-1]
        elif top is None:
            doc.data = value
    return doc if documents else None
