"""The MessagePack filter: length-prefixed MessagePack documents, decoded by msgspec.

Framing rules: each record is one MessagePack document preceded by its length as a
4-byte unsigned big-endian integer (the ``u32`` block framing; MessagePack itself
does not say where a document ends without parsing it). :meth:`put` writes the same.

Typed records, invalid records and the reasons for returning
:class:`InvalidRecord` rather than raising: as for the JSON filter. A record that
is not valid MessagePack, has bytes left after its document, or does not match
``type`` comes back as an :class:`InvalidRecord` and the stream goes on.

Bound: a record may hold at most ``max_length`` bytes (default 4 MiB, gRPC's
default maximum message size), checked on the length prefix before any of the body
is buffered. Past it :meth:`get` raises :class:`RecordTooLong` carrying the records
decoded before it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import ProtocolError
from .block import BlockFilter
from .invalid import UNDECODABLE, InvalidRecord

__all__ = ["DEFAULT_MAX_MSGPACK", "MsgPackFilter"]

DEFAULT_MAX_MSGPACK = 4 * 1024 * 1024


class MsgPackFilter:
    """Length-prefixed MessagePack records, optionally validated into a type.

    Args:
        type: what each record must be (default: any MessagePack value).
        max_length: the largest record accepted, in bytes, prefix excluded.
    """

    __slots__ = ("_blocks", "_decoder", "_encoder", "max_length", "type")

    name = "msgpack"

    def __init__(self, type: Any = Any, *, max_length: int = DEFAULT_MAX_MSGPACK):
        self._blocks = BlockFilter(codec="u32", max_length=max_length)
        self.type = type
        self.max_length = max_length
        self._decoder = msgspec.msgpack.Decoder(type)
        self._encoder = msgspec.msgpack.Encoder()

    def get(self, data: bytes) -> list[Any]:
        """Feed received bytes; return the records they complete (maybe none).

        Raises:
            RecordTooLong: a length prefix announces more than ``max_length`` bytes.
        """
        decode = self.decode
        try:
            blocks = self._blocks.get(data)
        except ProtocolError as exc:
            exc.records = [decode(block) for block in exc.records]
            raise
        return [decode(block) for block in blocks]

    def decode(self, record: bytes) -> Any:
        """Decode one complete record: the value, or an :class:`InvalidRecord`."""
        try:
            return self._decoder.decode(record)
        except UNDECODABLE as exc:
            return InvalidRecord(str(exc), bytes(record))

    def encode(self, record: Any) -> bytes:
        """Encode one record, without the length prefix."""
        return self._encoder.encode(record)

    def put(self, records: list[Any]) -> bytes:
        """Encode records for sending, each behind its length."""
        encode = self._encoder.encode
        return self._blocks.put([encode(r) for r in records])

    def get_pending(self) -> bytes:
        """Bytes received but not yet part of a complete record (POE's ``get_pending``)."""
        return self._blocks.get_pending()
