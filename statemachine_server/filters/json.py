"""The JSON filter: one JSON document per line (JSON Lines), decoded by msgspec.

Framing rules:

* ``\\n`` ends a record; a ``\\r`` before it is JSON whitespace and is ignored, so
  ``\\r\\n`` clients work too. Lines holding only whitespace are skipped.
* :meth:`put` writes each record as compact JSON followed by ``\\n``. A value msgspec
  cannot encode raises ``TypeError``: the sender's bug, nothing is sent.

Typed records: ``JSONFilter(type=T)`` validates every record against ``T`` (any
type msgspec supports: a ``Struct``, a tagged union of Structs, ``dict[str, int]``...)
and returns it decoded into ``T``. The decoder is built once, per filter.

A record that is not valid JSON, or does not match ``T``, comes back as an
:class:`InvalidRecord` (the error, with its ``$.path``, and the raw line) in its
place, and the records after it are decoded as usual. The line framing is intact,
so the connection can answer that one record with an error and go on; raising
instead would end the connection for one typo. Only broken framing ends it.

Bound: a line may hold at most ``max_length`` bytes (default 1 MiB, nginx's default
``client_max_body_size``). Past it :meth:`get` raises :class:`RecordTooLong`,
carrying the records decoded before it.

Cost: as the line filter's (each byte searched for ``\\n`` at most twice); a read
of several complete lines is decoded by one ``decode_lines`` call, and line by line
only when it holds an invalid record.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import RecordTooLong
from .invalid import UNDECODABLE, InvalidRecord

__all__ = ["DEFAULT_MAX_JSON", "JSONFilter"]

DEFAULT_MAX_JSON = 1024 * 1024


class JSONFilter:
    """JSON Lines records, optionally validated into a type.

    Args:
        type: what each record must be (default: any JSON value).
        max_length: the longest line accepted, in bytes, ``\\n`` excluded.
    """

    __slots__ = ("_buf", "_decoder", "_encoder", "max_length", "type")

    name = "json"

    def __init__(self, type: Any = Any, *, max_length: int = DEFAULT_MAX_JSON):
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        self.type = type
        self.max_length = max_length
        self._decoder = msgspec.json.Decoder(type)
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()

    def get(self, data: bytes) -> list[Any]:
        """Feed received bytes; return the records they complete (maybe none).

        Raises:
            RecordTooLong: a line is longer than ``max_length``.
        """
        buf = self._buf
        limit = self.max_length
        end = data.rfind(b"\n")
        if end < 0:
            buf += data
            if len(buf) > limit:
                raise RecordTooLong(f"JSON line longer than {limit} bytes")
            return []
        if buf:
            buf += data
            end += len(buf) - len(data)
            chunk = bytes(buf[:end])
            del buf[: end + 1]
        else:
            chunk = data[:end]
            if end + 1 < len(data):
                buf += data[end + 1 :]
        if len(chunk) > limit:
            lines = chunk.split(b"\n")
            for i, line in enumerate(lines):
                if len(line) > limit:
                    good = self._decode_each(lines[:i])
                    raise RecordTooLong(f"JSON line longer than {limit} bytes", good)
        if len(buf) > limit:
            raise RecordTooLong(f"JSON line longer than {limit} bytes", self._decode(chunk))
        return self._decode(chunk)

    def _decode(self, chunk: bytes) -> list[Any]:
        try:
            return self._decoder.decode_lines(chunk)  # type: ignore[no-any-return]
        except UNDECODABLE:
            return self._decode_each(chunk.split(b"\n"))

    def _decode_each(self, lines: list[bytes]) -> list[Any]:
        decode = self.decode
        return [decode(line) for line in lines if line.strip()]

    def decode(self, record: bytes) -> Any:
        """Decode one complete record: the value, or an :class:`InvalidRecord`."""
        try:
            return self._decoder.decode(record)
        except UNDECODABLE as exc:
            return InvalidRecord(str(exc), bytes(record))

    def encode(self, record: Any) -> bytes:
        """Encode one record, without the newline."""
        return self._encoder.encode(record)

    def put(self, records: list[Any]) -> bytes:
        """Encode records for sending, one JSON document per line."""
        return self._encoder.encode_lines(records)

    def get_pending(self) -> bytes:
        """Bytes received but not yet part of a complete line (POE's ``get_pending``)."""
        return bytes(self._buf)
