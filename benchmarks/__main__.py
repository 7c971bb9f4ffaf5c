"""``python -m benchmarks [SCENARIO...] [options]``: run scenarios, write and print results.

Progress goes to stderr; the markdown summary of each scenario goes to stdout.
Exit status: 0 when every run of every available peer produced a figure, 1 when
some run failed (see the warnings in the report), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from . import loadgen, report
from .machine import REPO_ROOT, machine_info, pin_harness, plan_pinning
from .results import Context, Options
from .scenarios import GROUPS, SCENARIOS
from .servers import EXTRA_PEERS, PEERS

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
DEFAULTS = {"seconds": 5.0, "warmup": 1.5, "repeat": 5}
QUICK = {"seconds": 0.5, "warmup": 0.25, "repeat": 1}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare statemachine_server with other line-echo servers.",
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO",
        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}; "
        + "; ".join(f"{group} runs {', '.join(names)}" for group, names in GROUPS.items()),
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="one short repetition (a smoke test, not a measurement)",
    )  # fmt: skip
    parser.add_argument(
        "--peers", metavar="NAME,...",
        help=f"peers to run (default: {','.join(PEERS)}; also: {','.join(EXTRA_PEERS)})",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT,
        help="directory for results (default: benchmarks/results/)",
    )  # fmt: skip
    parser.add_argument(
        "--seconds", type=float,
        help=f"measured seconds per run (default {DEFAULTS['seconds']:g}, "
        f"quick {QUICK['seconds']:g}); the soak's duration (default 60, quick 5)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=float,
        help=f"warm-up seconds per run (default {DEFAULTS['warmup']:g}, quick {QUICK['warmup']:g})",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int,
        help=f"runs per peer (default {DEFAULTS['repeat']}, quick {QUICK['repeat']})",
    )  # fmt: skip
    parser.add_argument(
        "--loadgen", choices=("auto", "c", "python"), default="auto",
        help="load generator: the C client if it compiles (auto), or force one",
    )  # fmt: skip
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    return parser


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    base = QUICK if args.quick else DEFAULTS
    seconds = args.seconds if args.seconds is not None else base["seconds"]
    warmup = args.warmup if args.warmup is not None else base["warmup"]
    repeat = args.repeat if args.repeat is not None else int(base["repeat"])
    if not 0 < seconds <= 3600:
        parser.error("--seconds must be in (0, 3600]")
    if not 0 <= warmup <= 600:
        parser.error("--warmup must be in [0, 600]")
    if not 1 <= repeat <= 100:
        parser.error("--repeat must be 1 to 100")
    return Options(
        seconds=seconds, warmup=warmup, repeat=repeat, quick=args.quick,
        seconds_given=args.seconds,
    )  # fmt: skip


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so every `finally` runs and stops its server.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(arguments)
    unknown = [s for s in args.scenarios if s not in SCENARIOS and s not in GROUPS]
    if unknown:
        known_names = ", ".join([*SCENARIOS, *GROUPS])
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {known_names}")
    chosen = list(dict.fromkeys(n for s in args.scenarios for n in GROUPS.get(s, [s])))
    known = PEERS | EXTRA_PEERS
    names = [n.strip() for n in args.peers.split(",") if n.strip()] if args.peers else list(PEERS)
    bad = [n for n in names if n not in known]
    if bad or not names:
        parser.error(f"unknown peer {', '.join(bad) or '(none)'}; known: {', '.join(known)}")
    options = _options(args, parser)
    signal.signal(signal.SIGTERM, _terminate)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    out_dir: Path = args.out.resolve()
    try:
        gen = loadgen.prepare(out_dir / ".cache", args.loadgen)
    except RuntimeError as exc:
        progress(str(exc))
        return 2
    pinning = plan_pinning(enabled=not args.no_pin)
    pin_harness(pinning)
    ctx = Context(
        out_dir=out_dir,
        logs_dir=out_dir / "logs",
        loadgen=gen,
        pinning=pinning,
        machine=machine_info(),
        command=shlex.join(["python", "-m", "benchmarks", *arguments]),
        progress=progress,
    )
    progress(f"load generator: {gen.kind} ({gen.note}); pinning: {pinning.note}")
    peers = [known[n] for n in names]
    status = 0
    for name in chosen or list(SCENARIOS):
        result = SCENARIOS[name].run(ctx, peers, options)
        json_path, md_path, markdown = report.write(result, ctx)
        print(markdown, flush=True)
        progress(f"{name}: wrote {json_path} and {md_path}")
        if result.failed_runs() or any(p.status == "failed" for p in result.peers):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
