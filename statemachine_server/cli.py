"""The command line: parse arguments and environment, load the spec, start the kernel. Nothing else.

``statemachine-server run [SPEC]`` serves a spec (the built-in echo server by
default); ``check SPEC...`` validates specs (``--show-code``: and prints the
Python generated for them); ``graph [SPEC]`` prints the machine
(the connection lifecycle, with the spec's protocol states inside ``reading``) as
a Mermaid or DOT diagram.

Every option of ``run`` may come from the environment too, as
``STATEMACHINE_SERVER_<OPTION>`` (``STATEMACHINE_SERVER_PORT``...; the spec itself
as ``STATEMACHINE_SERVER_SPEC``). Precedence: the command line, then the
environment, then the spec, then the built-in default (``docs/operations.md``
has the table). A variable of that prefix that names no option is warned about,
with the closest name: a typo must not leave a default in force unnoticed.

Exit status: 0 on success and after a graceful shutdown; 2 for bad arguments, a
bad environment variable or a bad spec (nothing was started); 1 when the server
fails: it cannot listen (the port is taken, no permission), its TLS files do not
load, or something unexpected was raised (logged in one line, with the traceback
at debug level). Each error is one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__, logs
from .console import ConsoleLog
from .core import lifecycle
from .core.kernel import Kernel
from .core.running import DEFAULT_WATCHDOG, loop_factory
from .errors import SpecError
from .language import build_server, builtin_spec_path, load_spec, load_spec_text
from .language.build import beside_spec
from .language.graph import draw
from .language.model import Spec
from .language.report import hint, one_line
from .net.server import TCPServer

__all__ = ["ENV_PREFIX", "EXIT_FAILURE", "EXIT_USAGE", "main"]

log = logging.getLogger("statemachine_server")

#: The server failed (cannot listen, TLS files that do not load, a crash).
EXIT_FAILURE = 1
#: Bad arguments, environment or spec: nothing was started.
EXIT_USAGE = 2
#: The prefix of ``run``'s environment variables.
ENV_PREFIX = "STATEMACHINE_SERVER_"
LOOPS = ("asyncio", "uvloop")
DEFAULT_LEVEL = "warning"


class _Usage(Exception):
    """A bad option or variable: one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statemachine-server",
        description="Multi-client servers: one kernel, one state machine per connection.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    # Every default is None: an option not given falls back to its variable,
    # then to the spec, then to the default named in its help (see _settings).
    run = sub.add_parser(
        "run",
        help="serve a spec (the built-in echo server by default)",
        epilog=f"Each option may be set as an environment variable instead, {ENV_PREFIX}<OPTION> "
        f"({ENV_PREFIX}PORT, {ENV_PREFIX}LOG_LEVEL...; the spec: {ENV_PREFIX}SPEC); "
        "the command line wins. See docs/operations.md.",
    )
    run.add_argument("spec", nargs="?", help="a YAML spec file")
    run.add_argument("--host", help="address to listen on (overrides the spec)")
    run.add_argument("--port", help="port to listen on; 0 picks a free one")
    run.add_argument("--loop", choices=LOOPS, help="event loop (default asyncio)")
    run.add_argument(
        "--trace",
        action=argparse.BooleanOptionalAction,
        help="log every state transition (sets the log level to debug)",
    )
    run.add_argument(
        "--watchdog",
        metavar="SECONDS",
        help="log the stack of a handler, call or work step that holds the event loop "
        f"this long, and interrupt work steps past their timeout (default {DEFAULT_WATCHDOG:g}; "
        "0: off)",
    )
    run.add_argument(
        "--log-level",
        choices=tuple(logs.LEVELS),
        help=f"diagnostics shown (default {DEFAULT_LEVEL})",
    )
    run.add_argument(
        "-v", "--verbose", dest="log_level", action="store_const", const="info",
        help="the same as --log-level info",
    )  # fmt: skip
    run.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="diagnostics (stderr) and log lines (stdout) as text or one JSON object per line "
        "(default: the spec's server.log.format, text)",
    )
    run.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics there (overrides the spec's server.metrics)",
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="set a server-wide heap value, {server.NAME} (overrides the spec's server.heap)",
    )

    check = sub.add_parser("check", help="validate specs; exit 2 if any is invalid")
    check.add_argument("specs", nargs="+", metavar="SPEC")
    check.add_argument(
        "--show-code",
        action="store_true",
        help="print the source of every function generated for each spec, "
        "headed by the filename tracebacks give it",
    )

    graph = sub.add_parser(
        "graph", help="print the machine (lifecycle and the spec's states) as a diagram"
    )
    graph.add_argument("spec", nargs="?", help="a YAML spec file (default: the lifecycle only)")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logs.configure(DEFAULT_LEVEL)  # until run knows its own: a crash is still logged
    try:
        if args.command == "check":
            return _check(args.specs, args.show_code)
        if args.command == "graph":
            return _graph(args.spec, args.format)
        return _run(args, os.environ)
    except Exception as exc:  # our bug, or the system's: one line, the rest on demand
        debug = log.isEnabledFor(logging.DEBUG)
        log.error("unexpected error: %s", one_line(exc), exc_info=exc if debug else None)
        return EXIT_FAILURE


