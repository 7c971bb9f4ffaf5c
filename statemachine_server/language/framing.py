"""Switchable framing for specs: lines and fixed-size blocks, one record at a time.

A spec that uses ``switch_filter`` (memcached's ``set`` reads a line, then a block
of N bytes, then lines again) needs each record cut only when it is handled: the
bytes after the record whose handler switches the filter must reach the new
filter untouched. These filters follow POE::Filter's ``get_one_start`` /
``get_one`` protocol for that, and the connection pulls from them one record at a
time (``Connection.switch_filter``). They are deliberately small: specs without
``switch_filter`` use the batch :class:`~statemachine_server.filters.LineFilter`,
which is faster.

Both keep unread bytes in a ``bytearray`` with a read offset, compacted only when
the consumed part is large, so a read of many records costs linear time; a line's
terminator is searched for only in bytes not searched before. On a switch the new
filter takes that buffer over as it is (``adopt``) rather than
being handed a copy of what is left (``get_pending``): a read of N pipelined
``set`` commands switches 2N times, and copying the rest at each switch made it
cost time quadratic in N.
"""

from __future__ import annotations

from ..errors import ProtocolError, RecordTooLong

__all__ = ["PullBlockFilter", "PullLineFilter"]

# Compact the buffer once this many bytes at its front are consumed.
_COMPACT = 1 << 16


class _Buffered:
    __slots__ = ("_buf", "_pos", "_scanned")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the unread bytes
        self._scanned = 0  # bytes after _pos already searched (lines: known to hold no "\n")

    def get_one_start(self, data: bytes) -> None:
        """Add received bytes; records are cut from them by :meth:`get_one`."""
        if self._pos >= _COMPACT:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def get_pending(self) -> bytes:
        """Bytes received but not yet cut into a record."""
        return bytes(self._buf[self._pos :])

    def adopt(self, old: object) -> bool:
        """Take over the bytes ``old`` has not cut yet, without copying them.

        What a connection switching from ``old`` to this filter does instead of
        ``get_one_start(old.get_pending())`` when it can: ``old`` must be one of
        these filters, and this one must hold no unread bytes of its own.

        Returns:
            Whether bytes were taken (False: none, or not possible here).
        """
        if not isinstance(old, _Buffered) or self._pos != len(self._buf):
            return False  # ours come first: the caller appends a copy of old's after them
        self._reset()
        self._buf, self._pos = old.hand_over()
        return self._pos != len(self._buf)

    def hand_over(self) -> tuple[bytearray, int]:
        """The buffer and the offset of its unread bytes, given away as they are:
        this filter is left empty (so it can be switched back to)."""
        held = self._buf, self._pos
        self._reset()
        return held

    def _reset(self) -> None:
        self._buf = bytearray()
        self._pos = self._scanned = 0

    def get_one(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def get(self, data: bytes) -> list[str]:
        """Every record the bytes complete (the batch form of the filter contract)."""
        self.get_one_start(data)
        records: list[str] = []
        while one := self.get_one():
            records += one
        return records


class PullLineFilter(_Buffered):
    """Lines, cut one at a time; the same framing as ``LineFilter``.

    Args:
        max_length: the longest line accepted, in bytes, terminator excluded.
        newline: what :meth:`put` ends each line with.
    """

    __slots__ = ("_block", "max_length", "newline")

    name = "line"
    #: What :meth:`put` takes (see LineFilter.records).
    records: tuple[type, ...] | None = (str,)

    def __init__(self, max_length: int, newline: str = "\n"):
        super().__init__()
        self.max_length = max_length
        self.newline = newline
        self._block: tuple[int, bytes] | None = None

    def expect_block(self, size: int, end: bytes = b"") -> None:
        """Cut the next record as a block of ``size`` bytes followed by ``end``
        (checked, dropped), then lines again: memcached's data block, without
        switching filters (``switch_filter: {type: block, once: true}``)."""
        self._block = (size, end)

    def get_one(self) -> list[str]:
        """The next complete line, as a one-item list, or ``[]``.

        Raises:
            RecordTooLong: the line is longer than ``max_length``.
            ProtocolError: an expected block is not followed by its ``end``.
        """
        if self._block is not None:
            return self._one_block(self._block)
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos + self._scanned)
        if end < 0:
            self._scanned = len(buf) - pos
            if self._scanned > self.max_length + 1:  # +1: a "\r" waiting for its "\n"
                raise RecordTooLong(f"line longer than {self.max_length} bytes")
            return []
        self._pos, self._scanned = end + 1, 0
        if end > pos and buf[end - 1] == 13:  # "\r\n"
            end -= 1
        if end - pos > self.max_length:
            raise RecordTooLong(f"line longer than {self.max_length} bytes")
        return [buf[pos:end].decode("utf-8", "surrogateescape")]

    def _one_block(self, block: tuple[int, bytes]) -> list[str]:
        size, end = block
        buf, pos = self._buf, self._pos
        stop = pos + size
        if len(buf) < stop + len(end):
            return []
        if end and buf[stop : stop + len(end)] != end:
            raise ProtocolError(f"a block of {size} bytes is not followed by {end!r}")
        self._pos, self._scanned, self._block = stop + len(end), 0, None
        return [buf[pos:stop].decode("utf-8", "surrogateescape")]

    @property
    def encodes_as(self) -> tuple[str, str]:
        """How :meth:`put` encodes: filters that say the same encode alike, so a
        switch between them need not write the replies put so far first."""
        return ("line", self.newline)

    def put(self, records: list[str]) -> bytes:
        """Encode lines for sending, each followed by ``newline``."""
        nl = self.newline
        return (nl.join(records) + nl).encode("utf-8", "surrogateescape")


class PullBlockFilter(_Buffered):
    """Records of exactly ``size`` bytes, each followed by ``end`` (checked, dropped),
    cut one at a time (memcached's data block; not the batch
    :class:`~statemachine_server.filters.BlockFilter`, whose blocks are bytes).

    Blocks are handed out as ``str`` (UTF-8 with ``surrogateescape``, so any bytes
    survive and encode back unchanged), like lines, so templates and conditions
    treat them alike. What the server sends is still encoded by ``output``: a
    block filter only changes how input is cut.

    Args:
        size: bytes per block.
        end: bytes that must follow each block (memcached's ``"\\r\\n"``).
        output: the filter whose :meth:`put` encodes replies (the line filter).
    """

    __slots__ = ("_output", "end", "size")

    name = "block"

    def __init__(self, size: int, end: bytes = b"", output: PullLineFilter | None = None):
        super().__init__()
        self.size = size
        self.end = end
        self._output = output or PullLineFilter(1 << 16)

    def get_one(self) -> list[str]:
        """The next complete block, as a one-item list, or ``[]``.

        Raises:
            ProtocolError: the bytes after a block are not ``end``.
        """
        buf, pos = self._buf, self._pos
        stop = pos + self.size
        if len(buf) < stop + len(self.end):
            return []
        if self.end and buf[stop : stop + len(self.end)] != self.end:
            raise ProtocolError(f"a block of {self.size} bytes is not followed by {self.end!r}")
        self._pos = stop + len(self.end)
        return [buf[pos:stop].decode("utf-8", "surrogateescape")]

    @property
    def encodes_as(self) -> tuple[str, str]:
        """As the output filter's (see :attr:`PullLineFilter.encodes_as`)."""
        return self._output.encodes_as

    def put(self, records: list[str]) -> bytes:
        """Encode replies with the output filter."""
        return self._output.put(records)
