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

Other separators (POE::Filter::Line's ``Literal`` and ``InputRegexp``):

* ``separator=`` any non-empty literal (``"\\r\\n"``, ``b"\\0"``, ``"||"``): it ends a
  record and nothing is stripped. Output records end with it too.
* ``regex=`` a bytes (or ASCII ``str``) pattern: each match ends a record. A match
  is taken as soon as it is complete in the buffer, as POE does, so a separator
  should not match a proper prefix of another of its matches: ``\\r?\\n`` or
  ``[;,]`` are fine, while ``\\r\\n?`` would end a record at a ``\\r`` that arrives
  alone (and anchors or lookarounds would see the buffer's edges, not the
  stream's). Matches must be 1 to 1024 bytes long (``\\n+`` is refused), so that
  after a read at most the last 1023 bytes are searched again: still linear when
  fed one byte at a time. Output records end with ``output_separator`` (default
  ``"\\n"``).

The default (``"\\n"``, ``\\r`` stripped) keeps its own code path: choosing it costs
nothing.
"""

from __future__ import annotations

import re
import re._parser as _re_parser  # type: ignore[import-not-found]  # no public API for widths
from typing import Any

from ..errors import RecordTooLong

__all__ = ["DEFAULT_MAX_LINE", "LineFilter"]

DEFAULT_MAX_LINE = 64 * 1024
#: Reads of at least LONG_TEXT bytes are split by searching for each separator
#: while lines are at least LONG_LINE characters long (see :func:`split_long`).
LONG_TEXT = 8192
LONG_LINE = 256
#: The longest match a separator regex may have (see above).
MAX_SEPARATOR = 1024


class LineFilter:
    """Newline-delimited text records (or records ended by another separator).

    Args:
        max_length: the longest line accepted, in bytes, separator excluded.
        separator: the literal that ends a line. The default ``"\\n"`` also drops a
            ``\\r`` before it; any other separator is taken literally.
        regex: a pattern whose matches end lines, instead of ``separator``.
        output_separator: what :meth:`put` ends each line with; by default the
            literal separator, or ``"\\n"`` with a regex.

    Raises:
        ValueError: ``max_length`` below 1, an empty separator, or a regex that can
            match nothing or more than 1024 bytes.
    """

    __slots__ = ("_buf", "max_length")

    name = "line"
    #: What :meth:`put` takes (a connection checks each record when it is put).
    records: tuple[type, ...] | None = (str,)

    def __new__(
        cls,
        max_length: int = DEFAULT_MAX_LINE,
        *,
        separator: str | bytes = "\n",
        regex: str | bytes | re.Pattern[bytes] | None = None,
        output_separator: str | bytes | None = None,
    ) -> LineFilter:
        # The default framing keeps this class's own get/put; anything else is
        # the subclass below, so that choosing it adds no test to the default path.
        default = separator in ("\n", b"\n") and regex is None and output_separator is None
        if cls is LineFilter and not default:
            cls = _SeparatedLineFilter
        return object.__new__(cls)

    def __init__(self, max_length: int = DEFAULT_MAX_LINE, **_: Any):
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
        if not buf and data.endswith(b"\n") and len(data) <= self.max_length:
            # The usual read: whole lines, nothing held, too short to hide an
            # overlong one. No search and no copy: decode, split, drop the "".
            # _decode_lines, inlined on purpose: this runs once per read on the
            # per-message path, and calling it here cost 2% more instructions per
            # line on one-line reads (one Python call, about 480 instructions).
            # Keep it the same as _decode_lines(data) followed by the pop.
            text = data.decode("utf-8", "surrogateescape")
            lines = text.split("\n") if len(data) < LONG_TEXT else split_long(text, "\n")
            lines.pop()
            if "\r" in text:
                lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            return lines
        end = data.rfind(b"\n")
        if end < 0:
            # No line completes: keep the bytes. Only the new bytes were searched.
            buf += data
            # +1: the line's "\r" may already be here while its "\n" is not.
            if len(buf) > self.max_length + 1:
                raise RecordTooLong(f"line longer than {self.max_length} bytes")
            return []
        chunk: bytes | bytearray
        if buf:
            buf += data
            end += len(buf) - len(data)
            chunk = buf[:end]  # a copy already: bytes() of it would be a second
            del buf[: end + 1]
        else:
            chunk = data[:end] if end + 1 < len(data) else data[:-1]
            if end + 1 < len(data):
                buf += data[end + 1 :]
        if len(chunk) > self.max_length:
            # Slow path, taken only by chunks big enough to hide an overlong line.
            return self._checked(chunk)
        if len(buf) > self.max_length + 1:
            raise RecordTooLong(f"line longer than {self.max_length} bytes", _decode_lines(chunk))
        return _decode_lines(chunk)

    def _checked(self, chunk: bytes | bytearray) -> list[str]:
        limit = self.max_length
        # The usual case: many short lines in one big read. For ASCII bytes (checked
        # in C) characters are bytes, so the lengths are checked in C on the decoded
        # lines (a "\r" already dropped, as the per-line path does before its
        # check); other text takes the per-line path below.
        if chunk.isascii():
            lines = _decode_lines(chunk)
            if max(map(len, lines)) <= limit:
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


class _SeparatedLineFilter(LineFilter):
    """Lines ended by another literal, or by regex matches (see the module docs)."""

    __slots__ = ("_find", "_out", "_scan", "_split", "_width")

    def __init__(
        self,
        max_length: int = DEFAULT_MAX_LINE,
        *,
        separator: str | bytes = "\n",
        regex: str | bytes | re.Pattern[bytes] | None = None,
        output_separator: str | bytes | None = None,
    ):
        super().__init__(max_length)
        literal = _as_bytes(separator, "separator")
        # The text to split on when a read's lines can be decoded in one call and
        # split in C, as the default path does: for an ASCII separator (never part
        # of a multi-byte character) that cannot overlap itself (so splitting from
        # the left after finding the last one frames as a left-to-right scan does).
        self._split: str | None = None
        if regex is None and literal.isascii() and not _overlaps_itself(literal):
            self._split = literal.decode()
        if regex is None:
            self._width = len(literal)
            self._find = _literal_finder(literal)
            out = literal if output_separator is None else output_separator
        else:
            pattern = _compile(regex)
            self._width = _max_width(pattern)
            self._find = _regex_finder(pattern)
            out = b"\n" if output_separator is None else output_separator
        self._out = _as_bytes(out, "output_separator").decode("utf-8", "surrogateescape")
        # Where the next search starts: bytes before it were searched already.
        self._scan = 0

    def get(self, data: bytes) -> list[str]:  # type: ignore[override]
        if self._split is not None:
            return self._get_split(data, self._split)
        buf = self._buf
        buf += data
        find, limit = self._find, self.max_length
        lines: list[str] = []
        start = 0
        scan = self._scan
        while (span := find(buf, scan)) is not None:
            end, scan = span
            if end - start > limit:
                raise RecordTooLong(f"line longer than {limit} bytes", lines)
            lines.append(buf[start:end].decode("utf-8", "surrogateescape"))
            start = scan
        if start:
            del buf[:start]  # O(1): CPython's bytearray moves its start, not the bytes
        # A separator cut by the end of this read is at most width - 1 bytes back.
        self._scan = max(0, len(buf) - self._width + 1)
        if len(buf) > limit + self._width - 1:
            raise RecordTooLong(f"line longer than {limit} bytes", lines)
        return lines

    def _get_split(self, data: bytes, sep: str) -> list[str]:
        buf = self._buf
        width, limit = self._width, self.max_length
        raw_sep = sep.encode()
        # Only the new bytes (and a separator cut by the last read) are searched;
        # when nothing is buffered the read is cut up as it is, without a copy.
        chunk: bytes | bytearray
        if buf:
            buf += data
            end = buf.rfind(raw_sep, self._scan)
            if end >= 0:
                chunk = buf[:end]
                del buf[: end + width]
        else:
            end = data.rfind(raw_sep)
            if end >= 0:
                chunk = data[:end]
                buf += data[end + width :]
            else:
                buf += data
        self._scan = max(0, len(buf) - width + 1)
        if end < 0:
            if len(buf) > limit + width - 1:
                raise RecordTooLong(f"line longer than {limit} bytes")
            return []
        lines = _decode_lines(chunk, sep, False)
        if len(chunk) > limit and (not chunk.isascii() or max(map(len, lines)) > limit):
            # Slow path: some line may be over the limit; find the first one.
            good: list[str] = []
            for raw in chunk.split(raw_sep):
                if len(raw) > limit:
                    raise RecordTooLong(f"line longer than {limit} bytes", good)
                good.append(raw.decode("utf-8", "surrogateescape"))
        if len(buf) > limit + width - 1:
            raise RecordTooLong(f"line longer than {limit} bytes", lines)
        return lines

    def put(self, records: list[str]) -> bytes:  # type: ignore[override]
        """Encode lines for sending: each ends with the output separator."""
        out = self._out
        return (out.join(records) + out).encode("utf-8", "surrogateescape")


def split_long(text: str, sep: str) -> list[str]:
    """``text.split(sep)``, found by searching while the lines are long.

    ``str.split`` tests the characters one by one in a loop (0.4 ns a byte here:
    110 µs for a read of four 64 KiB lines, most of such a line's cost), where
    ``str.find`` jumps to the next separator with ``memchr``. Searching costs a
    Python step per line, so at the first short line the rest goes to ``split``.
    ``sep`` must not overlap itself (as every split-framed separator here)."""
    find = text.find
    width = len(sep)
    lines: list[str] = []
    start = 0
    end = find(sep)
    while end - start >= LONG_LINE:
        lines.append(text[start:end])
        start = end + width
        end = find(sep, start)
    if end < 0:  # no separator left (a long line's chunk has none): no split
        lines.append(text[start:] if start else text)
    elif start == 0:
        return text.split(sep)
    else:
        lines += text[start:].split(sep)
    return lines


def _decode_lines(chunk: bytes | bytearray, sep: str = "\n", strip_cr: bool = True) -> list[str]:
    """Decode a run of records and split it at ``sep``; ``strip_cr`` drops a
    trailing ``\\r`` from each (the default framing).

    One decode and one split in C for all a read's lines is much cheaper than one
    per line. A ``sep`` that is ASCII never cuts a UTF-8 character, so splitting the
    decoded text frames as splitting the bytes would.
    """
    text = chunk.decode("utf-8", "surrogateescape")
    lines = text.split(sep) if len(chunk) < LONG_TEXT else split_long(text, sep)
    if strip_cr and "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def _as_bytes(value: str | bytes, what: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if not raw:
        raise ValueError(f"{what} must not be empty")
    return raw


def _overlaps_itself(sep: bytes) -> bool:
    return any(sep[:k] == sep[-k:] for k in range(1, len(sep)))


def _literal_finder(sep: bytes) -> Any:
    n = len(sep)

    def find(buf: bytearray, pos: int) -> tuple[int, int] | None:
        i = buf.find(sep, pos)
        return None if i < 0 else (i, i + n)

    return find


def _regex_finder(pattern: re.Pattern[bytes]) -> Any:
    search = pattern.search

    def find(buf: bytearray, pos: int) -> tuple[int, int] | None:
        match = search(buf, pos)
        return None if match is None else match.span()

    return find


def _compile(regex: str | bytes | re.Pattern[bytes]) -> re.Pattern[bytes]:
    if isinstance(regex, re.Pattern):
        if not isinstance(regex.pattern, bytes):
            raise ValueError("the separator regex must be a bytes pattern")
        return regex
    if isinstance(regex, str):
        if not regex.isascii():
            raise ValueError("a str separator regex must be ASCII: pass bytes for others")
        regex = regex.encode()
    return re.compile(regex)


def _max_width(pattern: re.Pattern[bytes]) -> int:
    low, high = _re_parser.parse(pattern.pattern, pattern.flags).getwidth()
    if low < 1:
        raise ValueError(f"separator regex {pattern.pattern!r} can match nothing")
    if high > MAX_SEPARATOR:
        raise ValueError(
            f"separator regex {pattern.pattern!r} can match more than {MAX_SEPARATOR} bytes: "
            "bound its repeats"
        )
    return int(high)
