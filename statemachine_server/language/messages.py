"""A spec's framing: its filter by name, the message schema it declares, structured replies.

A spec names its filter (``server.filter``). Text filters (``line``, and ``stream``
and ``block`` seen as text) hand handlers strings, so rules test them with
``match``, ``equals`` and ``prefix``. Structured filters (``json``, ``msgpack``)
hand them decoded values; with a schema, typed messages, tested with ``message:``
and read with ``{match.FIELD}``.

A schema is declared in YAML as message kinds and their fields, and built here,
once, into ``msgspec`` Structs (``defstruct``): a tagged union that the filter's
decoder validates in C, so a handler never sees a message of the wrong shape. A
record that fails is an :class:`~statemachine_server.filters.InvalidRecord`,
answered by the ``invalid`` handler (by default ``{"error": MESSAGE}``) while the
connection goes on: one bad message is not a reason to drop a client.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Union

import msgspec

from ..filters import BlockFilter, Filter, JSONFilter, LineFilter, MsgPackFilter, StreamFilter
from .model import (
    BlockFilterSettings,
    FilterSettings,
    JSONFilterSettings,
    LineFilterSettings,
    MsgPackFilterSettings,
    Schema,
    StreamFilterSettings,
)

__all__ = [
    "Messages",
    "TextRecords",
    "check_filter",
    "compile_value",
    "is_structured",
    "make_filter",
    "schema_of",
    "structured_input",
]

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "any": Any}
_FIELD = re.compile(r"(?:list\[(\w+)\]|(\w+))(\??)")

#: Message kind -> (its Struct, its field names, in order).
Messages = dict[str, tuple[type, tuple[str, ...]]]


def is_structured(settings: FilterSettings) -> bool:
    """Whether the filter's records are decoded values (json, msgpack), not text."""
    return isinstance(settings, JSONFilterSettings | MsgPackFilterSettings)


def schema_of(
    settings: FilterSettings, resolve: Callable[[str], Any]
) -> tuple[Any, Messages | None]:
    """The type the filter decodes into, and the messages ``message:`` may name.

    Args:
        settings: the spec's filter settings.
        resolve: imports ``module:Type`` (the spec's ``call`` resolution).

    Returns:
        ``(Any, None)`` without a schema (or for a text filter).

    Raises:
        ValueError: a schema that cannot be built or a type that is not a
            msgspec type (one line).
    """
    if not isinstance(settings, JSONFilterSettings | MsgPackFilterSettings):
        return Any, None  # (not is_structured: this way the type checker narrows)
    schema = settings.schema
    if schema is None:
        return Any, None
    if isinstance(schema, Schema):
        return _declared(schema)
    return _imported(schema, resolve)


def _declared(schema: Schema) -> tuple[Any, Messages]:
    messages: Messages = {}
    for kind, fields in schema.messages.items():
        if schema.tag in fields:
            raise ValueError(
                f"message {kind!r}: {schema.tag!r} is the tag field, it names the kind itself"
            )
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for name, text in fields.items():
            m = _FIELD.fullmatch(text)
            assert m is not None  # the model's pattern
            item, scalar, optional = m.groups()
            kind_type: Any = list[_SCALARS[item]] if item else _SCALARS[scalar]  # type: ignore[valid-type,misc]
            if optional:
                spec.append((name, kind_type | None, None))
            else:
                spec.append((name, kind_type))
        try:
            struct = msgspec.defstruct(
                kind,
                spec,
                tag_field=schema.tag,
                tag=kind,
                kw_only=True,  # optional fields may come before required ones
                forbid_unknown_fields=True,
                frozen=True,
            )
        except (TypeError, ValueError) as exc:  # e.g. a field named like a keyword's clash
            raise ValueError(f"message {kind!r}: {exc}") from None
        messages[kind] = (struct, tuple(fields))
    structs = [struct for struct, _ in messages.values()]
    return Union[tuple(structs)] if len(structs) > 1 else structs[0], messages  # noqa: UP007


def _imported(target: str, resolve: Callable[[str], Any]) -> tuple[Any, Messages | None]:
    found = resolve(target)
    try:
        msgspec.json.Decoder(found)
    except Exception as exc:  # not a type, or annotations that do not resolve
        raise ValueError(
            f"schema {target!r} is not a type msgspec can decode: {type(exc).__name__}: {exc}"
        ) from None
    # Tagged Structs, alone or in a union, are messages that `message:` can name.
    candidates = getattr(found, "__args__", (found,))
    messages: Messages = {}
    for struct in candidates:
        config = getattr(struct, "__struct_config__", None)
        if config is not None and isinstance(config.tag, str):
            messages[config.tag] = (struct, tuple(struct.__struct_fields__))
    return found, messages or None


