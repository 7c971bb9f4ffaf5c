"""The spec's model of framing: ``server.filter`` (and a client's ``filter``).

A part of :mod:`.model` (which re-exports every name here), kept apart because
it is one concern: how bytes become records, each filter's settings as a tagged
msgspec Struct, validated once, at the edge; the filters themselves are built
from them by :mod:`.messages`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from ..filters.line import DEFAULT_MAX_LINE

__all__ = [
    "BlockFilterSettings", "BlockLimit", "FieldName", "FieldType", "FilterSettings",
    "JSONFilterSettings", "LineFilterSettings", "LineLimit", "MsgPackFilterSettings", "Schema",
    "StreamFilterSettings", "Strict",
]  # fmt: skip

# 1 GiB: a line filter may be told to accept large records, not unbounded ones.
LineLimit = Annotated[int, Meta(ge=1, le=1 << 30)]
# memcached's default item size limit (-I) is 1 MiB; a block is bounded the same.
BlockLimit = Annotated[int, Meta(ge=1, le=1 << 30)]
# A tag or a key of the schema: an identifier (see Name in model.py).
_Name = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Strict(Struct, forbid_unknown_fields=True, frozen=True):
    """The base of every Struct of the model: unknown keys refused, values frozen."""


class LineFilterSettings(Strict, tag="line", tag_field="type", frozen=True):
    """Newline-delimited UTF-8 text (``\\n`` or ``\\r\\n`` accepted on input)."""

    #: The longest line accepted, in bytes; a longer one closes that client.
    max_length: LineLimit = DEFAULT_MAX_LINE
    #: What ends each line the server sends: SMTP and memcached want ``"\\r\\n"``.
    newline: Literal["\n", "\r\n"] = "\n"
    #: A literal that ends each line, in and out, instead of ``\\n``, nothing stripped.
    separator: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    #: A regular expression whose matches end lines (replies end with ``newline``).
    regex: Annotated[str, Meta(min_length=1)] | None = None


class StreamFilterSettings(Strict, tag="stream", tag_field="type", frozen=True):
    """Bytes as they arrive, one record per read, as text (``surrogateescape``:
    any bytes survive); replies are sent as they are, with nothing added."""


class BlockFilterSettings(Strict, tag="block", tag_field="type", frozen=True):
    """Binary records as text (``surrogateescape``): ``size`` bytes each, or each
    behind a length prefix (``codec``); replies are framed the same way."""

    #: Bytes per record (fixed-size records).
    size: BlockLimit | None = None
    #: The length prefix: big-endian ``u8``, ``u16``, ``u32``, or ``netstring``.
    codec: Literal["u8", "u16", "u32", "netstring"] | None = None
    #: The largest record accepted, in bytes; a larger one closes that client.
    max_length: BlockLimit = 1 << 22


#: A schema's message kind or field name: a field is an attribute of a msgspec
#: Struct, so no leading "_" (Python's own names start with one).
FieldName = Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]

#: A field of a schema message: ``str``, ``int``, ``float``, ``bool``, ``any`` or
#: ``list[T]`` of those; a trailing ``?`` makes it optional (absent: null).
FieldType = Annotated[
    str, Meta(pattern=r"^(str|int|float|bool|any|list\[(str|int|float|bool|any)\])\??$")
]


class Schema(Strict, frozen=True):
    """The messages a structured filter accepts: each a JSON object (a MessagePack
    map) whose ``tag`` field names its kind. Anything else is refused with an
    error reply to that client (the ``invalid`` event), and the connection goes on."""

    #: Message kind to its fields (name to type); unknown fields are refused.
    messages: Annotated[dict[FieldName, dict[FieldName, FieldType]], Meta(min_length=1)]
    #: The field that names the kind.
    tag: _Name = "type"


class JSONFilterSettings(Strict, tag="json", tag_field="type", frozen=True):
    """JSON Lines: one JSON document per line, decoded with msgspec."""

    #: The messages accepted: a schema, or a Python type ``module:Type`` (a
    #: ``msgspec.Struct`` or a union of tagged ones); none: any JSON value.
    schema: Schema | str | None = None
    #: The longest line accepted, in bytes; a longer one closes that client.
    max_length: LineLimit = 1 << 20


class MsgPackFilterSettings(Strict, tag="msgpack", tag_field="type", frozen=True):
    """MessagePack documents, each behind a 4-byte big-endian length."""

    #: As for ``json``.
    schema: Schema | str | None = None
    #: The largest document accepted, in bytes; a larger one closes that client.
    max_length: BlockLimit = 1 << 22


FilterSettings = (
    LineFilterSettings
    | StreamFilterSettings
    | BlockFilterSettings
    | JSONFilterSettings
    | MsgPackFilterSettings
)
