"""A connection: a session whose lifecycle follows :mod:`..core.lifecycle`'s rules.

This is where an event for a client goes. The input path, module by module:

1. ``net/connection.py``: :meth:`Connection.data_received` (asyncio's side, kept
   thin) stamps the time and asks ``net/flow.py`` whether input is being
   discarded (closing);
2. ``filters/`` (``line.py`` for the echo server): ``filter.get(data)`` cuts the
   bytes into records, sans-I/O;
3. ``core/kernel.py``: :meth:`Kernel.enqueue` queues the records of that read as
   one entry; the next :meth:`Kernel.tick` hands it to :meth:`Connection.deliver`;
4. ``core/lifecycle.py``: :data:`FAST[state][event] <..core.lifecycle.FAST>` says
   handle now, postpone (kept in order) or ignore, or which state to enter;
5. the handler: a Python ``on_input(session, record)``, or a spec's generated
   input function (``language/codegen.py``) or compiled rules (``language/runtime.py``);
6. ``net/output.py``: :meth:`Connection.put` appends the reply to
   :attr:`Connection.outbox` and :meth:`Kernel.mark_dirty` lists the connection;
7. at the end of the tick, :meth:`Connection.flush` (``net/output.py``) encodes
   the tick's replies with ``filter.put`` and calls ``transport.write`` once.

Every change of :attr:`Connection.state` goes through :meth:`Connection._enter`
with the table's destination, and what entering ``closing`` or ``closed`` does is
there, in one method. Pull framing (:meth:`Connection.switch_filter` exact at
any record) cuts records one at a time in :meth:`Connection._pull` instead of
step 2. The asyncio ``Protocol`` methods only translate socket happenings into
queued events; all decisions are the table's, so the logic can be driven in
tests with a fake transport and no socket at all.

The connection's fields are declared in ``net/base.py``; its write side
(``net/output.py``), its timeouts (``net/timeouts.py``) and its chunked work
(``net/working.py``) are base classes of their own, and flow control
(``net/flow.py``) is an object it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, cast

from ..core.lifecycle import (
    CLOSE,
    CLOSED,
    CLOSED_EVENT,
    CLOSING,
    CONNECTED,
    DONE,
    EOF,
    ERROR,
    EVENTS,
    FAST,
    INPUT,
    NAMED,
    OUTPUT_HIGH,
    OUTPUT_LOW,
    OVERFLOW,
    POSTPONE,
    READING,
    STAY,
    TIMEOUT,
    WORK,
    WORK_FAILED,
    WORKING,
)
from ..errors import ProtocolError
from ..filters import Filter
from ..work.child import Child
from ..work.job import HELD_BACKLOG, Cancelled
from .flow import BACKLOG, DISCARD, PARKED, POSTPONED, USER
from .output import Output
from .timeouts import WATCH, Timeouts
from .working import Working

__all__ = ["Connection"]

log = logging.getLogger("statemachine_server")

#: Postponed events past this many times ``max_postponed`` abort the connection:
#: its own input stops at 1x (reading pauses), so only events others post can
#: reach it (see _postpone).
_POSTPONED_HARD = 10


#: The handlers' key of an optional function taking all the records of one read
#: at once, ``batch(session, records)``, returning None when it handled them all
#: and ``(handled, exception)`` when a record's actions raised, for an
#: input handler that cannot change the connection's state (the spec compiler
#: makes one for echo-shaped specs): one call per read instead of one per record.
INPUT_BATCH = "<input batch>"
#: Bytes arrived for a pull filter: cut and handle its records (see _pull).
_PULL = "<pull>"
_LIFECYCLE_EVENTS = frozenset(EVENTS)
# deliver_records calls the input handler directly in ``reading``: only right if
# that is what the table says.
if FAST[READING][INPUT] is not STAY:  # pragma: no cover
    raise AssertionError("lifecycle changed: revisit Connection.deliver_records")


class Connection(Output, Timeouts, Working, asyncio.Protocol):
    """One client connection: a session, its heap, and its client handle.

    Handlers get the connection itself as their first argument. Besides the
    :class:`~.kernel.Session` attributes (``id``, ``state``, ``heap``, ``kernel``)
    it is the client handle of POE's ``$heap->{client}``: :meth:`put`,
    :meth:`close`, :meth:`switch_filter`, :attr:`remote_ip`, :attr:`remote_port`.
    ``session.client`` is the same object, for code that reads better that way.

    Attributes:
        protocol_state: the spec's protocol state (a phase of ``reading``), or None
            when the server declares none. The lifecycle state is :attr:`state`.

    Its fields are declared in :class:`~.base.ConnectionBase`; the write side,
    the timeouts and chunked work are its bases :class:`~.output.Output`,
    :class:`~.timeouts.Timeouts` and :class:`~.working.Working`.
    """

    __slots__ = ()

    @property
    def client(self) -> Connection:
        """The client handle: this connection (POE's ``$heap->{client}``)."""
        return self

    # -- what handlers call -------------------------------------------------------

    def close(self) -> None:
        """Close gracefully: replies already put are sent, further input is dropped.

        Inside this connection's own handler it takes effect at once (input behind
        it is not handled); from elsewhere it is queued behind the events already
        waiting, so those are handled first.
        """
        if self.kernel.current is self:
            self.deliver(CLOSE, ())
        else:
            self.kernel.enqueue(self, CLOSE, ())

    def pause_input(self) -> None:
        """Stop reading from the client (POE's ``pause_input``) until :meth:`resume_input`.

        Bytes already read are still handled; the client's further bytes wait in
        the kernel's socket buffers, and then in its own: TCP flow control.
        Timeouts still run: a paused client that stays silent may time out.
        """
        self.flow.pause(USER)

    def resume_input(self) -> None:
        """Read from the client again (unless something else still holds reading)."""
        self.flow.resume(USER)

    def hold(self, on_eof: Callable[[Connection], Any]) -> None:
        """Keep the connection open after the client's end of input until :meth:`release`.

        Normally the client's end of input (a half-close) closes the connection once
        the input before it is answered. A proxy answers with replies still to come
        from elsewhere: holding, the end of input calls ``on_eof(session)`` (pass the
        half-close on upstream, say) and waits for ``release()``; the idle timeout
        still applies, so a hold cannot keep a connection forever.
        """
        if self._holds is None:
            self._holds = []
        self._holds.append(on_eof)

    def release(self) -> None:
        """Drop one :meth:`hold`; once none is left, a held end of input takes effect."""
        if not self._holds:
            return
        self._holds.pop()
        if not self._holds and self._peer_eof and self.state is not CLOSED:
            self._holds = None
            self.kernel.enqueue(self, EOF, ())

    def switch_filter(self, new_filter: Filter) -> None:
        """Frame the following input with ``new_filter`` (POE's ``set_filter``).

        Bytes the old filter holds and has not made into records yet go to the new
        one (POE's ``get_pending``), so nothing is lost or read twice. Replies are
        encoded by the new filter from the next write on; those already put are
        written with the old one first.

        The switch is exact at any record when the filters cut records one at a
        time (``get_one_start``/``get_one``, as the spec's line and block filters
        do): the bytes after the record being handled reach the new filter. A batch
        filter such as :class:`~.filters.LineFilter` has already cut every record
        of a read, so with it the switch applies from the next read on.
        """
        old, self._filter = self._filter, new_filter
        encodes_as = getattr(old, "encodes_as", None)
        if (self.outbox or self._raw) and (
            encodes_as is None or encodes_as != getattr(new_filter, "encodes_as", None)
        ):
            # Replies already put were put for the old framing: written with it
            # now, unless the new filter encodes alike (a line filter and a block
            # filter whose replies are lines): then they wait for the tick's write.
            out, self.outbox = self.outbox, []
            if self._half >= 0:  # shutdown_output() came first: only what preceded it
                del out[self._half :]
                self._half = 0
            raw, self._raw = self._raw, b""
            if (out or raw) and self._transport_open() and not self._eof_sent:
                self.transport.write(raw + self._encode(old, out))  # type: ignore[union-attr]
        self._pull_mode = hasattr(new_filter, "get_one")
        self._accepts = getattr(new_filter, "records", None)
        adopt = getattr(new_filter, "adopt", None)
        if adopt is not None and adopt(old):
            # The spec's pull filters hand their buffer over as it is: a copy of
            # the rest at each switch made a read of N pipelined commands cost
            # time quadratic in N. Then as if the bytes had just arrived.
            self.data_received(b"")
            return
        pending = old.get_pending()
        if pending:
            # As if they had just arrived. With a pull filter the _PULL posted is a
            # no-op if a pull already under way takes them.
            self.data_received(pending)

    # -- the machine ----------------------------------------------------------------

    def deliver(self, event: Any, args: tuple[Any, ...]) -> Any:
        # The per-message path: one table lookup, identity tests, one call.
        if event is WATCH:
            self._check_timeouts()
            return None
        if event is _PULL:
            self._pull(first=False)
            return None
        rules = FAST[self.state]
        if event is EOF and self._holds and rules.get(EOF) is not POSTPONE:
            # Held (see hold()); while working it waits in order like input, so what
            # came before it is handled (and sent on) first.
            for on_eof in list(self._holds):
                on_eof(self)
            return None
        step = rules.get(event)
        if step is None:
            if event.__class__ is not str:
                # Bookkeeping queued by a timer, a job or a child (a wake-up, a
                # work timeout, an output line): it runs in any state, even after
                # the close, to free what it holds; what it sends put() drops.
                return event(*args)
            if event not in _LIFECYCLE_EVENTS:
                # One of the application's own events: the table's rule for those.
                step = rules.get(NAMED)
        if step is not STAY:
            if step is None:
                if self.kernel.trace:
                    log.debug(
                        "session %d: %s ignored in %s", self.id, event, self.state,
                        extra={"session": self.id, "state": self.protocol_state or self.state},
                    )  # fmt: skip
                return None
            if step is POSTPONE:
                self._postpone(event, args)
                return None
            self._enter(step, event)
        elif self.kernel.trace:
            log.debug(
                "session %d: %s in %s", self.id, event, self.state,
                extra={"session": self.id, "state": self.protocol_state or self.state},
            )  # fmt: skip
        # ``handler_table`` is the server's dispatch(): built-in actions and user handlers.
        action = self.handler_table.get(event)
        result = None if action is None else action(self, *args)
        if self._postponed and self.state is READING:
            self._replay()
        return result

    def deliver_records(self, records: list[Any]) -> None:
        # The records of one read travel as one queue entry: they would sit side by
        # side in the queue anyway, so dispatching them here, in order, as one
        # ``input`` event each, is the same schedule without the queue's per-entry
        # cost. While the session stays in ``reading`` with nothing postponed, the
        # table's rule for input is "handle, stay" (checked at import), so the handler
        # is called directly; otherwise each record goes through the table.
        kernel = self.kernel
        kernel.dispatched += len(records) - 1
        if self.state is READING and not self._postponed and not kernel.trace:
            batch = self.handler_table.get(INPUT_BATCH)  # never without INPUT's
            if batch is not None:
                failed = batch(self, records)
                if failed is None:
                    return
                # As the loop below does for a record whose handler raised; the
                # records after it go through the loop (the error may close us).
                handled, exc = failed
                kernel.handler_failed(self, INPUT, exc)
                records = records[handled + 1 :]
        handler = self.handler_table.get(INPUT)
        direct = handler is not None and not kernel.trace
        for record in records:
            if direct and self.state is READING and not self._postponed:
                try:
                    handler(self, record)  # type: ignore[misc]  # not None: see direct
                except Exception as exc:
                    self.kernel.handler_failed(self, INPUT, exc)
            else:
                try:
                    self.deliver(INPUT, (record,))
                except Exception as exc:
                    self.kernel.handler_failed(self, INPUT, exc)

    def _postpone(self, event: str, args: tuple[Any, ...], first: bool = False) -> None:
        self.server.counts["postponed"] += 1
        if self._postponed is None:
            self._postponed = deque()
        if first:
            self._postponed.appendleft((event, args))
        else:
            self._postponed.append((event, args))
        count, limit = len(self._postponed), self.server.limits.max_postponed
        if count >= limit:
            self.flow.pause(POSTPONED)  # bounded; reading goes on when they are handled
            if count >= limit * _POSTPONED_HARD:
                # Paused reading bounds the client's own input; events other
                # sessions post (a broadcast to a member that never reads) are
                # not: past this many the connection goes, as past max_output.
                self._too_many_postponed(count)

    def _too_many_postponed(self, count: int) -> None:
        self.server.counts["overflows"] += 1
        log.warning(
            "session %d: %d events waiting (over %d x max_postponed); aborting",
            self.id, count, _POSTPONED_HARD,
            extra={"session": self.id, "state": self.protocol_state or self.state},
        )  # fmt: skip
        self.abort()
        step = FAST[self.state].get(OVERFLOW)
        if step is not None and step is not STAY:
            self._enter(step, OVERFLOW)

    def postpone_first(self, events: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Queue ``events``, in order, ahead of everything postponed: handled as
        soon as the session is back in ``reading``, before any further input
        (the spec's ``raise``, gen_statem's ``next_event``, while working)."""
        if self.state in (CLOSING, CLOSED):
            return
        if self._postponed is None:
            self._postponed = deque()
        self._postponed.extendleft(reversed(events))

    def _pull(self, first: bool) -> None:
        # Pull framing (filters with get_one): records are cut one at a time, as
        # they are handled, so a handler can switch the filter and the bytes after
        # its record reach the new one (POE::Wheel::ReadWrite's get_one loop).
        # When the state stops taking input, the cutting stops too and resumes from
        # the postponed queue: in front of it (``first``) if this pull was already
        # under way, since everything queued there arrived after these bytes.
        while self._pull_mode:  # a handler may have switched to a batch filter
            state = self.state
            if state is not READING:
                if FAST[state].get(INPUT) is POSTPONE:
                    self._postpone(_PULL, (), first)
                return  # otherwise input is dropped here (closing) as in the table
            try:
                records = self._filter.get_one()  # type: ignore[attr-defined]
            except ProtocolError as exc:
                self._linger = True
                self.flow.pause(DISCARD)
                self.deliver(ERROR, (exc, INPUT))
                return
            if not records:
                return
            first = True
            # Called directly, as in deliver_records (the table says "handle,
            # stay" for input in reading): through deliver(), a nested replay of
            # the postponed queue could run events that came after these bytes.
            handler = self.handler_table.get(INPUT)
            if handler is None:
                continue
            try:
                handler(self, records[0])
            except Exception as exc:
                self.kernel.handler_failed(self, INPUT, exc)

    def expect_block(self, size: int, end: bytes = b"") -> bool:
        """Have the filter cut the next record as a block of ``size`` bytes and
        ``end``, then go on as before, if it can (the spec's pull line filter
        can): cheaper than two :meth:`switch_filter` calls.

        Returns:
            Whether the filter took it (False: switch filters instead).
        """
        expect = getattr(self._filter, "expect_block", None)
        if expect is None:
            return False
        expect(size, end)
        return True

    @classmethod
    def dispatch(cls, handlers: dict[str, Any]) -> dict[str, Any]:
        """The event-to-callable map that connections with these user handlers use:
        the user's handlers, with the built-in actions in front of them (those call
        the user's ``error`` and ``closed`` handlers themselves)."""
        return {**handlers, **{event: getattr(cls, name) for event, name in cls.ACTIONS.items()}}

    def _enter(self, dest: str, event: str) -> None:
        old = self.state
        self.state = dest
        if self.kernel.trace:
            log.info(
                "session %d: %s --%s--> %s", self.id, old, event, dest,
                extra={"session": self.id, "state": dest},
            )  # fmt: skip
        if dest is CLOSING:
            # Nothing more is handled; input is read and dropped; what was put is
            # flushed, then the socket closed. After a framing error the client may
            # still be sending, so only the output side is shut (FIN) and we linger
            # until the client closes too. All within drain_timeout: a client that
            # does not read, or does not close, cannot hold the socket.
            self._postponed = None
            self.flow.discard()
            self._rewatch(self.server.limits.drain_timeout)
            if not self.dirty:
                self.kernel.mark_dirty(self)
        elif dest is CLOSED:
            self._postponed = None
            self.outbox = []
            self._close_job()
            if self._children:
                for child in list(self._children):
                    child.kill()  # their exit events still come, and free them
            self._watch = 0  # cancelled with the other timers just below
            if self.timer_ids:
                for tid in list(self.timer_ids):
                    self.kernel.cancel(tid)

    def _replay(self) -> None:
        # Postponed events go first, in order, for as long as the session stays in
        # ``reading``; if one of them starts work again the rest wait once more.
        queue = self._postponed
        while queue and self.state is READING:
            event, args = queue.popleft()
            try:
                self.deliver(event, args)
            except Exception as exc:
                self.kernel.handler_failed(self, event, exc)
        if not queue or len(queue) < self.server.limits.max_postponed:
            self.flow.resume(POSTPONED)

    def handle_error(self, event: str, exc: BaseException) -> None:
        if self.state is CLOSED:
            log.error(
                "session %d (closed): handler for %r raised %s: %s",
                self.id, event, type(exc).__name__, exc, exc_info=exc,
                extra={"session": self.id, "state": self.protocol_state or self.state,
                       "heap": self.heap},
            )  # fmt: skip
            return
        try:
            self.deliver(ERROR, (exc, event))
        except Exception as again:
            log.error(
                "session %d: error handler raised %r", self.id, again, exc_info=again,
                extra={"session": self.id, "state": self.protocol_state or self.state,
                       "heap": self.heap},
            )  # fmt: skip

    def adopt(self, child: Child) -> None:
        if self._children is None:
            self._children = set()
        self._children.add(child)

    def orphan(self, child: Child) -> None:
        if self._children is not None:
            self._children.discard(child)

    def on_stopped(self) -> None:
        pass  # a freed connection stays ``closed``; on_disconnected already ran

    def abort(self) -> None:
        if self._budget is not None:
            self._budget.forget(self)  # its buffers go with the transport
        if self.transport is not None:
            self.transport.abort()

    def begin_shutdown(self) -> None:
        # Graceful: queued behind the input already received, so it is answered.
        # A job would hold that input back until it ends: cancel it (its on_error
        # hears Cancelled and may tell the client) so the drain can finish.
        if self._job is not None and self.state is WORKING:
            self.kernel.deliver_now(self, self._job.cancel, (Cancelled("server shutting down"),))
        self.kernel.enqueue(self, CLOSE, ())

    # -- built-in actions (events that do more than call the user's handler) ----------

    def _on_error(self, exc: BaseException, event: str = "?") -> None:
        protocol = isinstance(exc, ProtocolError)
        self.server.counts["protocol_errors" if protocol else "handler_errors"] += 1
        handler = self.server.handlers.get(ERROR)
        if handler is not None:
            handler(self, exc)
        elif protocol:
            log.warning(
                "session %d: %s; closing", self.id, exc,
                extra={"session": self.id, "state": self.protocol_state or self.state},
            )  # fmt: skip
        else:
            log.error(
                "session %d (state %s, event %r): handler raised %s: %s; closing",
                self.id, self.state, event, type(exc).__name__, exc, exc_info=exc,
                extra={"session": self.id, "state": self.protocol_state or self.state,
                       "heap": self.heap},
            )  # fmt: skip

    def _on_connected(self) -> None:
        self._arm_timeouts()
        handler = self.server.handlers.get(CONNECTED)
        if handler is not None:
            handler(self)

    def _on_closed(self) -> None:
        self.server.released(self)
        handler = self.server.handlers.get(CLOSED_EVENT)
        try:
            if handler is not None:
                handler(self)
        finally:
            self.refcount -= 1  # the socket's reference: the tick frees the session

    # -- reading flow control ---------------------------------------------------------

    def _transport_open(self) -> bool:
        return self.flow.open()

    # -- asyncio.Protocol: socket happenings become queued events -----------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = self.flow.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.remote_ip, self.remote_port = peer[0], peer[1]
        if transport.get_extra_info("ssl_object") is not None:
            # TLS hands each write, encrypted, to the socket transport below it
            # until that one pauses, and get_write_buffer_size() counts only what
            # TLS still holds: a tick's replies to a client that does not read
            # would pass max_output unseen. asyncio's TLS transport lets us see
            # the one below (a private attribute); where none can be seen
            # (uvloop's), one tick's replies are capped at max_output instead.
            below = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
            self._below = below if hasattr(below, "get_write_buffer_size") else True
        self.server.arrived(self)

    def admit(self) -> None:
        self.flow.resume(PARKED)
        self.kernel.enqueue(self, CONNECTED, ())

    def park(self) -> None:
        self.flow.pause(PARKED)

    def data_received(self, data: bytes) -> None:
        if self.flow.reasons & DISCARD:
            return
        kernel = self.kernel
        self._seen = kernel.read_clock()
        self._heard = True
        if self._pull_mode:
            # Cut when handled (see _pull). Bounded: every read is followed by a
            # pull, which enforces the filter's record limit, or is postponed and
            # counts towards max_postponed.
            self._filter.get_one_start(data)  # type: ignore[attr-defined]
            kernel.enqueue(self, _PULL, ())
            return
        try:
            records = self._filter.get(data)
        except ProtocolError as exc:
            self._bad_input(exc)
            return
        if records:
            # One queue entry for the read, a callable: the kernel calls it as it
            # comes, in any state (see deliver_records), without deliver().
            kernel.enqueue(self, _records, (self, records))

    def _bad_input(self, exc: ProtocolError) -> None:
        # RecordTooLong included: the records before the bad one are handled, then
        # the error event; nothing after it is read.
        self._linger = True
        self.flow.pause(DISCARD)
        if exc.records:
            self.kernel.enqueue(self, _records, (self, exc.records))
        self.kernel.enqueue(self, ERROR, (exc, INPUT))

    def eof_received(self) -> bool:
        self._peer_eof = True
        # Keep the socket open for the replies still to come; but TLS in asyncio
        # cannot half-close: it closes after the peer's close_notify whatever we
        # return, and logs a warning if we ask to keep it open.
        keep_open = self.transport is None or self.transport.can_write_eof()
        if self.state is CLOSING and self._eof_sent and self.transport is not None:
            self.transport.close()  # the lingering close is over: both sides are done
            return keep_open
        self.kernel.enqueue(self, EOF, ())
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        if self._budget is not None:
            self._budget.forget(self)
        self.kernel.enqueue(self, CLOSED_EVENT, ())

    def pause_writing(self) -> None:
        self.flow.pause(BACKLOG)
        if self._job is not None:
            self._job.hold(HELD_BACKLOG)  # no more output from it until the client reads
        if self._children:
            for child in self._children:
                child.pause_output(True)
        self.kernel.enqueue(self, OUTPUT_HIGH, ())

    def resume_writing(self) -> None:
        self.flow.resume(BACKLOG)
        if self._budget is not None:
            self._budget.forget(self)  # keeping up again: under low_water, not counted
        if self._job is not None:
            self._job.release(HELD_BACKLOG)
        if self._children:
            for child in self._children:
                child.pause_output(False)
        self.kernel.enqueue(self, OUTPUT_LOW, ())
        if self._flush_wanted:
            self._poll_flushed()

    #: Events whose effect is built in; the rest just call the user's handler.
    #: (By method name: some live in the base classes, Timeouts and Working.)
    ACTIONS: ClassVar[dict[str, str]] = {
        CONNECTED: "_on_connected",
        TIMEOUT: "_on_timeout",
        ERROR: "_on_error",
        CLOSED_EVENT: "_on_closed",
        WORK: "_on_work",
        DONE: "_on_done",
        WORK_FAILED: "_on_work_failed",
    }


# The queue entry of a read: ``(connection, _records, (connection, records))``.
_records = Connection.deliver_records
