"""What a decoding filter returns for a record it framed but could not decode."""

from __future__ import annotations

import msgspec

__all__ = ["UNDECODABLE", "InvalidRecord"]


#: What decoding a hostile record may raise: malformed or mismatched data
#: (ValidationError is a DecodeError), or nesting deeper than msgspec recurses.
UNDECODABLE = (msgspec.DecodeError, RecursionError)


class InvalidRecord(msgspec.Struct, frozen=True):
    """A complete record that did not decode, or did not match the filter's ``type``.

    Decoding filters (``json``, ``msgpack``) return it in place of the value, in
    order, and go on with the next record: the framing is intact, so one bad record
    need not end the connection. The handler decides (answer with ``error``, count,
    close). Broken framing, by contrast, is a :class:`~..errors.ProtocolError`.

    Attributes:
        error: msgspec's one-line message, with the ``$.path`` of the bad field
            when validation failed (e.g. "Expected `int`, got `str` - at `$.id`").
        data: the record's raw bytes (the length prefix or newline excluded).
    """

    error: str
    data: bytes
