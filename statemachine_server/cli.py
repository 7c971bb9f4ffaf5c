"""The command line: parse arguments and environment, load the spec, start the kernel. Nothing else.

``statemachine-server run [SPEC]`` serves a spec (the built-in echo server by
default); ``check SPEC...`` validates specs (``--show-code``: and prints the
Python generated for them); ``graph [SPEC]`` prints the machine
(the connection lifecycle, with the spec's protocol states inside ``reading``) as
a Mermaid or DOT diagram; ``test SPEC [SCRIPT...]`` runs conversation scripts
against a spec, or explores it (``--explore``: :mod:`.testkit`).

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

``run --workers N`` (N > 1) hands the checked spec to a supervisor of N worker
processes, each of them ``run`` again with ``--worker-of``; SIGHUP reloads the
spec, in place with one worker (:mod:`statemachine_server.scale`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, logs, scale
from .console import ConsoleLog
from .core import lifecycle
from .core.kernel import Kernel
from .core.running import DEFAULT_WATCHDOG, loop_factory
from .core.running import run as serve
from .errors import SpecError
from .language import build_server, builtin_spec_path, load_spec, load_spec_text
from .language.build import beside_spec
from .language.compile import uses_groups
from .language.graph import draw
from .language.model import Spec
from .language.report import hint, one_line
from .net.listen import Listener, adopting, inherit, set_reuse_port
from .net.server import TCPServer
from .scale import Load, Loaded, Reloader, Sockets, Supervisor, WorkerLink
from .testkit import command as testkit_command

__all__ = ["ENV_PREFIX", "EXIT_FAILURE", "EXIT_USAGE", "main"]

log = logging.getLogger("statemachine_server")

#: The server failed (cannot listen, TLS files that do not load, a crash).
EXIT_FAILURE = 1
#: Bad arguments, environment or spec: nothing was started.
EXIT_USAGE = 2
#: The prefix of ``run``'s environment variables.
ENV_PREFIX = "STATEMACHINE_SERVER_"
LOOPS = ("auto", "asyncio", "uvloop")
DEFAULT_LEVEL = "warning"


class _Usage(ValueError):
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
    run.add_argument(
        "--loop", choices=LOOPS, help="event loop (default auto: uvloop if installed, else asyncio)"
    )
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
    run.add_argument(
        "--workers",
        metavar="N",
        help="worker processes sharing the port, each with a kernel of its own, under a "
        "supervisor; auto: one per CPU (default 1: no supervisor). See docs/scaling.md",
    )
    run.add_argument(
        "--bus",
        metavar="URL",
        help="carry groups across processes on this Redis server, redis://HOST:PORT/DB "
        "(overrides the spec's server.bus)",
    )
    run.add_argument(
        "--fd",
        metavar="N",
        help="serve the listening socket inherited on this file descriptor instead of "
        "binding (systemd's LISTEN_FDS is read too)",
    )
    run.add_argument("--worker-of", help=argparse.SUPPRESS)  # set by the supervisor

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
    testkit_command.add_parser(sub)
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
        if args.command == "test":
            return testkit_command.run(args)
        return _run(args, os.environ, list(sys.argv[1:] if argv is None else argv))
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


def _server_setting(key: str) -> Callable[[str], str]:
    # Checked as server.KEY is in a spec: one rule for both.
    def parse(value: str) -> str:
        try:
            load_spec_text("{}", f"<{key}>", server={key: value})
        except SpecError as exc:
            reason = re.sub(rf" at \$\.server\.{key}$", "", exc.errors[0].message)
            raise ValueError(re.sub(rf"^{key} '.*?': ", "", reason)) from None
        return value

    return parse


def _workers(value: str) -> int:
    if value == "auto":
        affinity = getattr(os, "sched_getaffinity", None)
        return len(affinity(0)) if affinity else os.cpu_count() or 1
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 1024:
        raise ValueError("expected 1 to 1024, or auto (one per CPU)")
    return int(value)


def _fd(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError("expected a file descriptor number")
    return int(value)


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
    "metrics": _server_setting("metrics"),
    "set": _items,
    "workers": _workers,
    "bus": _server_setting("bus"),
    "fd": _fd,
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
    workers: int = 1
    bus: str | None = None  # None: the spec's
    fd: int | None = None  # an inherited listening socket


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
        loop=values["loop"] or "auto",
        trace=bool(values["trace"]),
        watchdog=DEFAULT_WATCHDOG if values["watchdog"] is None else values["watchdog"],
        # Every transition is logged at info, the events around them at debug.
        log_level="debug" if values["trace"] else values["log_level"] or DEFAULT_LEVEL,
        log_format=values["log_format"],
        metrics=values["metrics"],
        sets=sets,
        workers=values["workers"] or 1,
        bus=values["bus"],
        fd=values["fd"],
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


def _run(args: argparse.Namespace, env: Mapping[str, str], raw: Sequence[str]) -> int:
    try:
        settings = _settings(args, env)
        link = None if args.worker_of is None else _link(args.worker_of)
    except _Usage as exc:
        return _fail(str(exc))
    if link is not None:
        link.obey_stop()
    logs.configure(settings.log_level, settings.log_format or "text")
    if link is None:  # (a worker's supervisor has said it)
        for warning in _unknown(env):
            log.warning("%s", warning)
    json_errors = settings.log_format == "json"
    server: dict[str, Any] = {}
    if settings.log_format is not None:
        server["log"] = {"format": settings.log_format}
    if settings.metrics is not None:
        server["metrics"] = settings.metrics
    if settings.bus is not None:
        server["bus"] = settings.bus
    workers = 1 if link is not None else settings.workers
    path = settings.spec or builtin_spec_path()
    try:
        loop_factory(settings.loop)
        sock = _inherited(settings, link)
        if link is not None:  # exactly what the supervisor checked
            source = link.read_spec()
            spec = load_spec_text(source.decode(), str(path), base_dir=Path(path).resolve().parent,
                                  server=server or None)  # fmt: skip
        else:
            source = _read(path) if workers > 1 else b""
            spec = load_spec(path, server=server or None)
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
        loaded = _checked(spec, settings, workers, source)
    except _Usage as exc:
        return _fail(str(exc), json=json_errors)
    if (
        sock is None
        and spec.server.path is not None
        and (settings.host is not None or settings.port is not None)
    ):
        return _fail(f"--host/--port: the spec listens on a Unix socket (path: {spec.server.path})",
                     json=json_errors)  # fmt: skip
    # A reload keeps the log format run started with (one format per stream).
    again = {**server, "log": {"format": log_settings.format}}

    def load_again() -> Loaded:
        source = _read(path) if workers > 1 else b""
        return _checked(load_spec(path, server=again), settings, workers, source)

    if workers > 1:
        return _supervise(loaded, load_again, settings, sock, raw, json_errors)
    return _serve_one(loaded, load_again, settings, sock, link, json_errors)


def _link(token: str) -> WorkerLink:
    try:
        return WorkerLink.parse(token)
    except ValueError as exc:
        raise _Usage(f"--worker-of {token}: {exc}") from None


def _inherited(settings: _Settings, link: WorkerLink | None) -> Listener | None:
    """The listening socket given to this process: ``--fd``, else systemd's first.

    Raises:
        ValueError: it is not a listening socket, ``--host``/``--port`` are given
            too, or systemd's variables do not parse.
    """
    fd, where = settings.fd, f"--fd {settings.fd}"
    if fd is None and link is None:
        fds = scale.systemd_fds(os.environ)  # (removed: workers and children must not see them)
        if len(fds) > 1:
            log.warning("LISTEN_FDS=%d: serving the first socket (fd %d) only", len(fds), fds[0])
        fd, where = (fds[0], f"LISTEN_FDS (fd {fds[0]})") if fds else (None, "")
    if fd is None:
        return None
    if link is None and (settings.host is not None or settings.port is not None):
        raise _Usage(f"{where}: the listening socket is inherited; --host and --port do not apply")
    try:
        return inherit(fd)
    except ValueError as exc:
        raise _Usage(f"{where}: {exc}") from None


def _read(path: str | Path) -> bytes:
    """The spec file's bytes for the workers (an error is load_spec's to report)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _checked(spec: Spec, settings: _Settings, workers: int, source: bytes) -> Loaded:
    """``spec`` with the ``--set`` values it takes, fit for ``workers`` processes.

    Raises:
        _Usage: a ``--set`` that does not fit, or groups across workers without a bus.
    """
    heap = _heap(settings.sets, spec.server.heap)
    if workers > 1 and spec.server.bus is None and uses_groups(spec):
        raise _Usage(f"--workers {workers}: the spec uses groups (join, leave, broadcast), "
                     "which do not reach from one worker process to another without a bus: "
                     "give it one (--bus redis://HOST:PORT, or server.bus) or run one "
                     "worker")  # fmt: skip
    return Loaded(spec, heap, source)


