"""The command line: parse arguments, load the spec, start the kernel. Nothing else.

``statemachine-server run [SPEC]`` serves a spec (the built-in echo server by
default); ``check SPEC...`` validates specs (``--show-code``: and prints the
Python generated for them); ``graph [SPEC]`` prints the machine
(the connection lifecycle, with the spec's protocol states inside ``reading``) as
a Mermaid or DOT diagram. Exit status: 0 on success and after a graceful shutdown,
2 for a bad spec or bad arguments, and when the server cannot listen or its TLS
certificate does not load (one line per error on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .console import ConsoleLog
from .core import lifecycle
from .core.kernel import Kernel
from .core.running import DEFAULT_WATCHDOG, loop_factory
from .errors import SpecError
from .language import build_server, builtin_spec_path, load_spec, load_spec_text
from .language.build import beside_spec
from .language.graph import draw
from .language.report import hint
from .net.server import TCPServer

__all__ = ["main"]

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statemachine-server",
        description="Multi-client servers: one kernel, one state machine per connection.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a spec (the built-in echo server by default)")
    run.add_argument("spec", nargs="?", help="a YAML spec file")
    run.add_argument("--host", help="address to listen on (overrides the spec)")
    run.add_argument("--port", type=int, help="port to listen on; 0 picks a free one")
    run.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    run.add_argument("--trace", action="store_true", help="log every state transition")
    run.add_argument(
        "--watchdog",
        type=float,
        default=DEFAULT_WATCHDOG,
        metavar="SECONDS",
        help="log the stack of a handler, call or work step that holds the event loop "
        f"this long, and interrupt work steps past their timeout (default {DEFAULT_WATCHDOG:g}; "
        "0: off)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    run.add_argument(
        "--set",
        action="append",
        default=[],
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
    if args.command == "check":
        return _check(args.specs, args.show_code)
    if args.command == "graph":
        return _graph(args.spec, args.format)
    return _run(args)


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


_TRUE = {"true": True, "yes": True, "on": True, "1": True,
         "false": False, "no": False, "off": False, "0": False}  # fmt: skip


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


def _run(args: argparse.Namespace) -> int:
    level = logging.DEBUG if args.trace else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(message)s")
    if args.port is not None and not 0 <= args.port <= 65535:
        return _fail(f"--port {args.port}: expected 0 to 65535")
    if not args.watchdog >= 0:
        return _fail(f"--watchdog {args.watchdog:g}: expected 0 (off) or a number of seconds")
    try:
        loop_factory(args.loop)
        spec = load_spec(args.spec or builtin_spec_path())
    except (SpecError, ValueError) as exc:
        return _fail(exc)
    # The spec's program lives as long as the server: full collections while it
    # serves need not walk it again (a large spec is a million objects).
    gc.freeze()
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, eq, value = item.partition("=")
        if not eq or not name.isidentifier():
            return _fail(f"--set {item!r}: expected NAME=VALUE")
        if name not in spec.server.heap:
            # A typo here would leave the spec's own value (a password...) in force.
            known = ", ".join(sorted(spec.server.heap)) or "none"
            return _fail(f"--set {item!r}: the spec's server.heap has no {name!r}"
                         f"{hint(name, spec.server.heap)} (it has: {known})")  # fmt: skip
        try:
            overrides[name] = _typed(value, spec.server.heap.get(name))
        except ValueError as exc:
            return _fail(f"--set {item!r}: {exc} (the spec's server.heap.{name} is "
                         f"{spec.server.heap[name]!r})")  # fmt: skip
    if spec.server.path is not None and (args.host is not None or args.port is not None):
        return _fail(f"--host/--port: the spec listens on a Unix socket (path: {spec.server.path})")
    # Log lines carry client bytes; undecodable ones are written back as they came.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    kernel = Kernel(trace=args.trace, watchdog=args.watchdog)
    console = ConsoleLog(kernel, max_line=spec.server.log.max_length)
    try:
        build_server(
            spec,
            kernel,
            host=args.host,
            port=args.port,
            console=console,
            on_started=_announce,
            heap=overrides,
        )
    except SpecError as exc:  # server.tls's files do not load
        return _fail(exc)
    except OSError as exc:
        host = args.host or spec.server.host
        port = spec.server.port if args.port is None else args.port
        path = spec.server.path
        where = f"{host}:{port}" if path is None else beside_spec(spec, path)
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}")
    try:
        kernel.run(loop=args.loop, drain_timeout=spec.server.limits.drain_timeout)
    finally:
        console.close()
    return 0


def _announce(server: TCPServer) -> None:
    print(f"listening on {server.path or f'{server.host}:{server.port}'}", flush=True)


def _fail(problem: str | Exception) -> int:
    errors = problem.errors if isinstance(problem, SpecError) else [problem]
    for error in errors:
        line = error.where_and_what() if isinstance(error, SpecError) else str(error)
        print(f"statemachine-server: {line}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
