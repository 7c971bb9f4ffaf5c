"""What a server's metrics say, in Prometheus's text format: read when scraped.

Sans-I/O: :func:`collect` reads counters the kernel, the server and the spec's
runtime keep anyway (their ``statistics()``, the sessions' states, the gotos
counted by :meth:`~..language.runtime.Runtime.counted_goto`), and
:func:`exposition` writes them out. Nothing is computed per message for metrics:
a scrape walks the sessions once, so its cost grows with the connections (about
a few milliseconds per 10,000: it asks each socket for its bytes, see
:mod:`..net.metered`), and serving clients costs what it costs without them, but
for the gotos counted.

The names follow Prometheus's conventions: a ``statemachine_server_`` prefix,
counters ending in ``_total``, sizes in bytes, times in seconds; the live state
histogram is ``statemachine_server_protocol_connections{state=...}``, one
sample per state of the spec, zero included, so that a state nobody is in still
shows.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.kernel import Kernel
from ..core.lifecycle import STATES
from ..net.metered import socket_bytes
from ..net.server import TCPServer

__all__ = ["CONTENT_TYPE", "PREFIX", "SIMPLE", "Family", "Source", "collect", "exposition"]

PREFIX = "statemachine_server_"
#: The text format's media type (version 0.0.4, which every scraper reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric: its name (without the prefix or ``_total``), kind, help and samples."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((tuple(labels.items()), value))
        return self


def _escape(value: str) -> str:
    # The text format's label value escapes: backslash, double quote, newline.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def exposition(families: Iterable[Family]) -> str:
    """``families`` in the text format (``# HELP``, ``# TYPE``, one line a sample)."""
    lines: list[str] = []
    for family in families:
        name = PREFIX + family.name + ("_total" if family.kind == "counter" else "")
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {family.kind}"]
        for labels, value in family.samples:
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            labelled = f"{name}{{{text}}}" if text else name
            lines.append(f"{labelled} {_number(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class Source:
    """What one served spec's metrics are read from."""

    kernel: Kernel
    server: TCPServer
    #: The spec's runtime: its protocol states and counted gotos (None: a server
    #: made with the Python API, which has no spec).
    runtime: Any = None
    name: str = "server"
    version: str = ""
    started: float = field(default_factory=time.time)


def collect(source: Source) -> list[Family]:
    """Every family, read now."""
    kernel, server, rt = source.kernel, source.server, source.runtime
    ks, ss, counts = kernel.statistics(), server.statistics(), server.counts
    lifecycle: Counter[str] = Counter()
    protocol: Counter[str] = Counter()
    received, sent = counts["bytes_in"], counts["bytes_out"]  # of connections gone
    for session in kernel.sessions():
        if getattr(session, "server", None) is server:
            lifecycle[session.state] += 1
            more_in, more_out = socket_bytes(getattr(session, "transport", None))
            received += more_in
            sent += more_out
            state = getattr(session, "protocol_state", None)
            if state is not None:
                protocol[state] += 1

    info = Family("info", "gauge", "The server's name and the package's version (always 1).")
    families = [info.add(1, server=source.name, version=source.version)]
    by_state = Family("connections", "gauge", "Connections by lifecycle state.")
    for state in STATES:
        by_state.add(lifecycle.get(state, 0), state=state)
    families.append(by_state)
    if rt is not None and rt.enter:
        live = Family("protocol_connections", "gauge", _LIVE)
        for state in sorted(rt.states()):
            live.add(protocol.get(state, 0), state=state)
        moves = Family("transitions", "counter", _MOVES)
        for (old, new, event), count in sorted(rt.transitions().items(), key=str):
            moves.add(count, **{"from": old or "", "to": new, "event": event})
        families += [live, moves]
    values = {
        "start_time_seconds": source.started,
        "serving": 0 if kernel.shutting_down else 1,
        "connections_pending": ss.pending,
        "tls_handshakes": ss.handshakes,
        "held_output_bytes": ss.held_output,
        "connections_accepted": ss.accepted,
        "connections_refused": ss.refused,
        "handler_errors": ss.handler_errors,
        "protocol_errors": ss.protocol_errors,
        "timeouts": ss.timeouts,
        "overflows": ss.overflows,
        "aborted": ss.aborted,
        "received_bytes": received,
        "sent_bytes": sent,
        "events_postponed": counts["postponed"],
        "events_handled": ks.events_dispatched,
        "ticks": ks.ticks,
        "stalls": ks.stalls,
        "sessions": ks.sessions,
        "queue_depth": ks.queue_depth,
        "timers": ks.timers_pending,
        "jobs": ks.jobs,
        "pool_calls": ks.pool_calls,
        "pool_waiting": ks.pool_waiting,
        "child_processes": kernel.children.get(server, 0),
    }
    for name, (kind, help_text) in SIMPLE.items():
        families.append(Family(name, kind, help_text).add(values[name]))
    bus = getattr(rt, "bus", None)
    if bus is not None:  # server.bus: the Redis bus's own counters
        bs = bus.statistics()
        for name, (kind, help_text) in BUS.items():
            families.append(Family(name, kind, help_text).add(int(getattr(bs, name[4:]))))
    return families


_LIVE = "Connections by the spec's protocol state (the live state histogram)."
_MOVES = "Protocol state changes (goto) by from state, to state and event."

#: The families of one sample each: name -> (kind, help).
SIMPLE: dict[str, tuple[str, str]] = {
    "start_time_seconds": ("gauge", "When the server started, in Unix time."),
    "serving": ("gauge", "1 while serving; 0 once a graceful shutdown has begun (draining)."),
    "connections_pending": ("gauge", "Clients parked, waiting for a slot."),
    "tls_handshakes": ("gauge", "TLS handshakes in progress."),
    "held_output_bytes": ("gauge", "Bytes of replies held for clients not keeping up."),
    "connections_accepted": ("counter", "Clients accepted."),
    "connections_refused": ("counter", "Clients closed at once: too many were waiting."),
    "handler_errors": ("counter", "Connections closed because a handler raised."),
    "protocol_errors": ("counter", "Connections closed because the client broke the framing."),
    "timeouts": ("counter", "Connections closed by the first-byte or idle timeout."),
    "overflows": ("counter", "Connections aborted for not reading their replies."),
    "aborted": ("counter", "Connections whose close did not finish in time."),
    "received_bytes": ("counter", "TCP payload bytes received from clients (TLS included)."),
    "sent_bytes": ("counter", "TCP payload bytes sent to clients and acknowledged by them."),
    "events_postponed": ("counter", "Events postponed until their session reads again."),
    "events_handled": ("counter", "Events dispatched by the kernel."),
    "ticks": ("counter", "Kernel ticks (one batch of queued events each)."),
    "stalls": ("counter", "Times a handler, call or work step held the loop too long."),
    "sessions": ("gauge", "Kernel sessions (connections, servers, clients)."),
    "queue_depth": ("gauge", "Events queued in the kernel now."),
    "timers": ("gauge", "Timers pending."),
    "jobs": ("gauge", "Chunked-work jobs alive."),
    "pool_calls": ("gauge", "Calls running in the thread and process pools."),
    "pool_waiting": ("gauge", "Calls waiting for a pool slot."),
    "child_processes": ("gauge", "Child processes the server's sessions run."),
}

#: The Redis bus's families (``server.bus``): name -> (kind, help).
BUS: dict[str, tuple[str, str]] = {
    "bus_connected": ("gauge", "1 while the bus's subscription to Redis is up."),
    "bus_publishing": ("gauge", "1 while publishing to Redis goes on."),
    "bus_published": ("counter", "Messages Redis accepted from this process."),
    "bus_received": ("counter", "Messages from other processes delivered here."),
    "bus_dropped": ("counter", "Messages not published: Redis unreachable or the queue full."),
    "bus_reconnects": ("counter", "Times the subscription came back after it was lost."),
    "bus_queued": ("gauge", "Messages waiting to be published."),
    "bus_groups": ("gauge", "Groups subscribed to (with members in this process)."),
}
