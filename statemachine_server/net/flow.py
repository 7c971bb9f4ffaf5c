"""Why a connection is not reading, in one small object (uvicorn's ``FlowControl``).

Reading from a client stops for several independent reasons, and resumes only
when none is left: a reason is a bit, :meth:`FlowControl.pause` sets it and
:meth:`FlowControl.resume` clears it, and only the first pause and the last
resume reach the transport. :data:`DISCARD` is not a pause: input is still read,
but thrown away (closing, or broken framing). Reading on while closing is
Apache's "lingering close": a socket closed with unread input sends RST, and an
RST can destroy replies the client has not read yet.
"""

from __future__ import annotations

import asyncio

__all__ = ["BACKLOG", "DISCARD", "PARKED", "POSTPONED", "USER", "FlowControl"]

PARKED = 1  #: waiting for a free slot (``accepting``)
BACKLOG = 2  #: output above the high-water mark
POSTPONED = 4  #: ``max_postponed`` events wait already: read no more until they are handled
DISCARD = 8  #: not a pause: input is read and dropped
USER = 16  #: ``pause_input()``: the application's own flow control


class FlowControl:
    """The reasons reading is paused, and the transport they pause.

    Attributes:
        reasons: the bits set now (tested on the per-read path: ``reasons & DISCARD``).
        transport: the connection's transport, once it has one.
    """

    __slots__ = ("reasons", "transport")

    def __init__(self) -> None:
        self.reasons = 0
        self.transport: asyncio.Transport | None = None

    def open(self) -> bool:
        """Whether the transport can still be read from and written to."""
        return self.transport is not None and not self.transport.is_closing()

    def pause(self, reason: int) -> None:
        was = self.reasons & ~DISCARD
        self.reasons |= reason
        if reason != DISCARD and not was and self.open():
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume(self, reason: int) -> None:
        if not self.reasons & reason:
            return
        self.reasons &= ~reason
        if not self.reasons & ~DISCARD and self.open():
            self.transport.resume_reading()  # type: ignore[union-attr]

    def discard(self) -> None:
        """From now on read everything and drop it, whatever paused reading before
        (the connection is closing: see the module docstring)."""
        paused = self.reasons & ~DISCARD
        self.reasons = DISCARD
        if paused and self.open():
            self.transport.resume_reading()  # type: ignore[union-attr]