def _graph(path: str | None, fmt: str) -> int:
    if path is None and fmt == "mermaid":
        sys.stdout.write(lifecycle.draw())
        return 0
    try:
        spec = load_spec(path) if path is not None else load_spec_text("{}", "<lifecycle>")
    except SpecError as exc:
        return _fail(exc)
    sys.stdout.write(draw(spec, fmt))
    return 0


def _check(paths: list[str], show_code: bool = False) -> int:
    status = 0
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            print(exc, file=sys.stderr)  # one line per error
            status = EXIT_USAGE
            continue
        print(f"{path}: ok")
        # A large spec is a million objects kept to the end: the collector need
        # not look at them again, nor at exit (0.15 s of checking 10,000 states).
        gc.freeze()
        if show_code:
            for filename, source in spec.program.sources.items():
                print(f"\n# {filename}\n{source}", end="")
    return status


# -- run's settings: the command line, then the environment ----------------------------

_TRUE = {"true": True, "yes": True, "on": True, "1": True,
         "false": False, "no": False, "off": False, "0": False}  # fmt: skip


def _boolean(value: str) -> bool:
    if value.lower() not in _TRUE:
        raise ValueError("expected 1/0, true/false, yes/no or on/off")
    return _TRUE[value.lower()]


def _port(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > 65535:
        raise ValueError("expected 0 to 65535")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # nan too
        raise ValueError("expected 0 (off) or a number of seconds")
    return seconds


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _metrics(value: str) -> str:
    # Checked as server.metrics is in a spec: one rule for both.
    try:
        load_spec_text("{}", "<metrics>", server={"metrics": value})
    except SpecError as exc:
        reason = re.sub(r" at \$\.server\.metrics$", "", exc.errors[0].message)
        raise ValueError(re.sub(r"^metrics '.*?': ", "", reason)) from None
    return value


def _items(value: str) -> list[str]:
    """``STATEMACHINE_SERVER_SET``'s items: one a line if it spans lines (a value
    may then hold commas), else separated by commas; blank items are skipped."""
    parts = value.splitlines() if "\n" in value else value.split(",")
    return [part.strip() for part in parts if part.strip()]


def _text(value: str) -> str:
    return value


#: Each option of ``run``: its argparse ``dest``, and how its variable's text is
#: read (the variable is ENV_PREFIX + dest in capitals). Options whose command-line
#: value is text are read the same way (--port, --watchdog, --metrics).
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "spec": _text,
    "host": _text,
    "port": _port,
    "loop": _choice(LOOPS),
    "trace": _boolean,
    "watchdog": _seconds,
    "log_level": _choice(tuple(logs.LEVELS)),
    "log_format": _choice(logs.FORMATS),
    "metrics": _metrics,
    "set": _items,
}
#: Variables that are no option, and what to set instead.
_INSTEAD = {"VERBOSE": f"{ENV_PREFIX}LOG_LEVEL=info (-v is --log-level info)"}


