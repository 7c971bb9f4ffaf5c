"""The large-lines scenarios: 4 KiB and 64 KiB lines, a window of 4 per connection.

50 connections; each keeps 4 lines of 4 KiB (``large-4k``) or 64 KiB
(``large-64k``) in flight, as the streaming scenarios do with 64-byte lines: the
bytes of a line now outnumber its fixed costs, so this measures the per-byte part
of the path (reads, framing, decoding and encoding, writes). A window of 4 rather
than one line at a time, so the server always has input waiting while an echo
travels back. A line is LINE_BYTES - 1 characters and ``\\n``. ``large`` on the
command line runs both.

Line limits, raised alike to 1 MiB where they are below or at the line size:
Twisted's ``LineReceiver.MAX_LENGTH`` (16 KiB) through ``peers/twisted_lines.py``'s
second argument; our spec peers run a copy of the built-in echo spec with
``server.filter.max_length: 1048576`` (the shipped 65536 bytes, the separator not
counted, would admit the 64 KiB line exactly, at its edge), written at run time
under ``<out>/.cache/``. ``ours-python`` (``examples/echo_server.py``) takes no
option and keeps ``LineFilter``'s default 65536, which admits both sizes. The
asyncio peers have no limit; POE's filter is used as the recipe has it.

Figure: echoed lines per second (median of the runs) and the same in MB/s (echoed
bytes, one direction); ratios to asyncio-raw and twisted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from ..machine import REPO_ROOT
from ..results import Context, Options, Run, ScenarioResult
from ..servers import Peer
from . import streaming
from .common import add_peers, new_result, round_robin

GROUP = "large"
UNIT = "lines/s"
CONNECTIONS = 50
DEPTH = 4
SIZES = {"4k": 4 * 1024, "64k": 64 * 1024}
#: The line limit given to every peer that has one below or at the line size.
MAX_LENGTH = 1 << 20
ECHO_SPEC = REPO_ROOT / "statemachine_server" / "specs" / "echo.yaml"
SPEC_PEERS = ("ours-spec", "ours-spec-uvloop", "ours-spec-base")

RunFn = Callable[[Context, list[Peer], Options], ScenarioResult]


def name(size: str) -> str:
    return f"{GROUP}-{size}"


def title(size: str) -> str:
    kib = size.removesuffix("k")
    return f"Large lines: {kib} KiB lines, {DEPTH} in flight on each of {CONNECTIONS} connections"


def description(size: str) -> str:
    return (
        f"{CONNECTIONS} connections, each keeping {DEPTH} lines of {SIZES[size]:,} bytes "
        f"({SIZES[size] - 1:,} characters + newline) in flight, as the streaming scenarios do; "
        "figure = echoed lines per second (median of the runs), also in MB/s (echoed bytes). "
        f"Line limits raised to {MAX_LENGTH:,} bytes for twisted and our spec peers."
    )


def runner(size: str) -> RunFn:
    """The ``run(ctx, peers, options)`` of ``large-SIZE``."""
    line_bytes = SIZES[size]

    def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
        scenario = name(size)
        settings = {
            "connections": CONNECTIONS,
            "depth": DEPTH,
            "line_bytes": line_bytes,
            "max_length": MAX_LENGTH,
        }
        result = new_result(scenario, title(size), description(size), UNIT, options, settings)
        try:
            chosen = with_raised_limits(peers, ctx.out_dir / ".cache")
        except (OSError, ValueError) as exc:
            result.problems.append(f"cannot make the echo spec with a raised line limit: {exc}")
            return result
        runnable = add_peers(ctx, result, chosen)

        def measure(peer: Peer, repetition: int) -> Run:
            return streaming.measure_stream(ctx, peer, options, scenario, repetition,
                                            connections=CONNECTIONS, depth=DEPTH,
                                            line_bytes=line_bytes)  # fmt: skip

        def show(r: Run) -> str:
            return f"{streaming.show_stream(r)}, {r.metrics['mb_s']:,.1f} MB/s"

        round_robin(ctx, result, runnable, options, measure, show)
        result.table = streaming.table(result, mb_s=True)
        return result

    return run


#: (name, title, run) of every large-lines scenario, in the order they run.
VARIANTS: list[tuple[str, str, RunFn]] = [(name(s), title(s), runner(s)) for s in SIZES]


def spec_copy(cache_dir: Path) -> Path:
    """The built-in echo spec with ``max_length`` raised to :data:`MAX_LENGTH`, on disk.

    Raises:
        ValueError: the spec does not set ``max_length`` exactly once.
    """
    text, count = re.subn(
        r"(?m)^(\s+max_length:\s*)\d+", rf"\g<1>{MAX_LENGTH}", ECHO_SPEC.read_text()
    )
    if count != 1:
        raise ValueError(f"{ECHO_SPEC} sets max_length {count} times, expected once")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"echo-max-length-{MAX_LENGTH}.yaml"
    path.write_text(text)
    return path


def with_raised_limits(peers: list[Peer], cache_dir: Path) -> list[Peer]:
    """The peers, twisted and our spec peers given a line limit of :data:`MAX_LENGTH`."""
    spec: Path | None = None
    out: list[Peer] = []
    for peer in peers:
        if peer.name == "twisted":
            peer = dataclasses.replace(
                peer,
                argv=(*peer.argv, str(MAX_LENGTH)),
                description=f"{peer.description}; MAX_LENGTH = {MAX_LENGTH:,}",
            )
        elif peer.name in SPEC_PEERS and "run" in peer.argv:
            spec = spec or spec_copy(cache_dir)
            at = peer.argv.index("run") + 1
            peer = dataclasses.replace(
                peer,
                argv=(*peer.argv[:at], str(spec), *peer.argv[at:]),
                description=f"{peer.description}; the echo spec with max_length {MAX_LENGTH:,}",
            )
        out.append(peer)
    return out
