"""Stacked filters: one filter's records are another's input (POE::Filter::Stack).

``Stack(outer, inner)``: ``outer`` faces the network and must produce ``bytes``
records (a block or stream filter); ``inner`` turns those into the records the
handlers see. Two ways of reading them, chosen by what ``inner`` is:

* a *decoding* filter (one with ``decode(bytes)`` and ``encode(record)``: the JSON
  and MessagePack filters) decodes each outer record as one whole record:
  ``Stack(BlockFilter(codec="u16"), JSONFilter(type=Order))`` reads one JSON
  document per length-prefixed block. :meth:`put` encodes each record into its
  own outer record.
* any other filter reads the outer records as a byte stream, framed again:
  ``Stack(BlockFilter(codec="u32"), LineFilter())`` reads lines carried in blocks,
  wherever the block boundaries fall. :meth:`put` gives each record its own outer
  record.

Bounds and errors are the filters' own: the outer filter bounds each outer record
(and so, for a decoding inner filter, each record: its own ``max_length``, a line
bound, does not apply), a streaming inner filter bounds its records. A
:class:`ProtocolError` from either carries, as its ``records``, every complete
record the stack produced before it, in order. :meth:`get_pending` returns the
outer filter's pending bytes: that is what a replacement filter could read. Bytes
the inner filter of a streaming stack holds are a partial inner record,
meaningless to another framing, and are dropped.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import ProtocolError

__all__ = ["Stack"]


class _Filter(Protocol):
    def get(self, data: bytes) -> list[Any]: ...

    def put(self, records: list[Any]) -> bytes: ...

    def get_pending(self) -> bytes: ...


class Stack:
    """Two filters in a row: ``outer`` frames the wire, ``inner`` reads its records.

    Args:
        outer: the filter next to the network; its records must be ``bytes``.
        inner: the filter whose records the handlers get.
    """

    __slots__ = ("_decode", "_encode", "inner", "outer")

    name = "stack"

    def __init__(self, outer: _Filter, inner: _Filter):
        self.outer = outer
        self.inner = inner
        decode = getattr(inner, "decode", None)
        encode = getattr(inner, "encode", None)
        both = callable(decode) and callable(encode)
        self._decode = decode if both else None
        self._encode = encode if both else None

    def get(self, data: bytes) -> list[Any]:
        """Feed received bytes; return the inner records they complete.

        Raises:
            ProtocolError: from either filter (``RecordTooLong`` included), with the
                complete records before it.
        """
        try:
            blocks = self.outer.get(data)
        except ProtocolError as exc:
            exc.records = self._inner(exc.records)
            raise
        return self._inner(blocks)

    def _inner(self, blocks: list[bytes]) -> list[Any]:
        decode = self._decode
        if decode is not None:
            return [decode(block) for block in blocks]
        records: list[Any] = []
        get = self.inner.get
        for block in blocks:
            try:
                records += get(block)
            except ProtocolError as exc:
                exc.records = records + exc.records
                raise
        return records

    def put(self, records: list[Any]) -> bytes:
        """Encode records: each becomes one outer record."""
        if self._encode is not None:
            return self.outer.put([self._encode(r) for r in records])
        put = self.inner.put
        return self.outer.put([put([r]) for r in records])

    def get_pending(self) -> bytes:
        """The outer filter's pending bytes (see the module docs)."""
        return self.outer.get_pending()