@dataclass(frozen=True)
class _Settings:
    spec: str | None
    host: str | None
    port: int | None
    loop: str
    trace: bool
    watchdog: float
    log_level: str
    log_format: str | None  # None: the spec's
    metrics: str | None  # None: the spec's
    #: ``--set`` items with where each came from (for errors): the environment's
    #: first, so the command line's win for a name given in both.
    sets: list[tuple[str, str]]


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> _Settings:
    """``run``'s options, each from the command line, else its variable, else None.

    Raises:
        _Usage: a value that does not parse, naming its option or variable.
    """
    values: dict[str, Any] = {}
    sets: list[tuple[str, str]] = []
    for dest, parse in _OPTIONS.items():
        given = getattr(args, dest)
        var = ENV_PREFIX + dest.upper()
        raw = env.get(var, "")
        if dest == "set":
            sets += [(f"{var} item {item!r}", item) for item in _items(raw)]
            sets += [(f"--set {item!r}", item) for item in given or ()]
            continue
        where = f"--{dest.replace('_', '-')} {given}"
        if given is None and raw:  # an empty variable is an unset one
            given, where = raw, f"{var}={raw!r}"
        if isinstance(given, str) and parse is not _text:
            try:
                given = parse(given)
            except ValueError as exc:
                raise _Usage(f"{where}: {exc}") from None
        values[dest] = given
    return _Settings(
        spec=values["spec"],
        host=values["host"],
        port=values["port"],
        loop=values["loop"] or "asyncio",
        trace=bool(values["trace"]),
        watchdog=DEFAULT_WATCHDOG if values["watchdog"] is None else values["watchdog"],
        # Every transition is logged at info, the events around them at debug.
        log_level="debug" if values["trace"] else values["log_level"] or DEFAULT_LEVEL,
        log_format=values["log_format"],
        metrics=values["metrics"],
        sets=sets,
    )


def _unknown(env: Mapping[str, str]) -> list[str]:
    """A warning for each variable of our prefix that names no option."""
    known = [ENV_PREFIX + dest.upper() for dest in _OPTIONS]
    warnings = []
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in known:
            instead = _INSTEAD.get(var.removeprefix(ENV_PREFIX))
            near = f" (set {instead} instead)" if instead else hint(var, known)
            warnings.append(f"{var} is not a setting{near}: ignored")
    return warnings


def _typed(value: str, default: Any) -> Any:
    """``--set``'s text as the type of the spec's own value for that name: a
    number stays a number (so ``--set max_size=abc`` is refused at start, not by
    every connection), a boolean a boolean; anything else is text."""
    if isinstance(default, bool):
        if value.lower() not in _TRUE:
            raise ValueError("expected true or false")
        return _TRUE[value.lower()]
    if isinstance(default, int):
        if not value.lstrip("-").isascii() or not value.lstrip("-").isdigit():
            raise ValueError("expected an integer")
        return int(value)
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    return value


