"""statemachine-server: multi-client network servers as explicit state machines.

One process, one kernel dispatching queued events, one session (with its own heap)
per connection, each connection's lifecycle a finite-state machine. The public API
is exactly ``__all__``; everything else may change.
"""

from __future__ import annotations

from .connection import Connection
from .errors import (
    LimitReached,
    ProtocolError,
    RecordTooLong,
    SpecError,
    StateMachineServerError,
)  # fmt: skip
from .filters import Filter, LineFilter
from .kernel import Kernel, KernelStatistics, Session
from .limits import Limits
from .net.tcp import ServerStatistics, TCPServer

__version__ = "0.1.0"

__all__ = [
    "Connection",
    "Filter",
    "Kernel",
    "KernelStatistics",
    "LimitReached",
    "Limits",
    "LineFilter",
    "ProtocolError",
    "RecordTooLong",
    "ServerStatistics",
    "Session",
    "SpecError",
    "StateMachineServerError",
    "TCPServer",
    "__version__",
]
