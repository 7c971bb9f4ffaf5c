"""The spec's typed model: msgspec Structs, validated once, at the edge.

A spec in YAML::

    version: 1
    server:
      name: echo
      port: 12345
      filter: {type: line, max_length: 65536}
    handlers:
      input:
        - reply: "{input}"
        - log: "client {session.id}: {input}"

Every Struct forbids unknown fields and is frozen. An action is written in YAML as
a one-key mapping (``reply: TEXT``); the loader rewrites it to the tagged form
(``{action: reply, text: TEXT}``) that these Structs decode, so the YAML stays
short and the model stays a plain msgspec tagged union.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from ..filters.line import DEFAULT_MAX_LINE
from ..limits import Limits

__all__ = [
    "ACTION_MAIN_FIELD",
    "Action",
    "Handlers",
    "LineFilterSettings",
    "Log",
    "Reply",
    "ServerSettings",
    "Spec",
]

Port = Annotated[int, Meta(ge=0, le=65535)]
# 1 GiB: a line filter may be told to accept large records, not unbounded ones.
LineLimit = Annotated[int, Meta(ge=1, le=1 << 30)]


class _Strict(Struct, forbid_unknown_fields=True, frozen=True):
    pass


class LineFilterSettings(_Strict, tag="line", tag_field="type", frozen=True):
    """Newline-delimited UTF-8 text (``\\n`` or ``\\r\\n``)."""

    max_length: LineLimit = DEFAULT_MAX_LINE


FilterSettings = LineFilterSettings


class LogSettings(_Strict, frozen=True):
    """What ``log`` actions may write: client input is untrusted and may be private."""

    #: False turns every ``log`` action off (no client data in the console at all).
    enabled: bool = True
    #: Longer log lines are cut to this many characters and marked with "...".
    max_length: Annotated[int, Meta(ge=16)] = 1024


class ServerSettings(_Strict, frozen=True):
    """Where and how to listen."""

    name: str = "server"
    host: str = "127.0.0.1"
    port: Port = 12345
    filter: FilterSettings = msgspec.field(default_factory=LineFilterSettings)
    limits: Limits = msgspec.field(default_factory=Limits)
    log: LogSettings = msgspec.field(default_factory=lambda: LogSettings())


class Reply(_Strict, tag="reply", tag_field="action", frozen=True):
    """Send the rendered template to this client, as one record."""

    text: str


class Log(_Strict, tag="log", tag_field="action", frozen=True):
    """Write the rendered template to the console (stdout), as one line."""

    text: str


Action = Reply | Log

#: For the short YAML form ``- reply: TEXT``: which field TEXT fills.
ACTION_MAIN_FIELD: dict[str, str] = {"reply": "text", "log": "text"}


class Handlers(_Strict, frozen=True):
    """What to do on each connection event: a list of actions, run in order."""

    connected: list[Action] = []
    input: list[Action] = []
    disconnected: list[Action] = []


class Spec(_Strict, frozen=True):
    """A whole server."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    handlers: Handlers = msgspec.field(default_factory=Handlers)
    version: Literal[1] = 1