def _heap(sets: list[tuple[str, str]], heap: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` items as typed server heap values.

    Raises:
        _Usage: an item that is not NAME=VALUE, names nothing in the spec's
            ``server.heap``, or does not fit the type of the spec's value.
    """
    overrides: dict[str, Any] = {}
    for where, item in sets:
        name, eq, value = item.partition("=")
        if not eq or not name.isidentifier():
            raise _Usage(f"{where}: expected NAME=VALUE")
        if name not in heap:
            # A typo here would leave the spec's own value (a password...) in force.
            known = ", ".join(sorted(heap)) or "none"
            raise _Usage(f"{where}: the spec's server.heap has no {name!r}"
                         f"{hint(name, heap)} (it has: {known})")  # fmt: skip
        try:
            overrides[name] = _typed(value, heap[name])
        except ValueError as exc:
            raise _Usage(f"{where}: {exc} (the spec's server.heap.{name} is "
                         f"{heap[name]!r})") from None  # fmt: skip
    return overrides


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        settings = _settings(args, env)
    except _Usage as exc:
        return _fail(str(exc))
    logs.configure(settings.log_level, settings.log_format or "text")
    for warning in _unknown(env):
        log.warning("%s", warning)
    json_errors = settings.log_format == "json"
    server: dict[str, Any] = {}
    if settings.log_format is not None:
        server["log"] = {"format": settings.log_format}
    if settings.metrics is not None:
        server["metrics"] = settings.metrics
    try:
        loop_factory(settings.loop)
        spec = load_spec(settings.spec or builtin_spec_path(), server=server or None)
    except (SpecError, ValueError) as exc:
        return _fail(exc, json=json_errors)
    # The spec may choose JSON, and name what reports must not show.
    log_settings = spec.server.log
    logs.configure(settings.log_level, log_settings.format, redact=log_settings.redact)
    json_errors = log_settings.format == "json"
    # The spec's program lives as long as the server: full collections while it
    # serves need not walk it again (a large spec is a million objects).
    gc.freeze()
    try:
        overrides = _heap(settings.sets, spec.server.heap)
    except _Usage as exc:
        return _fail(str(exc), json=json_errors)
    if spec.server.path is not None and (settings.host is not None or settings.port is not None):
        return _fail(f"--host/--port: the spec listens on a Unix socket (path: {spec.server.path})",
                     json=json_errors)  # fmt: skip
    # Log lines carry client bytes; undecodable ones are written back as they came.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    kernel = Kernel(trace=settings.trace, watchdog=settings.watchdog)
    console = ConsoleLog(kernel, max_line=log_settings.max_length)
    try:
        build_server(
            spec,
            kernel,
            host=settings.host,
            port=settings.port,
            console=console,
            on_started=_announce_json if json_errors else _announce,
            heap=overrides,
        )
    except SpecError as exc:  # server.tls's files do not load
        return _fail(exc, EXIT_FAILURE, json=json_errors)
    except OSError as exc:
        # The metrics endpoint's error says it is its address (observe.endpoint).
        metrics = getattr(exc, "metrics_address", None)
        where = f"the metrics address {metrics}" if metrics else _where(spec, settings)
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}",
                     EXIT_FAILURE, json=json_errors)  # fmt: skip
    try:
        kernel.run(loop=settings.loop, drain_timeout=spec.server.limits.drain_timeout)
    finally:
        console.close()
    return 0


def _where(spec: Spec, settings: _Settings) -> str:
    """The address ``run`` was to listen on."""
    if spec.server.path is not None:
        return str(beside_spec(spec, spec.server.path))
    host = settings.host or spec.server.host
    return f"{host}:{spec.server.port if settings.port is None else settings.port}"


def _announce(server: TCPServer) -> None:
    print(f"listening on {server.path or f'{server.host}:{server.port}'}", flush=True)


def _announce_json(server: TCPServer) -> None:
    # stdout holds the spec's JSON log lines: the first line is one of them too.
    where = server.path or f"{server.host}:{server.port}"
    print(logs.json_line({
        "time": logs.iso_time(time.time()), "level": "info",
        "logger": "statemachine_server", "message": f"listening on {where}",
    }), flush=True)  # fmt: skip


def _fail(problem: str | Exception, status: int = EXIT_USAGE, *, json: bool = False) -> int:
    """Report ``problem``, one line per error, on stderr (as log records in JSON
    format: stderr then holds nothing but JSON); returns ``status``."""
    errors = problem.errors if isinstance(problem, SpecError) else [problem]
    for error in errors:
        line = error.where_and_what() if isinstance(error, SpecError) else str(error)
        if json:
            log.error("%s", line)
        else:
            print(f"statemachine-server: {line}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
