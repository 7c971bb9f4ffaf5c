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

and, with protocol states (phases of the connection's ``reading`` state)::

    initial: login
    states:
      login:
        enter: [reply: "Your nick?"]
        timeout: {after: 30, do: [reply: "Too slow.", close]}
        handlers:
          input:
            - match: '^(?P<nick>\\w+)$'
              do: [set: {nick: "{match.nick}"}, goto: chatting]
            - do: [reply: "Letters and digits only. Your nick?"]
      chatting: ...

Every Struct forbids unknown fields and is frozen. An action is written in YAML as
a one-key mapping (``reply: TEXT``) or, without arguments, a bare name
(``- close``); the loader rewrites it to the tagged form (``{action: reply,
text: TEXT}``) that these Structs decode, so the YAML stays short and the model
stays a plain msgspec tagged union. ``docs/spec-reference.md`` documents every
field here with its default, and a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from ..limits import Limits
from .model_filters import (
    BlockFilterSettings,
    BlockLimit,
    FilterSettings,
    JSONFilterSettings,
    LineFilterSettings,
    MsgPackFilterSettings,
    Schema,
    StreamFilterSettings,
)

__all__ = [
    "ACTIONS",
    "ACTION_MAIN_FIELD",
    "BUILTIN_EVENTS",
    "CLIENT_EVENTS",
    "Action",
    "Append",
    "BackoffSettings",
    "BlockFilterSettings",
    "Broadcast",
    "Call",
    "ClientSettings",
    "ClientTLS",
    "Close",
    "CollectionBound",
    "FilterSettings",
    "Foreach",
    "Goto",
    "HandlerList",
    "If",
    "JSONFilterSettings",
    "Join",
    "Leave",
    "LineFilterSettings",
    "Log",
    "LogSettings",
    "MsgPackFilterSettings",
    "Post",
    "Raise",
    "Reply",
    "Rule",
    "Run",
    "Schema",
    "Send",
    "ServerSettings",
    "Set",
    "Spec",
    "State",
    "StateTimeout",
    "StreamFilterSettings",
    "SwitchFilter",
    "TLSSettings",
    "Unset",
    "Use",
    "Work",
    "Write",
]

Port = Annotated[int, Meta(ge=0, le=65535)]
# Names of events, states, groups' heap keys: identifiers, so that they can be
# written in templates ({heap.NAME}) and in diagrams without quoting.
Name = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Seconds = Annotated[float, Meta(gt=0, le=86400 * 366)]
# A file the spec names: relative to the spec file's folder.
FilePath = Annotated[str, Meta(min_length=1)]
#: ``HOST:PORT`` (``[::1]:9100`` for an IPv6 address; ``:9100``: 127.0.0.1).
Address = Annotated[str, Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$")]
#: A Redis server's URL, as redis-py reads it.
RedisURL = Annotated[str, Meta(pattern=r"^rediss?://[^\s]*$")]
#: A heap value by name: ``NAME`` (the session's) or ``server.NAME``.
HeapRef = Annotated[str, Meta(pattern=r"^(server\.)?[A-Za-z_][A-Za-z0-9_]*$")]
#: An initial value in a heap: text, a number, a boolean, null, or a list or map of them.
HeapValue = Any
#: What ``set`` and ``append`` store: an expression (text), a template (text with
#: ``{...}`` fields) or a YAML value (a number, boolean, null, list or map).
Value = Any


class _Strict(Struct, forbid_unknown_fields=True, frozen=True):
    """As :class:`~.model_filters.Strict` (declared here too, so that tools see
    every Struct of this module as one)."""


class LogSettings(_Strict, frozen=True):
    """What ``log`` actions may write: client input is untrusted and may be private."""

    #: False turns every ``log`` action off (no client data in the console at all).
    enabled: bool = True
    #: Longer log lines are cut to this many characters and marked with "...".
    max_length: Annotated[int, Meta(ge=16)] = 1024
    #: ``text``: the line as the template makes it; ``json``: one JSON object per
    #: line, the spec's lines and the server's diagnostics alike, with the time,
    #: the level, the session's id and state (``run --log-format``).
    format: Literal["text", "json"] = "text"
    #: Heap names (``NAME`` for the session's, ``server.NAME`` for the server's)
    #: whose values logs never show: ``[redacted]`` in their place (as
    #: gen_statem's ``format_status`` hides a process's secrets from its reports).
    redact: list[HeapRef] = msgspec.field(default_factory=list)


class TLSSettings(_Strict, frozen=True):
    """Serve TLS with a certificate from PEM files (paths relative to the spec's folder).

    There is no key password, on purpose: secrets do not belong in spec files,
    which are shared and committed. An encrypted key needs the Python API
    (``server_ssl_context(password=...)``)."""

    #: The server's certificate and its chain; it may hold the private key too.
    cert: FilePath
    #: The private key, if not in ``cert``.
    key: FilePath | None = None
    #: Authorities whose client certificates are required: given, a client without
    #: one they signed is refused.
    client_ca: FilePath | None = None


class ServerSettings(_Strict, frozen=True):
    """Where and how to listen."""

    #: Shown as ``{server.name}``.
    name: str = "server"
    #: The address to listen on: this machine only by default.
    host: str = "127.0.0.1"
    #: The port; 0 picks a free one.
    port: Port = 12345
    #: How bytes become records (lines).
    filter: FilterSettings = msgspec.field(default_factory=LineFilterSettings)
    #: Connection limits and timeouts (``docs/limits.md``).
    limits: Limits = msgspec.field(default_factory=Limits)
    #: What ``log`` actions may write.
    log: LogSettings = msgspec.field(default_factory=lambda: LogSettings())
    #: Initial values of the server-wide heap, shared by every session: ``{server.NAME}``.
    heap: dict[Name, HeapValue] = msgspec.field(default_factory=dict)
    #: Serve TLS; none: plain TCP.
    tls: TLSSettings | None = None
    #: Listen on this Unix domain socket instead of ``host`` and ``port`` (relative
    #: to the spec's folder).
    path: FilePath | None = None
    #: Carry groups, broadcasts and named events across processes and hosts on a
    #: Redis server (``redis://HOST:PORT/DB``, ``rediss://`` for TLS); none: they
    #: stay in this process (``run --bus``).
    bus: RedisURL | None = None
    #: Serve Prometheus metrics at ``http://HOST:PORT/metrics`` (and ``/healthz``);
    #: none: no metrics, and nothing counted for them (``run --metrics``).
    metrics: Address | None = None

    def __post_init__(self) -> None:
        if self.metrics is not None and int(self.metrics.rpartition(":")[2]) > 65535:
            raise ValueError(f"metrics {self.metrics!r}: the port is 0 to 65535")


# -- actions ------------------------------------------------------------------------


class Reply(_Strict, tag="reply", tag_field="action", frozen=True):
    """Send the rendered template to this client, as one record. With a ``json``
    or ``msgpack`` filter it may be a mapping or a list: its strings are templates,
    and a string that is one template name alone keeps that value's type."""

    text: str | dict[str, Any] | list[Any]


class Log(_Strict, tag="log", tag_field="action", frozen=True):
    """Write the rendered template to the console (stdout), as one line."""

    text: str


class Set(_Strict, tag="set", tag_field="action", frozen=True):
    """Store values: ``NAME`` in the session's heap, ``server.NAME`` in the
    server-wide heap, ``NAME[KEY]`` in a map or list there. A value is an
    expression; text with ``{...}`` fields is a template; a YAML number, boolean,
    null, list or map is itself. In order: each sees the ones before it."""

    values: dict[str, Value]


class Unset(_Strict, tag="unset", tag_field="action", frozen=True):
    """Remove heap values or entries: ``NAME``, ``server.NAME``, ``NAME[KEY]``
    (a map's key, a list's index); nothing happens if one is not there."""

    names: str | list[str]


class Append(_Strict, tag="append", tag_field="action", frozen=True):
    """Add a value at the end of a list in a heap (a new list if the name is unset):
    ``NAME``, ``server.NAME`` or ``NAME[KEY]`` to a value, as ``set`` takes them."""

    values: dict[str, Value]


class Write(_Strict, tag="write", tag_field="action", frozen=True):
    """Send the rendered template to this client as it is: no record ending
    added, in order with replies (a prompt, a body after its length, a frame)."""

    text: str


class Raise(_Strict, tag="raise", tag_field="action", frozen=True):
    """Raise a named event for this session, handled as soon as the current
    handler is done and before any further input (SCXML's ``<raise>``,
    gen_statem's ``next_event``): pipelined clients are answered in order."""

    event: Name
    #: A template: the event's ``input`` (one ``{...}`` field alone keeps its type).
    input: str = ""


class Use(_Strict, tag="use", tag_field="action", frozen=True):
    """Run a named list of actions from the top-level ``actions``, as if written
    here (XState's named actions): the same input, match groups and state."""

    name: Name


class If(_Strict, tag="if", tag_field="action", frozen=True):
    """Run ``then`` when the expression is true, ``else`` otherwise (SCXML's
    ``<if>``); written as a mapping with ``if`` and ``then``, like a rule."""

    #: An expression (a YAML ``true``/``false`` is one too).
    if_: str | bool = msgspec.field(name="if")
    then: list[Action] = []
    else_: list[Action] = msgspec.field(default_factory=list, name="else")


class Foreach(_Strict, tag="foreach", tag_field="action", frozen=True):
    """Run actions once for each item of a list (or key of a map), in order, with
    the item as ``NAME`` (SCXML's ``<foreach>``). The list is taken when the loop
    starts; it is bounded like every heap value, so the loop is too."""

    #: An expression giving the list or map.
    in_: str = msgspec.field(name="in")
    #: The name the item goes by in the actions.
    as_: Name = msgspec.field(default="item", name="as")
    do: list[Action] = []


class Goto(_Strict, tag="goto", tag_field="action", frozen=True):
    """Move to another protocol state: the old state's ``exit`` actions run, its
    timeout is cancelled, then the new state's ``enter`` actions run. A ``goto`` to
    the current state restarts it."""

    state: Name


class Close(_Strict, tag="close", tag_field="action", frozen=True):
    """Close gracefully: replies already sent go out first, further input is dropped."""


class Post(_Strict, tag="post", tag_field="action", frozen=True):
    """Queue a named event for this session (``{input}`` in its handler is ``input``)."""

    event: Name
    #: A template: what the event's handler sees as ``{input}``.
    input: str = ""
    #: Seconds to wait first (a kernel timer owned by the session); none: queue now.
    after: Seconds | None = None


class Broadcast(_Strict, tag="broadcast", tag_field="action", frozen=True):
    """Send the rendered template to every session in a group, or post a named
    event to each (which each handles with its own heap and state)."""

    #: A template: the group's name.
    group: str
    #: A template: the text sent (give ``text`` or ``event``).
    text: str | None = None
    #: Whether the sender, if a member, gets it too.
    include_self: bool = True
    #: A named event posted to each member instead of a text.
    event: Name | None = None
    #: A template: that event's ``input`` (one ``{...}`` field alone keeps its type).
    input: str = ""


class Join(_Strict, tag="join", tag_field="action", frozen=True):
    """Join a named group (a template); a session leaves its groups when it ends."""

    group: str


class Leave(_Strict, tag="leave", tag_field="action", frozen=True):
    """Leave a named group (a template); leaving a group one is not in does nothing."""

    group: str


class Call(_Strict, tag="call", tag_field="action", frozen=True):
    """Call ``function(session, input, match)``, named ``module:function``.

    The module is found beside the spec file first, then on ``sys.path``; it is
    imported once, when the spec is loaded. The return value is ``{result}`` for
    the actions after this one."""

    function: str
    #: Send what it returns: a string as one reply, a list of strings as several.
    reply: bool = True


class Send(_Strict, tag="send", tag_field="action", frozen=True):
    """Send a record on an outbound connection (``clients``): this session's own,
    or the server's shared one. Sent once it is up; until then queued, in order."""

    #: The client's name.
    to: Name
    #: A template (a mapping or list for a structured client filter): the record.
    text: str | dict[str, Any] | list[Any] = "{input}"


class SwitchFilter(_Strict, tag="switch_filter", tag_field="action", frozen=True):
    """Change how the following bytes are framed; bytes already received and not
    yet handled go to the new filter (POE's ``get_pending``)."""

    #: ``line`` (the server's line filter) or ``block`` (exactly ``size`` bytes).
    type: Literal["line", "block"]
    #: For ``block``: the number of bytes, or a template giving it (``"{match.bytes}"``).
    size: int | str | None = None
    #: For ``block``: bytes that must follow the block (e.g. ``"\\r\\n"``), checked and dropped.
    end: str = ""
    #: For ``block``: the largest size accepted; a larger one closes that client.
    max_size: BlockLimit = 1 << 20
    #: For ``block``: one block, then lines again, with no ``switch_filter: line``
    #: (memcached's data block; cheaper than switching twice).
    once: bool = False


class Work(_Strict, tag="work", tag_field="action", frozen=True):
    """Run ``module:function`` as work that never stalls other clients. The
    connection is ``working`` meanwhile (its input waits, in order); the actions
    after this one, in the same list, run when the work is done, with its return
    value as ``{result}``."""

    function: str
    #: ``steps``: ``function(session, input, match)`` returns a generator, run in
    #: time slices; ``thread`` / ``process``: ``function(input, match)`` is a plain
    #: function, run in the thread or process pool.
    in_: Literal["steps", "thread", "process"] = msgspec.field(default="steps", name="in")
    #: Seconds after which the work is stopped and ``on_error`` runs.
    timeout: Seconds | None = None
    #: Actions for each value a ``steps`` generator yields (as ``{result}``).
    progress: list[Action] = []
    #: At most one ``progress`` run per this many seconds.
    progress_every: Seconds = 0.5
    #: Actions when the work fails or times out (the reason is ``{result}``);
    #: none given: ``reply: "error: {result}"``.
    on_error: list[Action] = []


class Run(_Strict, tag="run", tag_field="action", frozen=True):
    """Run a program (never through a shell) and stream its output. The connection
    is ``working`` until it exits; the actions after this one run then, with its
    exit status as ``{result}``."""

    #: The program and its arguments; the program is literal, the arguments may be
    #: templates.
    argv: Annotated[list[str], Meta(min_length=1)]
    #: A template written to the program's standard input, which is then closed.
    stdin: str | None = None
    #: Actions for each line of its standard output (as ``{result}``); none
    #: given: the line is sent as a reply.
    stdout: list[Action] = []
    #: Actions for each line of its standard error (as ``{result}``); none given:
    #: ignored.
    stderr: list[Action] = []
    #: Seconds after which the program is killed and ``on_error`` runs.
    timeout: Seconds | None = None
    #: Actions when it cannot start, is over ``max_children`` or times out (the
    #: reason is ``{result}``); none given: ``reply: "error: {result}"``.
    on_error: list[Action] = []


Action = (
    Reply
    | Write
    | Log
    | Set
    | Unset
    | Append
    | Goto
    | Close
    | Post
    | Raise
    | Broadcast
    | Join
    | Leave
    | Call
    | SwitchFilter
    | Work
    | Run
    | Send
    | Foreach
    | If
    | Use
)

#: Every action, by the name written in YAML.
ACTIONS: dict[str, type[Struct]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        Reply,
        Write,
        Log,
        Set,
        Unset,
        Append,
        Goto,
        Close,
        Post,
        Raise,
        Broadcast,
        Join,
        Leave,
        Call,
        SwitchFilter,
        Work,
        Run,
        Send,
        Foreach,
        If,
        Use,
    )
}

#: For the short YAML form ``- reply: TEXT``: which field TEXT fills (None: the
#: action takes no value, written ``- close``).
ACTION_MAIN_FIELD: dict[str, str | None] = {
    "reply": "text",
    "write": "text",
    "log": "text",
    "set": "values",
    "unset": "names",
    "append": "values",
    "goto": "state",
    "close": None,
    "post": "event",
    "raise": "event",
    "broadcast": "text",
    "join": "group",
    "leave": "group",
    "call": "function",
    "switch_filter": "type",
    "work": "function",
    "run": "argv",
    "send": "to",
    "foreach": "in",
    "if": "if",
    "use": "name",
}


# -- handlers, rules and states ----------------------------------------------------------


class Rule(_Strict, tag="rule", tag_field="action", frozen=True):
    """Actions to run when a condition holds. At most one test of the input, and
    a guard (``if``) beside it or alone; none: always.

    Conditions test the input (for ``input``) or the event's ``input`` (named events).
    """

    do: list[Action]
    #: A regular expression (a template), searched in the input; named groups are
    #: ``{match.NAME}``.
    match: str | None = None
    #: The input equals this (a template).
    equals: str | None = None
    #: The input starts with this (a template); the rest is ``{match.rest}``.
    prefix: str | None = None
    #: With a schema: the message is of this kind; its fields are ``{match.NAME}``.
    message: Name | None = None
    #: Compare without regard to case.
    ignore_case: bool = False
    #: A guard: an expression that must be true too (after the test, which gives
    #: it ``match.NAME``).
    if_: str | bool | None = msgspec.field(default=None, name="if")


#: A handler as a spec writes it: a list of actions (all run, in order), or a list
#: of rules (the first that matches runs). Compiled, it becomes a kernel handler.
HandlerList = list[Rule | Action]

#: Events a spec handles besides its own named ones.
BUILTIN_EVENTS: tuple[str, ...] = (
    "connected", "input", "disconnected", "timeout", "flushed", "high", "low", "error",
    "invalid",
)  # fmt: skip


class StateTimeout(_Strict, frozen=True):
    """What happens when a session stays in a state too long (gen_statem's
    ``state_timeout``): cancelled when the state is left."""

    after: Seconds
    do: list[Action]


class State(_Strict, frozen=True):
    """A protocol state: a phase of the connection's ``reading`` state."""

    #: Actions run on entering the state.
    enter: list[Action] = []
    #: Actions run on leaving it (by ``goto``; not when the client leaves).
    exit: list[Action] = []
    #: A state timeout; none by default.
    timeout: StateTimeout | None = None
    #: Event name to handler, tried before the top-level ``handlers``.
    handlers: dict[str, HandlerList] = {}


#: Events of an outbound connection's handlers.
CLIENT_EVENTS: tuple[str, ...] = ("connected", "input", "disconnected", "connect_error")


class ClientTLS(_Strict, frozen=True):
    """Speak TLS to the server, checking its certificate."""

    #: Authorities to trust, a PEM file (relative to the spec's folder); none:
    #: the system's.
    ca: FilePath | None = None
    #: The name the server's certificate must carry; none: ``host``.
    hostname: str | None = None


class BackoffSettings(_Strict, frozen=True):
    """A shared client's delays between attempts: the fields of
    :class:`~statemachine_server.net.client.Backoff`, which the client is given
    when it is made (the model is data only: it does not import the network)."""

    #: The first delay, in seconds.
    initial: Annotated[float, Meta(gt=0)] = 1.0
    #: How much each failed attempt multiplies the delay by.
    factor: Annotated[float, Meta(ge=1)] = 1.6
    #: The longest delay, in seconds.
    maximum: Annotated[float, Meta(gt=0)] = 120.0
    #: The fraction of each delay drawn at random (0: none).
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.2
    #: Failed attempts in a row after which the client gives up; none: never.
    attempts: Annotated[int, Meta(ge=1)] | None = None


class ClientSettings(_Strict, frozen=True):
    """An outbound connection (POE::Component::Client::TCP's role), for a proxy
    or a gateway. Its handlers run as the session it belongs to: ``reply`` answers
    that session's client."""

    #: The server's port, or a template giving it (``"{server.upstream_port}"``).
    port: Port | str | None = None
    #: The server's address, or a template giving it.
    host: str = "127.0.0.1"
    #: Connect to this Unix domain socket instead (relative to the spec's folder).
    path: FilePath | None = None
    #: Speak TLS; none: plain.
    tls: ClientTLS | None = None
    #: ``connection``: each client's own, opened when it is admitted and closed
    #: when it leaves; ``server``: one for the whole server, kept up (reconnecting).
    per: Literal["connection", "server"] = "connection"
    #: How its bytes become records.
    filter: FilterSettings = msgspec.field(default_factory=LineFilterSettings)
    #: Seconds an attempt may take.
    connect_timeout: Seconds = 10.0
    #: Delays between attempts of a ``per: server`` client (a ``per: connection``
    #: client makes one attempt: its client is closed if it fails).
    reconnect: BackoffSettings = msgspec.field(default_factory=BackoffSettings)
    #: Records ``send`` may queue while it is not connected; past it, the sending
    #: client is closed (``per: connection``) or the record dropped (``per: server``).
    max_queued: Annotated[int, Meta(ge=0, le=1 << 24)] = 10000
    #: ``connected``, ``input`` (what the server sent), ``disconnected`` (none
    #: given, ``per: connection``: the client is closed too) and ``connect_error``
    #: (``{input}`` is the reason; none given: the client is closed).
    handlers: dict[str, HandlerList] = {}


class CollectionBound(_Strict, frozen=True):
    """The bound of a map or list in a heap (or of a text value's length)."""

    #: The most entries it holds.
    max_items: Annotated[int, Meta(ge=1, le=1 << 30)] | None = None
    #: The most bytes it holds (text by its length, numbers 8 bytes each).
    max_bytes: Annotated[int, Meta(ge=1, le=1 << 40)] | None = None
    #: Past a bound: ``error`` (the writing connection's error event) or ``lru``
    #: (the least recently used entries make room, memcached's ``-m``).
    evict: Literal["error", "lru"] = "error"


class Spec(_Strict, frozen=True, dict=True):
    """A whole server."""

    #: Where and how to listen.
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    #: Each session's heap: its initial values (``heap.NAME``).
    heap: dict[Name, HeapValue] = {}
    #: Named lists of actions, run where a ``use: NAME`` action stands.
    actions: dict[Name, list[Action]] = {}
    #: Bounds of the heaps' maps, lists and text, by ``NAME`` or ``server.NAME``.
    collections: dict[str, CollectionBound] = {}
    #: Event name to handler, in every state (after the state's own rules).
    handlers: dict[str, HandlerList] = {}
    #: The protocol states, if the protocol has phases.
    states: dict[Name, State] = {}
    #: The state a connection starts in; the first state listed by default.
    initial: Name | None = None
    #: Outbound connections, by name (``send: NAME``).
    clients: dict[Name, ClientSettings] = {}
    #: Named events posted from Python only (events that ``post`` actions name
    #: need not be listed).
    events: list[Name] = []
    #: The spec format's version.
    version: Literal[1] = 1
    # Where the spec came from: set by the loader, never read from YAML (the
    # loader refuses keys starting with "_"); read through the properties below.
    # Fields, so a copy (msgspec.structs.replace) still finds its files.
    _base_dir: str = ""
    _origin: str = ""

    @property
    def base_dir(self) -> Path:
        """The spec file's folder, where ``call`` modules and the files the spec
        names are found (the current directory for a spec made in Python)."""
        return Path(self._base_dir) if self._base_dir else Path.cwd()

    @property
    def origin(self) -> str:
        """What the spec came from, as generated code's filenames name it: the
        file's name, ``<builtin echo.yaml>``, ``<string>``; empty for a spec made
        in Python."""
        return self._origin

    @property
    def program(self) -> Any:
        """The :class:`~.runtime.Program` the loader compiled this spec into (None
        for a spec made in Python, or changed with ``msgspec.structs.replace``):
        :func:`~.build.build_server` runs it, so a spec is compiled once."""
        # Not a field but the instance's own state (``dict=True``, msgspec's
        # place for it): never encoded or compared, and not carried by a copy,
        # whose program would not be its own. Any: the model imports no compiler.
        return self.__dict__.get("program")

    def located(self, base_dir: str | Path, origin: str) -> Spec:
        """This spec, read from a file in ``base_dir`` that ``origin`` names."""
        return msgspec.structs.replace(self, _base_dir=str(base_dir), _origin=origin)

    def compiled(self, program: Any) -> Spec:
        """A copy of this spec that holds ``program``, what it compiles into."""
        spec = msgspec.structs.replace(self)
        spec.__dict__["program"] = program
        return spec