def _serve_one(
    loaded: Loaded,
    load_again: Load,
    settings: _Settings,
    sock: Listener | None,
    link: WorkerLink | None,
    json_errors: bool,
) -> int:
    """Serve in this process: alone (SIGHUP reloads in place) or as a worker."""
    # Log lines carry client bytes; undecodable ones are written back as they came.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    kernel = Kernel(trace=settings.trace, watchdog=settings.watchdog,
                    session_ids=(1, 1) if link is None else link.session_ids)  # fmt: skip
    console = ConsoleLog(kernel, max_line=loaded.spec.server.log.max_length)
    redact = set(loaded.spec.server.log.redact)

    def build(new: Loaded, on_started: Callable[[TCPServer], Any]) -> TCPServer:
        log_settings = new.spec.server.log
        if not redact.issuperset(log_settings.redact):  # a reload's: what either hides stays so
            redact.update(log_settings.redact)
            logs.configure(settings.log_level, log_settings.format, redact=sorted(redact))
        console.max_line = log_settings.max_length
        return build_server(new.spec, kernel, host=settings.host, port=settings.port,
                            console=console, on_started=on_started, heap=new.heap)  # fmt: skip

    def announce(server: TCPServer) -> None:
        _say_listening(server.path or f"{server.host}:{server.port}", json_errors)

    if link is not None:
        set_reuse_port(True)  # the metrics port: shared with the worker a reload starts
    try:
        with adopting(sock) if sock is not None else contextlib.nullcontext():
            server = build(loaded, announce if link is None else link.ready)
    except SpecError as exc:  # server.tls's files do not load
        return _fail(exc, EXIT_FAILURE, json=json_errors)
    except OSError as exc:
        # The metrics endpoint's error says it is its address (observe.endpoint).
        metrics = getattr(exc, "metrics_address", None)
        where = f"the metrics address {metrics}" if metrics else _where(loaded.spec, settings)
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}",
                     EXIT_FAILURE, json=json_errors)  # fmt: skip
    drain = loaded.spec.server.limits.drain_timeout
    if link is not None:
        link.attach(kernel, drain)
        hangup = link.hangup
    else:
        hangup = Reloader(kernel, server, loaded, load=load_again, build=build)
    try:
        serve(kernel, loop=settings.loop, handle_signals=True, drain_timeout=drain,
              on_hangup=hangup)  # fmt: skip
    finally:
        console.close()
    return 0


