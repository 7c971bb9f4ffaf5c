"""The line filter: bytes in, ``str`` lines out; lines in, bytes out. Sans-I/O.

Framing rules:

* ``\\n`` ends a line and a ``\\r`` just before it is dropped, so ``\\n`` and ``\\r\\n``
  clients both work (POE::Filter::Line and Twisted's LineReceiver accept the same).
  Output lines end with ``\\n``.
* Lines are decoded as UTF-8 with ``surrogateescape``: invalid bytes become lone
  surrogates and encode back to the very same bytes, so any byte string echoes back
  byte for byte and the handler still gets a ``str``.
* A line may hold at most ``max_length`` bytes (default 64 KiB, as Twisted's
  ``LineReceiver.MAX_LENGTH`` is 16 KiB and nginx's large header buffer is 8 KiB; we
  allow more since whole records, not headers, travel here). Past it :meth:`get`
  raises :class:`RecordTooLong`, carrying the complete lines that came before.

Cost: every byte is searched for ``\\n`` at most twice (once when it arrives, once
more when the line it belongs to completes), so feeding a line one byte at a time
stays linear. A UTF-8 multi-byte sequence never contains the byte ``0x0A``, so a
chunk cut after its last ``\\n`` always decodes cleanly in one call.
"""

from __future__ import annotations

from ..errors import RecordTooLong

__all__ = ["DEFAULT_MAX_LINE", "LineFilter"]

DEFAULT_MAX_LINE = 64 * 1024


class LineFilter:
    """Newline-delimited text records.

    Args:
        max_length: the longest line accepted, in bytes, separator excluded.
    """

    __slots__ = ("_buf", "max_length")

    name = "line"

    def __init__(self, max_length: int = DEFAULT_MAX_LINE):
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        self.max_length = max_length
        # Bytes of the current, incomplete line. A bytearray grows in amortised O(1).
        self._buf = bytearray()

    def get(self, data: bytes) -> list[str]:
        """Feed received bytes; return the lines they complete (maybe none).

        Raises:
            RecordTooLong: a line is longer than ``max_length``; its ``records`` are
                the complete lines before it. The filter should not be fed again.
        """
        buf = self._buf
        end = data.rfind(b"\n")
        if end < 0:
            # No line completes: keep the bytes. Only the new bytes were searched.
            buf += data
            # +1: the line's "\r" may already be here while its "\n" is not.
            if len(buf) > self.max_length + 1:
                raise RecordTooLong(f"line longer than {self.max_length} bytes")
            return []
        if buf:
            buf += data
            end += len(buf) - len(data)
            chunk = bytes(buf[:end])
            del buf[: end + 1]
        else:
            chunk = data[:end] if end + 1 < len(data) else data[:-1]
            if end + 1 < len(data):
                buf += data[end + 1 :]
        if len(chunk) > self.max_length:
            # Slow path, taken only by chunks big enough to hide an overlong line.
            return self._checked(chunk)
        if len(buf) > self.max_length + 1:
            raise RecordTooLong(f"line longer than {self.max_length} bytes", self._decode(chunk))
        return self._decode(chunk)

    @staticmethod
    def _decode(chunk: bytes) -> list[str]:
        # One decode call for the whole run of lines is much cheaper than one per line.
        text = chunk.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        if "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        return lines

    def _checked(self, chunk: bytes) -> list[str]:
        limit = self.max_length
        text = chunk.decode("utf-8", "surrogateescape")
        # The usual case: many short lines in one big read. For ASCII text (an O(1)
        # test in CPython) characters are bytes, so the lengths are checked in C on
        # the decoded lines; other text takes the per-line path below.
        if text.isascii():
            lines = text.split("\n")
            if max(map(len, lines)) <= limit:
                if "\r" in text:
                    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
                if len(self._buf) > limit + 1:
                    raise RecordTooLong(f"line longer than {limit} bytes", lines)
                return lines
        good: list[str] = []
        for raw in chunk.split(b"\n"):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > limit:
                raise RecordTooLong(f"line longer than {limit} bytes", good)
            good.append(raw.decode("utf-8", "surrogateescape"))
        if len(self._buf) > limit + 1:
            raise RecordTooLong(f"line longer than {limit} bytes", good)
        return good

    def put(self, records: list[str]) -> bytes:
        """Encode lines for sending: each gets a trailing ``\\n``."""
        return ("\n".join(records) + "\n").encode("utf-8", "surrogateescape")

    def get_pending(self) -> bytes:
        """Bytes received but not yet part of a complete line (POE's ``get_pending``)."""
        return bytes(self._buf)
