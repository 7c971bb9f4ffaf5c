"""``statemachine-server test``: run conversation scripts against a spec, or explore it.

::

    statemachine-server test SPEC [SCRIPT...] [--set NAME=VALUE] [-v]
    statemachine-server test SPEC --explore [--write DIR] [--budget N] [--set NAME=VALUE]

With scripts, each runs on a server of its own (:mod:`.conversation`); with
none, the ``*.conv`` files beside the spec whose ``spec:`` header names it are
run. A failure prints the script's ``FILE:LINE``, what was expected and what
came, and the spec rule that answered. Exit status: 0 when every script
passed, 1 when one failed, 2 for a spec or a script that cannot be read.

``--explore`` generates conversations instead (:mod:`.explore`), prints the
coverage of states, rules, transitions and state timeouts, what was not
reached and why, and every warning or error the server logged; ``--write DIR``
saves the conversations that reached something new as scripts. It exits 1 if
a handler raised or a conversation left something behind (a record over the
limit, sent on purpose, is a protocol error the server is meant to log).
Exploring runs in a fresh temporary directory, so a spec that writes files
relative to where it runs writes them there.

The command line (``cli.py``) adds this subcommand with :func:`add_parser`
and runs it with :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..errors import SpecError
from .codec import show
from .conversation import Outcome, run_script
from .explore import DEFAULT_BUDGET, Exploration, explore
from .harness import Loaded, load
from .script import Script, ScriptError, read_script, render

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``test`` subcommand to ``subparsers`` (``add_subparsers()``'s result)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "test",
        help="run conversation scripts against a spec, or explore it (exit 1 on a failure)",
        description="Run conversation scripts (docs/testing.md) against SPEC, each on a fresh "
        "server in memory with a virtual clock; or, with --explore, generate conversations "
        "that reach its states and rules, and report their coverage.",
    )
    parser.add_argument("spec", metavar="SPEC", help="the spec file")
    parser.add_argument(
        "scripts",
        nargs="*",
        metavar="SCRIPT",
        help="conversation scripts (default: the *.conv beside SPEC that name it)",
    )
    parser.add_argument(
        "--explore", action="store_true", help="generate conversations and report coverage"
    )
    parser.add_argument(
        "--write",
        metavar="DIR",
        help="with --explore: save the conversations kept as scripts in DIR",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_BUDGET,
        metavar="N",
        help=f"with --explore: at most N conversations (default {DEFAULT_BUDGET})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server.heap value (YAML; {tmp} is a fresh folder)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also list passing scripts' server warnings, and every conversation explored",
    )
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the ``test`` subcommand; returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    sets: list[str] = list(args.set or [])
    for item in sets:
        if "=" not in item:
            err.write(f"--set {item!r}: expected NAME=VALUE\n")
            return EXIT_BAD_INPUT
    with _quiet_server_logs():
        if args.explore:
            return _explore(args, sets, out, err)
        return _scripts(args, sets, out, err)


@contextlib.contextmanager
def _quiet_server_logs() -> Iterator[None]:
    # The server's warnings are collected per script and conversation and shown
    # with it, not interleaved on stderr as they happen.
    logger = logging.getLogger("statemachine_server")
    propagate, level = logger.propagate, logger.level
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.propagate, logger.level = propagate, level


def _heap(sets: list[str], tmp: str) -> dict[str, Any]:
    heap: dict[str, Any] = {}
    for item in sets:
        name, _, text = item.partition("=")
        text = text.replace("{tmp}", tmp)
        try:
            heap[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            heap[name] = text
    return heap


# -- scripts ------------------------------------------------------------------------------


def _scripts(args: argparse.Namespace, sets: list[str], out: TextIO, err: TextIO) -> int:
    spec_path = Path(args.spec)
    try:
        load(spec_path)  # a bad spec is exit 2 before any script runs
    except SpecError as exc:
        err.write(f"{exc}\n")
        return EXIT_BAD_INPUT
    try:
        names = [Path(s) for s in args.scripts] or _beside(spec_path)
        scripts = [read_script(name) for name in names]
    except ScriptError as exc:
        err.write(f"{exc}\n")
        return EXIT_BAD_INPUT
    if not scripts:
        err.write(f"{spec_path}: no scripts given, and no *.conv beside it names it\n")
        return EXIT_BAD_INPUT
    failed = 0
    with asyncio.Runner() as runner, tempfile.TemporaryDirectory(prefix="conv-") as tmp:
        for script in scripts:
            if sets:
                script.heap.update(
                    {
                        n: t.replace("{tmp}", tmp)
                        for n, _, t in (item.partition("=") for item in sets)
                    }
                )
            try:
                outcome = runner.run(run_script(script, spec_path))
            except SpecError as exc:  # the script's own server: settings
                err.write(f"{script.file}: {exc}\n")
                return EXIT_BAD_INPUT
            failed += not outcome.ok
            _report(outcome, args.verbose, out)
    total = len(scripts)
    out.write(
        f"{total} script{'s' if total != 1 else ''}: {total - failed} passed"
        + (f", {failed} failed" if failed else "")
        + "\n"
    )
    return EXIT_FAILED if failed else EXIT_OK


def _beside(spec: Path) -> list[Path]:
    """The scripts beside ``spec`` whose ``spec:`` header names it."""
    found = []
    for path in sorted(spec.resolve().parent.glob("*.conv")):
        try:
            script: Script = read_script(path)
        except ScriptError:
            continue
        if script.spec is not None and script.spec.resolve() == spec.resolve():
            found.append(path)
    return found


def _report(outcome: Outcome, verbose: bool, out: TextIO) -> None:
    script = outcome.script
    if outcome.ok:
        out.write(f"PASS {script.file} ({outcome.steps} steps)\n")
    else:
        out.write(f"FAIL {outcome.failure}\n")
    if outcome.problems and (verbose or not outcome.ok):
        out.write("  the server logged:\n")
        out.writelines(f"    {p}\n" for p in outcome.problems)


# -- explore ----------------------------------------------------------------------------


def _explore(args: argparse.Namespace, sets: list[str], out: TextIO, err: TextIO) -> int:
    spec_path = Path(args.spec).resolve()
    try:
        loaded = load(spec_path)
    except SpecError as exc:
        err.write(f"{exc}\n")
        return EXIT_BAD_INPUT
    shown = Loaded(loaded.spec, args.spec, loaded.text)  # rules named as the user named the spec
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="explore-") as tmp:
        os.chdir(tmp)
        try:
            result = asyncio.run(explore(shown, heap=_heap(sets, tmp), budget=args.budget))
        finally:
            os.chdir(here)
    failed = _coverage(result, args.verbose, out)
    if args.write:
        folder = Path(args.write)
        folder.mkdir(parents=True, exist_ok=True)
        spec_rel = os.path.relpath(spec_path, folder.resolve())
        for number, trace in enumerate(result.kept, 1):
            text = render(
                trace.steps,
                spec=spec_rel,
                comment=(
                    f"Generated by `statemachine-server test {args.spec} --explore`: {trace.goal}"
                ),
                heap={item.partition("=")[0]: item.partition("=")[2] for item in sets},
            )
            (folder / f"test_explored_{number:03d}.conv").write_text(text, encoding="utf-8")
        out.write(f"wrote {len(result.kept)} scripts to {folder}\n")
    return EXIT_FAILED if failed else EXIT_OK


def _short(kind: str, value: Any) -> str:
    if kind == "advance":
        return f"~{value:g}s"
    text = show(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _coverage(result: Exploration, verbose: bool, out: TextIO) -> bool:
    """Print the report; whether a handler raised or something was left behind."""
    traces = result.traces
    out.write(
        f"{result.loaded.file}: {len(traces)} conversations, {len(result.kept)} kept, "
        f"in {result.seconds:.2f} s\n"
    )
    for name, (hit, total) in result.figures().items():
        share = f"{100 * hit // total}%" if total else "none declared"
        out.write(f"  {name:<15}{hit:>4}/{total:<4} {share}\n")
    rules = {p.index: p for p in result.rules}
    missing = [(rules[i], why) for i, why in result.reasons.items() if i not in result.hit]
    if missing or result.unreached_states:
        out.write("not reached:\n")
        for state, why in result.unreached_states.items():
            out.write(f"  state {state}: {why}\n")
        for point, why in sorted(missing, key=lambda item: item[0].index):
            out.write(f"  {point}: {why}\n")
    failed = False
    seen: set[str] = set()
    met: list[str] = []
    for number, trace in enumerate(traces, 1):
        for problem in trace.problems:
            bad = not problem.startswith("warning:")
            failed = failed or bad
            key = problem.split(": ", 1)[-1]
            if key not in seen:
                seen.add(key)
                met.append(f"  conversation {number} ({trace.goal}): {problem}")
    if met:
        out.write("problems met:\n")
        out.writelines(f"{line}\n" for line in met)
    if verbose:
        out.write("conversations:\n")
        for number, trace in enumerate(traces, 1):
            sent = ", ".join(
                _short(kind, v) for kind, v in trace.steps if kind in ("send", "raw", "advance")
            )
            out.write(f"  {number}. {trace.goal}{' (kept)' if trace.new else ''}: {sent}\n")
    return failed
