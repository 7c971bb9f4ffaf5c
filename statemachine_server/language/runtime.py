"""What a compiled spec runs per message: its handlers' shapes and the state they share.

The compiler (:mod:`.compile`) turns each action into an :data:`Op`,
``op(session, input, match)``, and each event's rules, in every protocol state,
into one generated function (:mod:`.inline`; an outbound client's handlers into
a function that tries its rules in order, :func:`entry`). So the per-message
path is one call, tests of the state, and the actions inline: no spec lookups,
no template parsing, and never a ``transitions`` trigger (one costs ~15-20 us;
``transitions`` only declares and draws the machine, see :mod:`.graph`).

What ops share while a server runs is one :class:`Runtime`: groups, state timers,
the states' enter, exit and timeout ops, the log writer and the outbound clients.
With ``server.bus``, groups, broadcasts and posts reach the sessions of every
process sharing that Redis: a broadcast is delivered here as without a bus, then
handed to the bus (:mod:`statemachine_server.bus`), which never waits on the
per-message path; what other processes publish comes back through
:meth:`Runtime.deliver_text`, :meth:`Runtime.deliver_event` and
:meth:`Runtime.deliver_post`.
The compiled whole is a :class:`Program`, which :func:`~.build.build_server` gives
to a :class:`~statemachine_server.net.server.TCPServer`.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..bus import wire
from ..core.lifecycle import CLOSED, READING, REPLYING, WORKING
from ..errors import LimitReached, ProtocolError
from ..filters import Filter, InvalidRecord, LineFilter
from ..work import Cancelled, WorkTimeout
from .clients import ClientProgram, Outbound
from .report import one_line
from .templates import RESULT

if TYPE_CHECKING:
    from ..bus.redisbus import Bus

__all__ = [
    "INPUT_EVENTS",
    "RUNTIME",
    "STATE_TIMEOUT",
    "WRITE",
    "Condition",
    "Op",
    "Program",
    "Rules",
    "Runtime",
    "always",
    "entry",
    "failure",
    "goto",
    "on_connected",
    "on_disconnected",
    "on_error",
    "post_event",
    "raise_event",
    "reply_error",
    "reply_result",
    "run_with",
    "runtime_of",
    "take_invalid",
    "then_with",
]  # fmt: skip

log = logging.getLogger("statemachine_server")

#: A compiled action: ``op(session, input, match)``.
Op = Callable[[Any, Any, dict[str, Any]], None]
#: A compiled rule condition, ``test(session, input)``: the match dict
#: (``{match.NAME}``) or None.
Condition = Callable[[Any, Any], "dict[str, Any] | None"]
#: A compiled handler's rules, in order: the first whose condition matches runs.
Rules = list[tuple[Condition, list[Op]]]

#: The event a state timeout posts (not a name a spec can use).
STATE_TIMEOUT = "<state timeout>"
#: Events whose handlers get a record: input, a structured record that failed its
#: schema (``invalid``, whose ``{input}`` is the reason), a client's connect error.
INPUT_EVENTS = frozenset({"input", "invalid", "connect_error"})
#: The name generated code calls the log writer by (see :meth:`Runtime.bind`).
WRITE = "_w"


class _RuntimeKey:
    """The key a spec server's connections find its :class:`Runtime` under, in
    their handler table: never an event name (those are strings)."""

    def __repr__(self) -> str:
        return "<spec runtime>"


RUNTIME = _RuntimeKey()


def always(session: Any, data: Any) -> dict[str, Any]:
    """The condition of a rule without one."""
    return {}


def _discard(line: str) -> None:
    pass


class Runtime:
    """One spec server's shared state: groups, state timers, the states' ops.

    Made by the compiler, bound to one server by :meth:`bind`: groups and timers
    are one server's, so a second server of the same spec compiles its own.
    """

    def __init__(self, write: Callable[[str], None] | None = None):
        #: Where ``log`` actions write: nowhere until bound (a check).
        self.write = write or _discard
        self.groups: dict[str, dict[int, Any]] = {}
        self.member_of: dict[int, set[str]] = {}
        # session id -> (kernel timer id, token) of its state timeout
        self.timers: dict[int, tuple[int, int]] = {}
        self.tokens = itertools.count(1)
        self.enter: dict[str, list[Op]] = {}
        self.exit: dict[str, list[Op]] = {}
        self.timeout: dict[str, tuple[float, list[Op]]] = {}
        #: The outbound connections (``clients``), once a server is built.
        self.outbound: Outbound | None = None
        #: Whether a server runs these ops (see :meth:`bind`).
        self.bound = False
        #: The globals of generated functions, which call the writer as
        #: :data:`WRITE`: a global, not an attribute of this object, saves a
        #: lookup per log line on the echo path (see :mod:`.codegen`).
        self.generated: list[dict[str, Any]] = []
        #: Events raised (``raise``) and not handled yet: (session, event, input).
        self.internal: deque[tuple[Any, str, Any]] = deque()
        self.depth = 0  # handlers running (a raised event waits for the outermost)
        #: Where gotos are counted when metrics are served: one counter of
        #: from-states per (to state, event) a goto names (see goto_site).
        self.goto_sites: dict[tuple[str, str], defaultdict[str | None, int]] = {}
        self.metered = False
        self.draining = False
        #: The bus to other processes (``server.bus``), once a server is built.
        self.bus: Bus | None = None
        self.kernel: Any = None  # the server's, with a bus (deliveries from it)

    def bind(self, write: Callable[[str], None], outbound: Outbound | None) -> None:
        """Give the ops their server's log writer and outbound clients: once."""
        assert not self.bound, "a second server compiles its own (compile.program_of)"
        self.bound = True
        self.write = write
        self.outbound = outbound
        for namespace in self.generated:
            namespace[WRITE] = write

    def states(self) -> set[str]:
        """The spec's protocol states."""
        return set(self.enter)

    def goto(self, session: Any, target: str) -> None:
        # gen_statem's order: leave (timeout cancelled, exit actions), then enter.
        entry = self.timers.pop(session.id, None)
        if entry is not None:
            session.kernel.cancel(entry[0])
        run(self.exit.get(session.protocol_state), session)
        session.protocol_state = target
        self.enter_state(session, target)

    def goto_site(self, target: str, event: str) -> defaultdict[str | None, int]:
        """The counts of the gotos to ``target`` while handling ``event``, by the
        state they leave: one increment of a str key per goto, the cheapest count
        found (a defaultdict's is a third of a Counter's, whose ``+=`` runs in
        Python; a (from, to, event) key built per goto cost twice as much)."""
        site = self.goto_sites.get((target, event))
        if site is None:
            site = self.goto_sites[target, event] = defaultdict(int)
        return site

    def counted_goto(self, session: Any, target: str, site: defaultdict[str | None, int]) -> None:
        """:meth:`goto`, counted in ``site`` (a spec served with metrics)."""
        site[session.protocol_state] += 1
        self.goto(session, target)

    def transitions(self) -> dict[tuple[str | None, str, str], int]:
        """Gotos so far by (from state, to state, event): counted only when
        metrics are served; the event of a Python ``goto()`` is "python"."""
        return {
            (old, new, event): count
            for (new, event), site in self.goto_sites.items()
            for old, count in site.items()
        }

    def enter_state(self, session: Any, name: str) -> None:
        timeout = self.timeout.get(name)
        if timeout is not None and session.state is not CLOSED:
            # A kernel timer owned by the session: it keeps the session alive
            # while pending and goes with it; goto cancels it.
            token = next(self.tokens)
            tid = session.kernel.delay(timeout[0], STATE_TIMEOUT, token, session=session)
            self.timers[session.id] = (tid, token)
        run(self.enter.get(name), session)

    def state_timeout(self, session: Any, token: int = 0, *_: Any) -> None:
        entry = self.timers.get(session.id)
        if entry is None or entry[1] != token:
            return  # fired just before the state was left: stale
        del self.timers[session.id]
        timeout = self.timeout.get(session.protocol_state)
        if timeout is not None:
            run(timeout[1], session)

    def attach_bus(self, bus: Bus, kernel: Any) -> None:
        """Carry groups, broadcasts and posts to other processes on ``bus``."""
        self.bus = bus
        self.kernel = kernel

    def join(self, session: Any, group: str) -> None:
        members = self.groups.setdefault(group, {})
        members[session.id] = session
        self.member_of.setdefault(session.id, set()).add(group)
        if self.bus is not None:
            self.bus.members(group, len(members))

    def leave(self, session: Any, group: str) -> None:
        members = self.groups.get(group)
        if members is not None and members.pop(session.id, None) is not None:
            if not members:
                del self.groups[group]
            self.member_of[session.id].discard(group)
            if self.bus is not None:
                self.bus.members(group, len(members))

    def broadcast(self, session: Any, group: str, text: str, include_self: bool) -> None:
        members = self.groups.get(group)
        if members:
            for member in list(members.values()):
                if include_self or member is not session:
                    member.put(text)
        if self.bus is not None:  # and to the members elsewhere, after these
            self.bus.broadcast_text(group, text)

    def broadcast_event(
        self, session: Any, group: str, event: str, data: Any, include_self: bool
    ) -> None:
        """Post ``event`` to every member of ``group``: each handles it in its own
        turn, with its own heap and state (POE's ``post`` to many sessions)."""
        members = self.groups.get(group)
        if members:
            for member in list(members.values()):
                if include_self or member is not session:
                    member.kernel.enqueue(member, event, (data,))
        if self.bus is not None:
            self.bus.broadcast_event(group, event, data)

    # -- from other processes (the bus), and posts to any session --------------------------

    def deliver_text(self, group: str, text: str) -> None:
        """Another process broadcast ``text`` to ``group``: to each member here."""
        members = self.groups.get(group)
        if members:
            for member in list(members.values()):
                member.put(text)

    def deliver_event(self, group: str, event: str, data: Any) -> None:
        """Another process broadcast ``event`` to ``group``: posted to each member here."""
        members = self.groups.get(group)
        if members:
            for member in list(members.values()):
                member.kernel.enqueue(member, event, (data,))

    def deliver_post(self, target: int | str, event: str, data: Any) -> bool:
        """Post ``event`` to this server's session ``target`` (an id here or an
        alias), if it is here: whether it was."""
        session = self.kernel.session(target) if self.kernel is not None else None
        if session is None or session.handler_table.get(RUNTIME) is not self:
            return False  # gone, or not one of this spec server's connections
        session.kernel.enqueue(session, event, (data,))
        return True

    def address(self, session: Any) -> str:
        """``session``'s address, for :meth:`post`: ``NODE/ID`` with a bus (its id is
        unique in its own process only), its id without."""
        bus = self.bus
        return str(session.id) if bus is None else wire.address(bus.node, session.id)

    def post(self, sender: Any, target: int | str, event: str, data: Any = "") -> bool:
        """Post ``event`` (its input: ``data``) to the session ``target`` of this spec
        server: an address (:meth:`address`), an id in this process, or an alias.
        With a bus, a session of another process is reached through Redis, at most
        once, and an alias not found here is asked of every other process.

        Returns:
            False when the session is surely not there (no bus, and none here).
        """
        bus = self.bus
        if self.kernel is None:
            self.kernel = sender.kernel
        if isinstance(target, str):
            where = wire.parse_address(target)
            if where is not None:
                node, target = where
                if bus is None:
                    return False  # another process's session, and no way there
                if node != bus.node:
                    bus.post(node, target, event, data)
                    return True
            elif target.isdigit():
                target = int(target)
        if self.deliver_post(target, event, data):
            return True
        if bus is not None and isinstance(target, str):
            bus.post_alias(target, event, data)
            return True
        return False

    def functions(self) -> dict[str, Any]:
        """The functions expressions may call besides the fixed ones: the
        runtime's own, with their signatures (see :data:`~.functions.SIGNATURES`)."""
        return {"group_size": (self.group_size, (("text",), 0, "int"))}

    def group_size(self, group: Any) -> int:
        """How many sessions are in ``group`` (``group_size(...)`` in expressions):
        with a bus, those here now and those elsewhere as last counted (a second
        old at most while Redis answers; see :mod:`statemachine_server.bus.sizes`)."""
        if not isinstance(group, str):
            return 0
        members = self.groups.get(group)
        if self.bus is not None:
            return (len(members) if members else 0) + self.bus.remote_size(group)
        return len(members) if members else 0

    # -- raised events: handled after the current handler, before further input ---------

    def raise_event(self, session: Any, event: str, data: Any) -> None:
        """Queue ``event`` for ``session`` to handle once the running handler is done."""
        self.internal.append((session, event, data))
        if not self.depth:
            self.drain()  # raised from outside a handler (Python code): now

    def handled(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler``, followed by the events it raised (SCXML's internal queue)."""

        def then_raised(session: Any, *args: Any) -> Any:
            self.depth += 1
            try:
                return handler(session, *args)
            except BaseException:
                # A failed handler's raised events go with it, as its replies do not.
                self.forget(session)
                raise
            finally:
                self.depth -= 1
                if not self.depth and self.internal and not self.draining:
                    self.drain()

        return then_raised

    def drain(self) -> None:
        """Handle the raised events, in order: directly while their session is
        ``reading``; ahead of its postponed input while it works; dropped once it
        is closing."""
        queue = self.internal
        self.draining = True
        try:
            while queue:
                session, event, data = queue.popleft()
                state = session.state
                if state is READING:
                    handler = session.handler_table.get(event)
                    if handler is None:
                        continue
                    self.depth += 1
                    try:
                        handler(session, data)
                    except Exception as exc:
                        self.forget(session)
                        session.kernel.handler_failed(session, event, exc)
                    finally:
                        self.depth -= 1
                elif state is WORKING or state is REPLYING:
                    # Its own events after this one wait too, still first.
                    waiting = [(event, (data,))]
                    for entry in list(queue):
                        if entry[0] is session:
                            waiting.append((entry[1], (entry[2],)))
                            queue.remove(entry)
                    session.postpone_first(waiting)
        finally:
            self.draining = False

    def forget(self, session: Any) -> None:
        """Drop the events ``session`` raised and has not handled (its handler failed)."""
        for entry in [e for e in self.internal if e[0] is session]:
            self.internal.remove(entry)

    def gone(self, session: Any) -> None:
        """The session ended: out of every group, no state timer left."""
        self.timers.pop(session.id, None)  # the kernel cancelled the timer itself
        for group in self.member_of.pop(session.id, ()):
            members = self.groups.get(group)
            if members is not None:
                members.pop(session.id, None)
                if not members:
                    del self.groups[group]
                if self.bus is not None:
                    self.bus.members(group, len(members))


@dataclass
class Program:
    """A compiled spec: the handlers a :class:`TCPServer` takes, and what graph draws."""

    #: What the ops share at run time.
    runtime: Runtime
    #: Event name to handler, for TCPServer's ``on_*`` arguments.
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: Named events (and the state timeout) to handler, for TCPServer's ``handlers``.
    named: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: Makes each connection's filter.
    filter_factory: Callable[[], Filter] = LineFilter
    #: The protocol states' transitions: (source state, dest state, label).
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    #: The state a connection starts in (None: the spec declares no states).
    initial: str | None = None
    #: The outbound connections (``clients``), compiled.
    clients: list[ClientProgram] = field(default_factory=list)
    #: Every generated function's source, by the filename tracebacks give it.
    sources: dict[str, str] = field(default_factory=dict)
    #: Each session's initial heap (the spec's ``heap``).
    session_heap: dict[str, Any] = field(default_factory=dict)
    #: The bound of each heap name (the spec's ``collections``): ``bound(NAME)``.
    bound: Callable[[str], Any] | None = None


# -- from Python: what a call or work target may do besides the heaps ------------------


def runtime_of(session: Any) -> Runtime:
    """The runtime of the spec server ``session`` belongs to."""
    rt = session.handler_table.get(RUNTIME)
    if rt is None:
        raise TypeError(f"session {session.id} is not a spec server's connection")
    return rt  # type: ignore[no-any-return]


def goto(session: Any, state: str) -> None:
    """Move ``session`` to the protocol ``state``, as a spec's ``goto`` does (from a
    ``call`` or ``work`` target): the old state's exit actions, then the new
    one's enter actions and timeout.

    Raises:
        ValueError: the spec declares no such state.
    """
    rt = runtime_of(session)
    if state not in rt.states():
        known = ", ".join(sorted(rt.states())) or "none"
        raise ValueError(f"goto: no state {state!r} (the spec's states: {known})")
    if rt.metered:
        rt.counted_goto(session, state, rt.goto_site(state, "python"))
    else:
        rt.goto(session, state)


def raise_event(session: Any, event: str, data: Any = "") -> None:
    """Have ``session`` handle the named ``event`` (its ``input``: ``data``) as a
    spec's ``raise`` does: once the running handler is done, before further input."""
    runtime_of(session).raise_event(session, event, data)


def post_event(session: Any, to: int | str, event: str, data: Any = "") -> bool:
    """Post the named ``event`` (its ``input``: ``data``) to another session of
    ``session``'s spec server, as a spec's ``post`` does to its own: ``to`` is an
    address (``NODE/ID``, see :meth:`Runtime.address`), an id in this process, or
    an alias. With ``server.bus`` it reaches the sessions of every process
    sharing that Redis, at most once.

    Returns:
        False when there is surely no such session (without a bus: none here).
    """
    return runtime_of(session).post(session, to, event, data)


# -- running ops ------------------------------------------------------------------------


def run(ops: list[Op] | None, session: Any) -> None:
    """Enter, exit and timeout actions: no input, a fresh match."""
    if ops:
        match: dict[str, Any] = {}
        for op in ops:
            op(session, None, match)


def run_with(ops: list[Op], session: Any, data: Any, match: dict[str, Any], result: Any) -> None:
    """The continuation of a work or run action: the rest of its list, with {result}."""
    if ops:
        match = {**match, RESULT: "" if result is None else result}
        for op in ops:
            op(session, data, match)


def then_with(rt: Runtime, ops: list[Op]) -> Callable[..., None]:
    """``run_with(ops, ...)``, as a handler: events its actions raise follow it."""
    return rt.handled(lambda session, data, match, result: run_with(ops, session, data, match,
                                                                     result))  # fmt: skip


def failure(exc: BaseException) -> str:
    """A work or run action's ``{result}`` when it fails."""
    if isinstance(exc, WorkTimeout | Cancelled | LimitReached):
        return str(exc)
    return one_line(exc)


def reply_error(session: Any, data: Any, match: dict[str, Any]) -> None:
    """A failed work or run action's reply, when its ``on_error`` is empty."""
    session.put(f"error: {match[RESULT]}")


def reply_result(session: Any, data: Any, match: dict[str, Any]) -> None:
    """A run action's output line, when its ``stdout`` is empty."""
    session.put(match[RESULT])


# -- handlers from rules ------------------------------------------------------------------


def entry(event: str, rules: Rules, named: set[str]) -> Callable[..., Any] | None:
    """The handler of one event: try the rules in order, run the first that matches."""
    if not rules:
        return None
    if len(rules) == 1 and rules[0][0] is always:
        ((_, ops),) = rules
        if event in INPUT_EVENTS:

            def run_input(session: Any, record: Any) -> None:
                match: dict[str, Any] = {}
                for op in ops:
                    op(session, record, match)

            return run_input
        if event in named:

            def run_named(session: Any, data: Any = "", *_: Any) -> None:
                data = "" if data is None else data if isinstance(data, str) else str(data)
                match: dict[str, Any] = {}
                for op in ops:
                    op(session, data, match)

            return run_named

        def run_event(session: Any, *_: Any) -> None:
            match: dict[str, Any] = {}
            for op in ops:
                op(session, None, match)

        return run_event

    def first_match(session: Any, data: Any) -> None:
        for test, ops in rules:
            match = test(session, data)
            if match is not None:
                for op in ops:
                    op(session, data, match)
                return

    if event in INPUT_EVENTS:
        return first_match
    if event in named:
        return lambda session, data="", *_: first_match(
            session, "" if data is None else data if isinstance(data, str) else str(data)
        )
    return lambda session, *_: first_match(session, None)


def on_connected(
    rt: Runtime,
    handler: Callable[..., Any] | None,
    initial: str | None,
    heap: Callable[[Any], None] | None = None,
) -> Callable[..., Any] | None:
    """``connected``: the session's heap gets its initial values (``heap``), and a
    spec with states enters the initial one first."""
    if initial is None and heap is None:
        return handler

    def connected(session: Any) -> None:
        if heap is not None:
            heap(session)
        if initial is not None:
            session.protocol_state = initial
            rt.enter_state(session, initial)
        if handler is not None:
            handler(session)

    return connected


def on_disconnected(rt: Runtime, handler: Callable[..., Any] | None) -> Callable[..., Any]:
    """``disconnected``: the session leaves its groups and timers whatever the handler does."""
    gone = rt.gone

    def disconnected(session: Any) -> None:
        try:
            if handler is not None:
                handler(session)
        finally:
            gone(session)

    return disconnected


def on_error(handler: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``error``: logged, then the spec's handler."""
    if handler is None:
        return None

    def handle_error(session: Any, exc: BaseException) -> None:
        # The connection logs an error only when no handler takes it: log it here
        # too, so a spec's error replies do not hide a Python handler's bug.
        where = {"session": session.id, "state": session.protocol_state or session.state}
        if isinstance(exc, ProtocolError):
            log.warning("session %d: %s; closing", session.id, exc, extra=where)
        else:
            log.error("session %d (state %s): handler raised %s: %s; closing",
                      session.id, where["state"], type(exc).__name__, exc, exc_info=exc,
                      extra=where)  # fmt: skip
        handler(session, exc)

    return handle_error


def _invalid_reply(session: Any, reason: str) -> None:
    session.put({"error": reason})


def take_invalid(program: Program) -> None:
    """Structured input: a record that failed its schema goes to ``invalid``."""
    # It comes as an InvalidRecord in the record's place: never to the input
    # rules; by default an error reply.
    invalid = program.handlers.pop("invalid", None) or _invalid_reply
    handle = program.handlers.get("input")

    def on_input(session: Any, record: Any) -> None:
        if type(record) is InvalidRecord:
            invalid(session, record.error)
        elif handle is not None:
            handle(session, record)

    program.handlers["input"] = on_input
