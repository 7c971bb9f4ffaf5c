"""The error hierarchy, small on purpose.

Three kinds of failure cross layer boundaries, and each is handled differently:

* :class:`SpecError`: the spec file (or the arguments) are wrong. Reported as one
  ``FILE:LINE:COLUMN: message`` line per error, all of them at once, before any
  port opens; the process exits 2 (1 when it is ``server.tls``'s files that do
  not load as ``run`` starts: the spec was valid, the server failed).
* :class:`ProtocolError`: the peer sent something we will not accept (a line over
  the limit, say). It ends that one connection and nothing else.
* anything else raised from a handler is the handler's bug. It becomes that
  session's ``error`` event; the kernel and every other session go on.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LimitReached", "ProtocolError", "RecordTooLong", "SpecError", "StateMachineServerError",
]  # fmt: skip


class StateMachineServerError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(StateMachineServerError):
    """A spec (or a setting) is invalid.

    Attributes:
        file: the spec's path, or ``"<builtin>"``/``"<string>"``.
        line: 1-based line of the offending node, or 0 when unknown.
        column: 1-based column of the offending node, or 0 when unknown.
        message: what is wrong and what was expected.
    """

    def __init__(self, message: str, file: str = "<string>", line: int = 0, column: int = 0):
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        #: Every error found in the spec, in file order: this one alone, unless
        #: raised by :meth:`several`.
        self.errors: list[SpecError] = [self]
        super().__init__(self.where_and_what())

    @classmethod
    def several(cls, errors: list[SpecError]) -> SpecError:
        """One exception for all the errors found at once; ``str()`` gives one line each."""
        ordered = sorted(errors, key=lambda e: (e.file, e.line, e.column))
        first = ordered[0]
        first.errors = ordered
        return first

    def where_and_what(self) -> str:
        """This error alone, as ``FILE:LINE:COLUMN: message``."""
        if self.line:
            return f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{self.file}: {self.message}"

    def __str__(self) -> str:
        return "\n".join(e.where_and_what() for e in self.errors)


class ProtocolError(StateMachineServerError):
    """The peer broke the framing or a limit; only its own connection is closed.

    Attributes:
        records: the complete records that arrived before the error, in order, so
            that what the client sent correctly is still answered.
    """

    def __init__(self, message: str, records: list[Any] | None = None):
        super().__init__(message)
        self.records: list[Any] = records if records is not None else []


class RecordTooLong(ProtocolError):
    """A record grew past the filter's maximum size (``records`` as above)."""


class LimitReached(StateMachineServerError):
    """Starting something would pass a server's limit (``max_children``, say)."""
