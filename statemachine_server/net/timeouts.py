"""A connection's timeouts: first byte, idle, and the drain of a close.

One kernel timer per connection, re-armed lazily: a read only records its time
(``_seen``, in :meth:`~.connection.Connection.data_received`), and the timer,
when it fires, works out whether a timeout really happened. The limits are in
:class:`~statemachine_server.limits.Limits`; a timeout is the lifecycle's
``timeout`` event, which closes the connection.

A base class of :class:`~.connection.Connection`, kept apart as one concern.
"""

from __future__ import annotations

import logging

from ..core.lifecycle import CLOSED, CLOSING, TIMEOUT, WORKING
from .base import ConnectionBase

__all__ = ["WATCH", "Timeouts"]

log = logging.getLogger("statemachine_server")

#: The connection's timeout timer fired (see Timeouts._check_timeouts).
WATCH = "<watch>"


class Timeouts(ConnectionBase):
    """First-byte, idle and drain timeouts (a base of ``Connection``)."""

    __slots__ = ()

    def _arm_timeouts(self) -> None:
        # Admitted: the first-byte and idle clocks start now.
        self._seen = self.kernel.time()
        limits = self.server.limits
        timeouts = [t for t in (limits.first_byte_timeout, limits.idle_timeout) if t is not None]
        if timeouts:
            self._rewatch(min(timeouts))

    def _on_timeout(self, reason: str) -> None:
        self.server.counts["timeouts"] += 1
        log.info(
            "session %d: %s; closing", self.id, reason,
            extra={"session": self.id, "state": self.protocol_state or self.state},
        )  # fmt: skip
        handler = self.server.handlers.get(TIMEOUT)
        if handler is not None:
            handler(self, reason)

    def _rewatch(self, delay: float) -> None:
        # One timer per connection, re-armed lazily: input only records its time,
        # and the timer, when it fires, works out whether a timeout really happened.
        kernel = self.kernel
        if self._watch:
            kernel.cancel(self._watch)
        # kernel.delay(delay, WATCH, session=self) without its two calls: one per
        # connection at least, and the churn scenario is made of connections.
        self._watch = kernel.add_timer(kernel.time() + delay, self, WATCH)

    def _check_timeouts(self) -> None:
        if self.kernel.timer_due(self._watch) is not None:
            # Stale: this check was queued by a timer that fired just before the
            # timer was re-armed (e.g. for the drain deadline) in the same tick.
            # The timer now pending makes the real check when it fires.
            return
        self._watch = 0
        state = self.state
        if state is CLOSED:
            return
        limits = self.server.limits
        if state is CLOSING:
            # The replies did not leave within drain_timeout: the client is not
            # reading. Cut it off rather than hold the socket forever.
            self.server.counts["aborted"] += 1
            log.warning(
                "session %d: close not finished in %.1f s; aborting", self.id,
                limits.drain_timeout,
                extra={"session": self.id, "state": self.protocol_state or self.state},
            )  # fmt: skip
            self.abort()
            return
        now = self.kernel.time()
        if self._heard or limits.first_byte_timeout is None:
            timeout, reason = limits.idle_timeout, "idle for {:g} s"
        else:
            timeout, reason = limits.first_byte_timeout, "no data within {:g} s"
        if timeout is None:
            return
        left = self._seen + timeout - now
        if state is WORKING or left > 0:
            # Never sleep past one idle period: bytes arriving meanwhile would
            # set an idle deadline earlier than the one we are waiting for.
            wait = timeout if state is WORKING else max(left, 0.001)
            if limits.idle_timeout is not None:
                wait = min(wait, limits.idle_timeout)
            self._rewatch(wait)
            return
        self.deliver(TIMEOUT, (reason.format(timeout),))
