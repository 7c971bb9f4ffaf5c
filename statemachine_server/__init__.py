"""statemachine-server: multi-client network servers as explicit state machines.

One process, one kernel dispatching queued events, one session (with its own heap)
per connection, each connection's lifecycle a finite-state machine. The public API
is exactly ``__all__``; everything else may change.
"""

from __future__ import annotations

from . import compat
from .console import ConsoleLog
from .core.kernel import Kernel, KernelStatistics, Session
from .errors import (
    LimitReached,
    ProtocolError,
    RecordTooLong,
    SpecError,
    StateMachineServerError,
)
from .filters import (
    BlockFilter,
    Filter,
    InvalidRecord,
    JSONFilter,
    LineFilter,
    MsgPackFilter,
    Stack,
    StreamFilter,
)
from .language import build_server, goto, load_spec, load_spec_text, raise_event
from .limits import Limits
from .net.client import Backoff, TCPClient
from .net.connection import Connection
from .net.server import ServerStatistics, TCPServer
from .net.tls import server_ssl_context
from .testing import VirtualClock

__version__ = "0.1.0"

compat.install()

__all__ = [
    "Backoff",
    "BlockFilter",
    "Connection",
    "ConsoleLog",
    "Filter",
    "InvalidRecord",
    "JSONFilter",
    "Kernel",
    "KernelStatistics",
    "LimitReached",
    "Limits",
    "LineFilter",
    "MsgPackFilter",
    "ProtocolError",
    "RecordTooLong",
    "ServerStatistics",
    "Session",
    "SpecError",
    "Stack",
    "StateMachineServerError",
    "StreamFilter",
    "TCPClient",
    "TCPServer",
    "VirtualClock",
    "__version__",
    "build_server",
    "goto",
    "load_spec",
    "load_spec_text",
    "raise_event",
    "server_ssl_context",
]
