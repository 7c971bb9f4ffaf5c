"""The block filter: fixed-size or length-prefixed binary records (POE::Filter::Block).

Framing rules, by mode:

* ``BlockFilter(size=N)``: every record is exactly ``N`` bytes; :meth:`put` refuses
  records of another size.
* ``BlockFilter(codec="u8" | "u16" | "u32")``: each record is preceded by its
  length as an unsigned big-endian integer of 1, 2 or 4 bytes (network order, as
  in most binary protocols).
* ``BlockFilter(codec="netstring")``: ``<length in decimal>:<bytes>,`` as in D. J.
  Bernstein's netstrings: the length has no sign and no leading zero (``0:,`` is
  the empty record), and the comma is required.

Records are ``bytes``. The default is ``codec="u32"``.

Bound: a length-prefixed record may hold at most ``max_length`` bytes (default
4 MiB, gRPC's default maximum message size). The length is checked as soon as the
prefix is complete, before any of the body is buffered, so a client cannot make us
hold more than ``max_length`` plus a prefix. Past it :meth:`get` raises
:class:`RecordTooLong` with the complete records before it. A malformed netstring
(a length that is not a number, a leading zero, a missing comma) raises
:class:`ProtocolError`, also with the records before it: nothing after a framing
error can be trusted.

Cost: the filter knows how many bytes the next record needs, so a read that does
not complete it is appended in O(1) with nothing searched or parsed; records are
cut out of a completed buffer in one pass. Fed one byte at a time it stays linear.
"""

from __future__ import annotations

import struct
from typing import Literal

from ..errors import ProtocolError, RecordTooLong

__all__ = ["DEFAULT_MAX_BLOCK", "BlockFilter"]

DEFAULT_MAX_BLOCK = 4 * 1024 * 1024

Codec = Literal["u8", "u16", "u32", "netstring"]

#: Length-prefix formats: struct format and the largest length it can carry.
_PREFIXES = {"u8": (">B", 0xFF), "u16": (">H", 0xFFFF), "u32": (">I", 0xFFFF_FFFF)}


