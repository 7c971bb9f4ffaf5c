"""The stream filter: bytes pass through as they come (POE::Filter::Stream).

Framing rules: none. Each :meth:`get` returns the bytes it was given as one record
(none for an empty read); :meth:`put` concatenates records. Record boundaries are
wherever the network cut the stream, so only the concatenation of the records is
meaningful.

Bound: nothing is buffered, so there is no record size to limit: a record is one
read, which asyncio caps at 256 KiB (uvloop at 64 KiB). The connection's output
limits still bound what is sent back.
"""

from __future__ import annotations

__all__ = ["StreamFilter"]


class StreamFilter:
    """Raw bytes in, raw bytes out."""

    __slots__ = ()

    name = "stream"
    #: What :meth:`put` takes: bytes, or text (sent as UTF-8, ``surrogateescape``).
    records: tuple[type, ...] | None = (bytes, bytearray, str)

    def get(self, data: bytes) -> list[bytes]:
        """Return the bytes read as one record (none if empty)."""
        return [bytes(data)] if data else []

    def put(self, records: list[bytes | str]) -> bytes:
        """Concatenate records for sending (text as UTF-8, ``surrogateescape``)."""
        return b"".join(
            r.encode("utf-8", "surrogateescape") if isinstance(r, str) else r for r in records
        )

    def get_pending(self) -> bytes:
        """Always empty: this filter holds nothing back."""
        return b""