def _supervise(
    loaded: Loaded,
    load_again: Load,
    settings: _Settings,
    sock: Listener | None,
    raw: Sequence[str],
    json_errors: bool,
) -> int:
    """Serve with ``settings.workers`` worker processes under this one."""
    spec = loaded.spec
    port = spec.server.port if settings.port is None else settings.port
    path = None if spec.server.path is None else str(beside_spec(spec, spec.server.path))
    try:
        sockets = Sockets.open(sock, path, settings.host or spec.server.host, port,
                               spec.server.limits.backlog)  # fmt: skip
    except OSError as exc:
        return _fail(f"cannot listen on {_where(spec, settings)}: {exc.strerror or exc}",
                     EXIT_FAILURE, json=json_errors)  # fmt: skip
    metrics = None
    if spec.server.metrics is not None:  # the supervisor's: the workers' sum
        try:
            metrics = scale.WorkersMetrics(spec.server.metrics)
        except OSError as exc:
            sockets.close()
            where = getattr(exc, "metrics_address", spec.server.metrics)
            return _fail(f"cannot listen on the metrics address {where}: {exc.strerror or exc}",
                         EXIT_FAILURE, json=json_errors)  # fmt: skip
    # Each worker: this command again, in the format chosen here (a reload keeps it).
    command = [sys.executable, "-m", "statemachine_server", *raw,
               "--log-format", spec.server.log.format]  # fmt: skip
    return Supervisor(
        workers=settings.workers,
        loaded=loaded,
        load=load_again,
        sockets=sockets,
        command=command,
        announce=lambda where: _say_listening(where, json_errors),
        metrics=metrics,
    ).run()


def _where(spec: Spec, settings: _Settings) -> str:
    """The address ``run`` was to listen on."""
    if spec.server.path is not None:
        return str(beside_spec(spec, spec.server.path))
    host = settings.host or spec.server.host
    return f"{host}:{spec.server.port if settings.port is None else settings.port}"


def _say_listening(where: str, json: bool) -> None:
    """stdout's first line, once the server (every worker) listens."""
    if not json:
        print(f"listening on {where}", flush=True)
        return
    # stdout holds the spec's JSON log lines: the first line is one of them too.
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
            # One write: the line stays whole beside other workers' on the same stderr.
            sys.stderr.write(f"statemachine-server: {line}\n")
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