class BlockFilter:
    """Binary records: fixed-size blocks, or blocks with a length prefix.

    Args:
        size: the size of every record, for fixed-size blocks.
        codec: the length prefix: ``"u8"``, ``"u16"``, ``"u32"`` (big-endian) or
            ``"netstring"``. The default when ``size`` is not given: ``"u32"``.
        max_length: the largest record accepted, in bytes (prefix excluded).

    Raises:
        ValueError: both or invalid ``size`` and ``codec``, or ``max_length`` < 1.
    """

    __slots__ = ("_buf", "_need", "_netstring", "_prefix", "_unpack", "codec", "max_length", "size")

    name = "block"
    #: What :meth:`put` takes: bytes, or text (sent as UTF-8; any bytes a spec's
    #: block records hold survive, as they are text with ``surrogateescape``).
    records: tuple[type, ...] | None = (bytes, bytearray, str)

    def __init__(
        self,
        size: int | None = None,
        *,
        codec: Codec | None = None,
        max_length: int = DEFAULT_MAX_BLOCK,
    ):
        if size is not None and codec is not None:
            raise ValueError("give either size (fixed blocks) or codec (length prefix), not both")
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        self.size = size
        self.codec = codec
        self._prefix = 0
        self._netstring = False
        if size is not None:
            if size < 1:
                raise ValueError("size must be at least 1")
            max_length = size
        else:
            self.codec = codec = codec or "u32"
            if codec == "netstring":
                self._netstring = True
                # The longest acceptable length has this many digits.
                self._prefix = len(str(max_length))
            elif codec in _PREFIXES:
                fmt, largest = _PREFIXES[codec]
                self._unpack = struct.Struct(fmt).unpack_from
                self._prefix = struct.calcsize(fmt)
                max_length = min(max_length, largest)
            else:
                raise ValueError(f"unknown codec {codec!r}: expected u8, u16, u32 or netstring")
        self.max_length = max_length
        self._buf = bytearray()
        # Bytes the buffer must hold before the next record can complete: reads
        # that leave it short are only appended.
        self._need = size or (1 if self._netstring else self._prefix)

    def get(self, data: bytes) -> list[bytes]:
        """Feed received bytes; return the records they complete (maybe none).

        Raises:
            RecordTooLong: a length prefix announces more than ``max_length`` bytes.
            ProtocolError: a malformed netstring.
        """
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            view = bytes(buf)
            buf.clear()
        elif len(data) < self._need:
            buf += data
            return []
        else:
            view = bytes(data)
        if self.size is not None:
            records, pos = self._fixed(view)
        elif self._netstring:
            records, pos = self._netstrings(view)
        else:
            records, pos = self._prefixed(view)
        if pos < len(view):
            buf += view[pos:] if pos else view
        return records

    def _fixed(self, view: bytes) -> tuple[list[bytes], int]:
        size = self.size
        assert size is not None
        end = len(view) - len(view) % size
        return [view[i : i + size] for i in range(0, end, size)], end

    def _prefixed(self, view: bytes) -> tuple[list[bytes], int]:
        unpack, prefix, limit = self._unpack, self._prefix, self.max_length
        records: list[bytes] = []
        pos, n = 0, len(view)
        while n - pos >= prefix:
            (length,) = unpack(view, pos)
            if length > limit:
                raise RecordTooLong(f"block of {length} bytes, over {limit}", records)
            end = pos + prefix + length
            if end > n:
                self._need = end - pos
                return records, pos
            records.append(view[pos + prefix : end])
            pos = end
        self._need = prefix
        return records, pos

    def _netstrings(self, view: bytes) -> tuple[list[bytes], int]:
        digits, limit = self._prefix, self.max_length
        records: list[bytes] = []
        pos, n = 0, len(view)
        while pos < n:
            # The colon must come within digits + 1 bytes: only those are searched.
            colon = view.find(b":", pos, pos + digits + 1)
            if colon < 0:
                head = view[pos : pos + digits + 1]
                if not head.isdigit():
                    raise ProtocolError("netstring length is not a decimal number", records)
                if len(head) > digits:
                    raise RecordTooLong(f"netstring longer than {limit} bytes", records)
                self._need = n - pos + 1
                return records, pos
            head = view[pos:colon]
            if not head.isdigit() or (head[0] == 0x30 and len(head) > 1):
                raise ProtocolError(f"netstring length {head[:digits]!r} is malformed", records)
            length = int(head)
            if length > limit:
                raise RecordTooLong(f"netstring of {length} bytes, over {limit}", records)
            end = colon + 2 + length
            if end > n:
                self._need = end - pos
                return records, pos
            if view[end - 1] != 0x2C:
                raise ProtocolError("netstring not ended by ','", records)
            records.append(view[colon + 1 : end - 1])
            pos = end
        self._need = 1
        return records, pos

    def put(self, given: list[bytes | str]) -> bytes:
        """Encode records for sending (text as UTF-8, ``surrogateescape``).

        Raises:
            ValueError: a record of the wrong size (fixed blocks) or too long for
                its prefix (255 bytes for u8, 65535 for u16). This is the sender's
                bug, so nothing is sent.
        """
        records = [r.encode("utf-8", "surrogateescape") if isinstance(r, str) else r for r in given]
        if self.size is not None:
            size = self.size
            if any(len(r) != size for r in records):
                raise ValueError(f"every record must be exactly {size} bytes")
            return b"".join(records)
        if self._netstring:
            return b"".join(b"%d:%b," % (len(r), r) for r in records)
        fmt, largest = _PREFIXES[self.codec]  # type: ignore[index]
        pack = struct.Struct(fmt).pack
        parts: list[bytes] = []
        for r in records:
            if len(r) > largest:
                raise ValueError(f"a {self.codec} prefix cannot carry {len(r)} bytes")
            parts.append(pack(len(r)))
            parts.append(r)
        return b"".join(parts)

    def get_pending(self) -> bytes:
        """Bytes received but not yet part of a complete record (POE's ``get_pending``)."""
        return bytes(self._buf)