class TextRecords:
    """A bytes filter seen as text: records decoded with ``surrogateescape`` (any
    bytes survive and encode back unchanged), replies encoded the same way, so
    text rules and templates work on binary framings too."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Filter):
        self._inner = inner

    def get(self, data: bytes) -> list[str]:
        return [r.decode("utf-8", "surrogateescape") for r in self._inner.get(data)]

    def put(self, records: list[Any]) -> bytes:
        return self._inner.put([_as_bytes(r) for r in records])

    def get_pending(self) -> bytes:
        return self._inner.get_pending()


def _as_bytes(record: Any) -> bytes:
    if isinstance(record, bytes):
        return record
    return str(record).encode("utf-8", "surrogateescape")


def make_filter(settings: FilterSettings, schema: Any) -> Callable[[], Filter]:
    """What makes each connection's filter, for every framing but switchable lines
    (:mod:`.framing` has those). Filters are made per connection: settings that
    could not make one are reported by :func:`check_filter` at load time."""
    if isinstance(settings, LineFilterSettings):
        max_length = settings.max_length
        if settings.separator is not None:
            separator = settings.separator
            return lambda: LineFilter(max_length, separator=separator)
        if settings.regex is not None:
            regex, newline = settings.regex.encode("utf-8", "surrogateescape"), settings.newline
            return lambda: LineFilter(max_length, regex=regex, output_separator=newline)
        if settings.newline != "\n":  # \n or \r\n in, \r\n out
            return lambda: LineFilter(max_length, regex=rb"\r?\n", output_separator="\r\n")
        return lambda: LineFilter(max_length)
    if isinstance(settings, StreamFilterSettings):
        return lambda: TextRecords(StreamFilter())  # type: ignore[return-value]
    if isinstance(settings, BlockFilterSettings):
        size, codec, limit = settings.size, settings.codec, settings.max_length
        return lambda: TextRecords(BlockFilter(size, codec=codec, max_length=limit))  # type: ignore[return-value]
    if isinstance(settings, JSONFilterSettings):
        limit = settings.max_length
        return lambda: JSONFilter(schema, max_length=limit)
    limit = settings.max_length
    return lambda: MsgPackFilter(schema, max_length=limit)


def check_filter(
    settings: FilterSettings,
    report: Callable[[str, Any], None],
    where: tuple[str | int, ...] = ("server", "filter"),
) -> None:
    """Report settings that cannot make a filter (each at its key)."""
    if isinstance(settings, BlockFilterSettings):
        if (settings.size is None) == (settings.codec is None):
            report("a block filter needs either size (fixed records) or codec (a length prefix)",
                   where)  # fmt: skip
    elif isinstance(settings, LineFilterSettings):
        if settings.separator is not None and settings.regex is not None:
            report("give either separator or regex, not both", (*where, "regex"))
        elif settings.regex is not None:
            try:
                LineFilter(settings.max_length, regex=settings.regex.encode())
            except (ValueError, re.error) as exc:
                report(f"bad regex: {exc}", (*where, "regex"))


def compile_value(value: Any, text: Callable[[str], Callable[..., Any]]) -> Callable[..., Any]:
    """A structured reply (a mapping or a list) as a function of ``(session, input, match)``.

    Its strings are templates (``text`` compiles one); a string that is one name
    alone (``"{match.count}"``) keeps that value's type, so an integer stays a
    JSON number. Everything else is a constant.
    """
    if isinstance(value, dict):
        items = [(k, compile_value(v, text)) for k, v in value.items()]
        return lambda s, i, m=None: {k: f(s, i, m) for k, f in items}
    if isinstance(value, list):
        parts = [compile_value(v, text) for v in value]
        return lambda s, i, m=None: [f(s, i, m) for f in parts]
    if isinstance(value, str):
        return text(value)
    return lambda s, i, m=None: value


def structured_input(record: Any) -> str:
    """``{input}`` of a structured record: its compact JSON text (a string as it is)."""
    if type(record) is str:
        return record
    try:
        return msgspec.json.encode(record).decode("utf-8", "surrogateescape")
    except (TypeError, ValueError):  # MessagePack has values JSON has not (Ext, array keys)
        return repr(record)
