"""The write side of a connection: replies put, written once per tick (steps 6-7 of
the input path in :mod:`.connection`).

:meth:`Output.put` appends to :attr:`Output.outbox` and lists the connection with
:meth:`Kernel.mark_dirty <..core.kernel.Kernel.mark_dirty>`; at the end of the
tick the kernel calls :meth:`Output.flush`, which encodes everything put with
one ``filter.put`` and makes one ``transport.write``. Here too: the half-close
(``shutdown_output``), the close after the last reply (with a lingering FIN after
broken framing), the ``max_output`` bound on replies a client leaves unread, and
the ``flushed`` event; and :class:`OutputBudget`, the server's running total of
replies held for clients that do not keep up (``max_output_total``).

What is counted, and when, so that the echo path pays nothing for it: a client
whose transport is under ``high_water`` is keeping up, holds less than that,
and is not counted. Once its transport passes ``high_water`` (``pause_writing``)
it is counted: each reply ``put`` or ``write`` to it adds its size at the call
(so a broadcast to members that never read is checked as it is made, not only
after the write), and each flush replaces that with what the transport (and,
over TLS, the socket under it) holds. ``resume_writing`` (below ``low_water``),
an abort and the socket's loss take it out again.

A base class of :class:`~.connection.Connection` (as asyncio's transports take
their flow control from a mixin), kept apart because it is one concern with its
own fields; the connection's rules stay in :mod:`.connection`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.lifecycle import CLOSED, CLOSING, ERROR, FAST, FLUSHED, OVERFLOW, STAY
from ..filters import Filter
from .base import ConnectionBase
from .flow import BACKLOG

__all__ = ["Output", "OutputBudget"]

log = logging.getLogger("statemachine_server")

#: How often to look again for an empty write buffer when a ``flushed`` handler
#: waits and the transport only said "below the low-water mark".
_FLUSH_POLL = 0.005

#: Replies of a tick up to this size are written whole, whatever max_output:
#: copied into the transport at worst, then cut (see Output._write_big).
_LARGE = 1 << 20


def _size(record: Any) -> int:
    # A record's size as put: text and bytes by their length; other records
    # (JSON values...) are small next to them and counted once written.
    return len(record) if isinstance(record, str | bytes | bytearray) else 0


class OutputBudget:
    """Replies held for the clients of one server that are not keeping up.

    A running total, kept per client only for those past ``high_water`` (see
    the module docstring), so each update is O(1). Past :attr:`limit` the
    largest backlogs are aborted first, as ``max_output`` aborts one (counted as
    ``overflows``, logged) until the total is back under it: a slow consumer
    costs itself, not the clients that read.

    Attributes:
        limit: ``max_output_total``.
        total: the bytes counted now.
        held: the bytes counted per connection (only those with some).
    """

    __slots__ = ("held", "limit", "total")

    def __init__(self, limit: int):
        self.limit = limit
        self.total = 0
        self.held: dict[Output, int] = {}

    def add(self, conn: Output, size: int) -> int:
        """Count ``size`` more bytes for ``conn``; returns what it holds now."""
        held = self.held.get(conn, 0) + size
        self.held[conn] = held
        self.total += size
        return held

    def set(self, conn: Output, held: int) -> bool:
        """``conn`` holds ``held`` bytes now; whether it was cut for the total."""
        self.set_quietly(conn, held)
        return self.total > self.limit and self.cut(conn)

    def forget(self, conn: Output) -> None:
        self.total -= self.held.pop(conn, 0)

    def cut(self, caller: Output) -> bool:
        """Abort the largest backlogs until the total fits; whether ``caller`` was one."""
        # Transports drain between pause and resume without telling us: look
        # again at each one counted before choosing (only when over, so rarely).
        for conn in list(self.held):
            self.set_quietly(conn, conn.unsent())
        cut = False
        for conn in sorted(self.held, key=self.held.__getitem__, reverse=True):
            if self.total <= self.limit:
                break
            cut = cut or conn is caller
            conn.overflow(self.limit, "all clients' replies unread past")
        return cut

    def set_quietly(self, conn: Output, held: int) -> None:
        self.total += held - self.held.pop(conn, 0)
        if held:
            self.held[conn] = held


class Output(ConnectionBase):
    """Replies buffered per tick and written in one go (a base of ``Connection``).

    Attributes:
        outbox: the replies put this tick, not encoded yet. Generated spec code
            appends to it directly, then calls ``kernel.mark_dirty`` (see ``put``).
        dirty: the connection is on the kernel's list for this tick's flush.
    """

    __slots__ = ()

    def put(self, *records: Any) -> None:
        """Send records to the client, encoded by the filter.

        They are buffered and written once at the end of the kernel's tick. After
        the connection is closed they are dropped.
        """
        if self.state is CLOSED:
            return
        accepts = self._accepts
        if accepts is not None:
            for record in records:
                if not isinstance(record, accepts):
                    self._wrong_record(record, accepts)
        self.outbox.extend(records)
        if not self.dirty:
            self.kernel.mark_dirty(self)
        if self.flow.reasons & BACKLOG:  # the client is not keeping up: count them now
            self._count(sum(map(_size, records)))

    def _count(self, size: int) -> None:
        # Replies to a client past high_water, counted as they are made: one that
        # never reads is cut here, before a tick (a broadcast to many such
        # members, say) builds up more for it.
        budget = self._budget
        if budget is None or self.state is CLOSED:
            return
        held = budget.add(self, size)
        limit = self.server.limits.max_output
        if held > limit:
            self.overflow(limit)
        elif budget.total > budget.limit:
            budget.cut(self)

    def unsent(self) -> int:
        """Bytes of replies held for the client now: the transport's buffers (over
        TLS, the socket's under it too) and the tick's replies not written yet."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return 0
        held = transport.get_write_buffer_size() + len(self._raw) + sum(map(_size, self.outbox))
        if self._below is not None and self._below is not True:
            held += self._below.get_write_buffer_size()
        return int(held)

    def _wrong_record(self, record: Any, accepts: tuple[type, ...]) -> None:
        # At the call, naming the type: at the end of the tick it would be an
        # error of the whole batch, far from the code that made it.
        kinds = " or ".join(k.__name__ for k in accepts)
        name = getattr(self._filter, "name", type(self._filter).__name__)
        raise TypeError(
            f"put(): this connection's {name} filter sends {kinds}, not {type(record).__name__}"
        )

    def write(self, data: bytes | str) -> None:
        """Send ``data`` as it is, bypassing the filter: no record ending, no
        framing (a prompt, a body after its length, a whole frame).

        In order with records: those put before are encoded now, ahead of it;
        those put after follow it. Text is sent as UTF-8 (any bytes a text filter
        read survive, as ``surrogateescape`` keeps them). Dropped after the close
        or after :meth:`shutdown_output`, as replies are.

        Raises:
            TypeError: ``data`` is neither bytes nor text (at the call, not at
                the end of the tick).
        """
        cls = data.__class__
        if cls is str:
            raw = data.encode("utf-8", "surrogateescape")  # type: ignore[union-attr]
        elif isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
        else:
            raise TypeError(f"write() takes bytes or str, not {cls.__name__}")
        if self.state is CLOSED or self._half >= 0:
            return
        if self.outbox:
            out, self.outbox = self.outbox, []
            self._raw += self._encode(self._filter, out)
        self._raw += raw
        if not self.dirty:
            self.kernel.mark_dirty(self)
        if self.flow.reasons & BACKLOG:
            self._count(len(raw))

    def shutdown_output(self) -> None:
        """Half-close: once the replies put so far are written, send end-of-stream
        (TCP FIN) and keep reading (POE's ``shutdown_output``).

        The client sees the end of the replies; its input is still handled, and
        the connection closes when the client closes its side. Replies put after
        this are dropped. On TLS, which cannot half-close, this is :meth:`close`.
        """
        if self.state is CLOSED or self._half >= 0:
            return
        if self.transport is not None and not self.transport.can_write_eof():
            self.close()
            return
        self._half = len(self.outbox)
        self.put()  # nothing more to send: only for the flush that shuts output

    def flush(self) -> None:
        # Called by the kernel once per tick: one write for everything put.
        self.dirty = False
        transport = self.transport
        if transport is None:
            return
        if self.outbox or self._raw:
            out, self.outbox = self.outbox, []
            if self._half >= 0 and not self._eof_sent:
                del out[self._half :]  # put after shutdown_output: dropped
            if (out or self._raw) and not transport.is_closing() and not self._eof_sent:
                # _encode(), inlined: a call here is one more per tick per
                # connection, 1.5% more instructions per line on one-line reads.
                try:
                    # Nothing put since a write(): no records (a line filter
                    # would make an empty batch one newline).
                    data = self._filter.put(out) if out else b""
                except Exception as exc:
                    data = self._encode_each(self._filter, out, exc)
                if self._raw:  # write(): raw bytes, and the records put before them
                    data, self._raw = self._raw + data, b""
                # (A module constant first: the limit is three attribute loads,
                # 1% of a one-line read's instructions if paid at every flush.)
                if len(data) > _LARGE and len(data) > self.server.limits.max_output:
                    if self._write_big(transport, data):
                        return
                else:
                    transport.write(data)
                # Past high water the transport has called pause_writing (during
                # write), and high_water <= max_output: only then can it be over,
                # and only then is the client counted in the server's total.
                if (self.flow.reasons & BACKLOG or self._below is not None) and self._check_held(
                    transport, len(data)
                ):
                    return
                if FLUSHED in self.handler_table:
                    self._want_flushed()
        if self._half >= 0:
            if not self._eof_sent:
                self._eof_sent = True
                if not transport.is_closing():
                    transport.write_eof()  # after the replies just written
            if self.state is CLOSING and not transport.is_closing():
                transport.close()
            return
        if self.state is CLOSING and not self._eof_sent:
            self._eof_sent = True
            if self._linger and transport.can_write_eof() and not self._peer_eof:
                transport.write_eof()  # after the buffered replies; then linger
            else:
                transport.close()  # after the buffered replies

    def _encode(self, filter_: Filter, out: list[Any]) -> bytes:
        try:
            return filter_.put(out)  # one call for the tick's replies: the fast path
        except Exception as exc:
            return self._encode_each(filter_, out, exc)

    def _encode_each(self, filter_: Filter, out: list[Any], exc: Exception) -> bytes:
        # A record the filter cannot encode (a JSON reply holding an object, a
        # block of the wrong size) is this connection's error event, like a
        # handler's exception; the records around it still go out, in order.
        self.kernel.enqueue(self, ERROR, (exc, "output"))
        parts = []
        for record in out:
            try:
                parts.append(filter_.put([record]))
            except Exception:
                continue
        return b"".join(parts)

    def _write_big(self, transport: asyncio.Transport, data: bytes) -> bool:
        # More than max_output at once: written a max_output slice at a time, and
        # checked after each, so a client that does not read is cut before the
        # transport copies the rest (asyncio's buffer is a copy of what it could
        # not send). Once over, it stays over (nothing is sent while a buffer
        # is not empty), so this cuts exactly where the whole write would have.
        limit = self.server.limits.max_output
        view = memoryview(data)
        for start in range(0, len(data), limit):
            transport.write(view[start : start + limit])
            if self.flow.reasons & BACKLOG and self._check_held(transport, 0):
                return True
        return False

    def _check_held(self, transport: asyncio.Transport, size: int) -> bool:
        # After a write: what the transport holds, and over TLS what the socket
        # under it holds too, against max_output, then in the server's total.
        # Returns whether the connection was cut.
        limit = self.server.limits.max_output
        held = transport.get_write_buffer_size()
        below = self._below
        if below is True:  # uvloop's TLS: the socket below cannot be seen; one
            held = max(held, size)  # tick's replies are capped at max_output instead
        elif below is not None:
            held += below.get_write_buffer_size()
        if held > limit:
            self.overflow(limit)
            return True
        budget = self._budget
        if budget is None or not ((held and self.flow.reasons & BACKLOG) or self in budget.held):
            return False
        return bool(budget.set(self, held))

    def overflow(self, limit: int, what: str = "over") -> None:
        """Abort the connection for not reading its replies: they passed ``limit``
        (``max_output``, or ``max_output_total`` for all clients, its among the
        largest). Counted as an overflow and logged; abort, not close: a close
        would wait for a reader that never comes."""
        self.server.counts["overflows"] += 1
        log.warning(
            "session %d: %s %d bytes of replies unread; aborting", self.id, what, limit,
            extra={"session": self.id, "state": self.protocol_state or self.state},
        )  # fmt: skip
        self.abort()
        # The rule, not a handler: no user code runs for an overflow (the transport
        # is gone); entering closing drops what was postponed and reads to discard.
        step = FAST[self.state].get(OVERFLOW)
        if step is not None and step is not STAY:
            self._enter(step, OVERFLOW)

    def _want_flushed(self) -> None:
        assert self.transport is not None
        if self.transport.get_write_buffer_size() == 0:
            self._flush_wanted = False
            self.kernel.enqueue(self, FLUSHED, ())
        else:
            self._flush_wanted = True

    def _poll_flushed(self) -> None:
        if self._flush_wanted and self.transport is not None and not self.transport.is_closing():
            if self.transport.get_write_buffer_size() == 0:
                self._want_flushed()
            else:
                self.kernel.running_loop().call_later(_FLUSH_POLL, self._poll_flushed)
