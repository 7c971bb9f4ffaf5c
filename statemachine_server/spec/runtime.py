"""Turn a validated :class:`~.model.Spec` into a running :class:`TCPServer`.

Each handler's action list is compiled once into one Python function, so a spec
server runs the same per-message path as a hand-written one: no spec lookups, no
template parsing, no ``transitions`` trigger per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..connection import Connection
from ..console import ConsoleLog
from ..filters import LineFilter
from ..kernel import Kernel
from ..net.tcp import TCPServer
from .model import Action, Log, Reply, Spec
from .templates import Template, compile_template, is_identity

__all__ = ["build_server"]

Step = Callable[[Any, Any], None]


def _compile(
    actions: list[Action], console: ConsoleLog, has_input: bool, log_enabled: bool = True
) -> list[Step]:
    steps: list[Step] = []
    for action in actions:
        if isinstance(action, Reply):
            if has_input and is_identity(action.text):
                # Echo the record itself; the filter encodes it. No frame of ours.
                steps.append(Connection.put)
            else:
                steps.append(_reply(compile_template(action.text, has_input=has_input)))
        elif isinstance(action, Log):
            if not log_enabled:
                continue  # server.log.enabled: false - no client data in the console
            render = compile_template(action.text, has_input=has_input)
            steps.append(_log(render, console.lines.append))
        else:  # pragma: no cover - the model's union is closed
            raise TypeError(f"unknown action {action!r}")
    return steps


def _reply(render: Template) -> Step:
    def reply(session: Any, record: Any) -> None:
        session.put(render(session, record))

    return reply


def _log(render: Template, write: Callable[[str], None]) -> Step:
    def log(session: Any, record: Any) -> None:
        write(render(session, record))

    return log


def _input_handler(steps: list[Step]) -> Callable[[Any, Any], None] | None:
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def both(session: Any, record: Any) -> None:
            first(session, record)
            second(session, record)

        return both

    def run_all(session: Any, record: Any) -> None:
        for step in steps:
            step(session, record)

    return run_all


def _event_handler(steps: list[Step]) -> Callable[[Any], None] | None:
    handler = _input_handler(steps)
    if handler is None:
        return None
    return lambda session: handler(session, None)


def build_server(
    spec: Spec,
    kernel: Kernel,
    *,
    host: str | None = None,
    port: int | None = None,
    console: ConsoleLog | None = None,
    on_started: Callable[[TCPServer], Any] | None = None,
) -> TCPServer:
    """Create (and bind) the server a spec declares.

    Args:
        spec: a validated spec.
        kernel: the kernel to run it in.
        host: overrides ``server.host``.
        port: overrides ``server.port``.
        console: where ``log`` actions write (stdout by default).
        on_started: called with the server once it is being served.
    """
    console = console or ConsoleLog(kernel)
    settings = spec.server
    max_length = settings.filter.max_length
    handlers = spec.handlers
    logs = settings.log.enabled

    def compiled(actions: list[Action], has_input: bool) -> list[Step]:
        return _compile(actions, console, has_input, logs)

    return TCPServer(
        kernel,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        on_input=_input_handler(compiled(handlers.input, True)),
        on_connected=_event_handler(compiled(handlers.connected, False)),
        on_disconnected=_event_handler(compiled(handlers.disconnected, False)),
        on_started=on_started,
        filter=lambda: LineFilter(max_length),
        limits=settings.limits,
    )
