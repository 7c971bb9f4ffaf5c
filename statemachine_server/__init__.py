"""statemachine-server: multi-client network servers as explicit state machines.

One process, one kernel dispatching queued events, one session (with its own heap)
per connection, each connection's lifecycle a finite-state machine. The public API
is exactly ``__all__``; everything else may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from .limits import Limits
from .net.client import Backoff, TCPClient
from .net.connection import Connection
from .net.server import ServerStatistics, TCPServer
from .net.tls import server_ssl_context
from .testing import VirtualClock

if TYPE_CHECKING:
    from .language import build_server, goto, load_spec, load_spec_text, raise_event

__version__ = "0.1.0"

compat.install()

# The spec language, imported when first used: a program on the Python API alone
# does not pay for it (about half of the package's import time).
_LANGUAGE = frozenset({"build_server", "goto", "load_spec", "load_spec_text", "raise_event"})


def __getattr__(name: str) -> Any:
    if name in _LANGUAGE:
        value = getattr(importlib.import_module(".language", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
