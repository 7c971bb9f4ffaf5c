"""The soak scenario: mixed and misbehaving traffic against ours-spec, RSS over time.

One server (``ours-spec``), one long run (``--seconds``, default 60, 5 with
``--quick``; ``--repeat`` does not apply). Timeline:

1. warm-up: 1 s of echo traffic; the server's RSS then is the *start*;
2. soak, all at once for ``--seconds``: 20 echo clients in a latency loop and 4
   churn slots (the C client, ``--tolerant``: failures are counted, not fatal),
   one client that floods lines and never reads, one slowloris client sending a
   byte per second; RSS sampled every second;
3. the clients leave; RSS sampled for a few more seconds (*end*: the last);
4. check: 1 s of strict echo traffic, to show the server still answers.

Verdict: RSS at the end within ``max(16 MiB, 25% of start)`` of the start. The
JSON has every sample; a PNG chart is written if matplotlib is importable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import loadgen
from ..clients import Flooder, Slowloris
from ..report import stem
from ..results import Context, Options, Run, ScenarioResult
from ..servers import PEERS, Peer, RunningServer
from .common import add_peers, new_result, now, with_server

NAME = "soak"
TITLE = "Soak: mixed and misbehaving clients against ours-spec, RSS over time"
UNIT = "bytes (RSS end - start)"
SECONDS, SECONDS_QUICK = 60.0, 5.0
ECHO_CONNECTIONS = 20
CHURN_SLOTS = 4
LINE_BYTES = 64
SETTLE_S, SETTLE_S_QUICK = 5, 2  # seconds sampled after the clients leave
MIB = 1024 * 1024
BOUND_MIN = 16 * MIB
BOUND_SHARE = 0.25

Sample = tuple[float, int, str]  # seconds since the start, RSS bytes, phase


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: the soak runs against ours-spec."""
    seconds = options.seconds_given or (SECONDS_QUICK if options.quick else SECONDS)
    settle = SETTLE_S_QUICK if options.quick else SETTLE_S
    description = (
        f"{seconds:g} s against ours-spec of, at once: {ECHO_CONNECTIONS} echo clients "
        f"(latency loop), {CHURN_SLOTS} churn slots, one client flooding lines without "
        "reading, one slowloris client (a byte per second). Server RSS sampled every second."
    )
    settings = {"soak_seconds": seconds, "settle_seconds": settle,
                "echo_connections": ECHO_CONNECTIONS, "churn_slots": CHURN_SLOTS,
                "bound": f"max({BOUND_MIN // MIB} MiB, {BOUND_SHARE:.0%} of start)"}  # fmt: skip
    result = new_result(NAME, TITLE, description, UNIT, options, settings)
    result.method = (
        f"one run: 1 s warm-up, {seconds:g} s soak, {settle} s after the clients left, "
        "then a 1 s strict echo check"
    )
    entries = add_peers(ctx, result, [PEERS["ours-spec"]])
    facts: dict[str, Any] = {}
    for entry in entries:
        one = with_server(
            ctx, entry.peer, NAME, 1,
            lambda srv, r: _soak(ctx, srv, r, seconds, settle, facts),
        )  # fmt: skip
        entry.runs.append(one)
        ctx.progress(f"{NAME}: {'FAILED: ' + one.error if one.error else 'done'}")
    result.finished = now()
    result.extra = facts
    result.table = _table(facts)
    _verdict(result, facts)
    chart = _chart(facts.get("samples", []), stem(result, ctx).with_suffix(".png"))
    result.notes.append(chart)
    return result


def _soak(
    ctx: Context, srv: RunningServer, run: Run, seconds: float, settle: int,
    facts: dict[str, Any],
) -> None:  # fmt: skip
    t0 = time.monotonic()
    samples: list[Sample] = []
    facts["samples"] = samples

    def sample(phase: str) -> int:
        rss = srv.rss_bytes() or 0
        samples.append((round(time.monotonic() - t0, 3), rss, phase))
        return rss

    warm = _echo(ctx, srv, 1.0, tolerant=False)
    facts["warmup_error"] = warm.error
    facts["rss_start"] = sample("start")
    with contextlib.ExitStack() as stack:  # every client is stopped, whatever happens
        echo = stack.enter_context(loadgen.start(
            ctx.loadgen, "latency", srv.host, srv.port, tolerant=True,
            connections=ECHO_CONNECTIONS, line_bytes=LINE_BYTES, warmup=0, seconds=seconds,
        ))  # fmt: skip
        churn = stack.enter_context(loadgen.start(
            ctx.loadgen, "churn", srv.host, srv.port, tolerant=True,
            connections=CHURN_SLOTS, line_bytes=LINE_BYTES, warmup=0, seconds=seconds,
        ))  # fmt: skip
        flooder = Flooder(srv.host, srv.port, seconds)
        stack.callback(flooder.finish)
        slow = Slowloris(srv.host, srv.port, seconds)
        stack.callback(slow.finish)
        flooder.start()
        slow.start()
        _every_second(seconds, lambda: sample("soak"), stop=lambda: not srv.alive())
        facts["echo"] = _load_facts(echo.finish())
        facts["churn"] = _load_facts(churn.finish())
    facts["flooder"] = {
        "bytes_accepted": flooder.sent,
        "last_accepted_s": flooder.last_send,
        "error": flooder.error,
    }
    facts["slowloris"] = {
        "echoes": slow.echoes,
        "mismatches": slow.mismatches,
        "closed_by_server_s": slow.closed_by_server,
        "error": slow.error,
    }
    _every_second(settle, lambda: sample("after"), stop=lambda: not srv.alive())
    facts["rss_end"] = samples[-1][1]
    check = _echo(ctx, srv, 1.0, tolerant=False)
    facts["check"] = _load_facts(check)
    run.load = facts["echo"]
    run.metrics = {"rss_start": facts["rss_start"], "rss_end": facts["rss_end"],
                   "rss_peak": max(s[1] for s in samples)}  # fmt: skip
    if check.error is not None:
        run.error = f"after the soak the server no longer echoes: {check.error}"
    else:
        run.figure = float(facts["rss_end"] - facts["rss_start"])


def _echo(ctx: Context, srv: RunningServer, seconds: float, tolerant: bool) -> loadgen.LoadResult:
    with loadgen.start(ctx.loadgen, "latency", srv.host, srv.port, tolerant=tolerant,
                       connections=ECHO_CONNECTIONS, line_bytes=LINE_BYTES, warmup=0,
                       seconds=seconds) as client:  # fmt: skip
        return client.finish()


def _every_second(seconds: float, action: Callable[[], object], stop: Callable[[], bool]) -> None:
    """Call ``action`` once a second for ``seconds`` (on the tick, not drifting)."""
    start = time.monotonic()
    for tick in range(1, int(seconds) + 1):
        time.sleep(max(0.0, start + tick - time.monotonic()))
        action()
        if stop():
            return


def _load_facts(load: loadgen.LoadResult) -> dict[str, Any]:
    raw = load.raw
    pct = raw.get("latency_us") or raw.get("connection_us") or {}
    return {"completed": load.lines, "rate": load.rate, "failures": load.failures,
            "last_failure": raw.get("last_failure"), "error": load.error,
            "p99_us": pct.get("p99"), "max_us": pct.get("max"),
            "max_gap_s": raw.get("max_gap_s"), "cpu_share": load.cpu_share}  # fmt: skip


def _slope(samples: list[Sample]) -> float | None:
    """Least-squares RSS growth in bytes/s over the second half of the soak phase."""
    soak = [(t, rss) for t, rss, phase in samples if phase == "soak"]
    half = soak[len(soak) // 2 :]
    if len(half) < 2:
        return None
    n = len(half)
    mt = sum(t for t, _ in half) / n
    mr = sum(r for _, r in half) / n
    var = sum((t - mt) ** 2 for t, _ in half)
    return sum((t - mt) * (r - mr) for t, r in half) / var if var else None


def _table(facts: dict[str, Any]) -> list[str]:
    if "rss_start" not in facts:
        return ["(no measurement: see the warnings)", ""]
    samples: list[Sample] = facts.get("samples", [])
    mib = _mib
    slope = _slope(samples)
    echo, churn = facts.get("echo", {}), facts.get("churn", {})
    flood, slow = facts.get("flooder", {}), facts.get("slowloris", {})
    check = facts.get("check", {})
    rows = [
        ("RSS at start (after 1 s warm-up)", mib(facts["rss_start"])),
        ("RSS peak", mib(max(s[1] for s in samples))),
        ("RSS at end (clients gone, settled)", mib(facts.get("rss_end", 0))),
        ("RSS growth, second half of the soak",
         "-" if slope is None else f"{slope / 1024:+.1f} KiB/s"),
        ("echo: round trips, p99 / max, longest gap",
         f"{echo.get('completed', 0):,}, {_ms(echo.get('p99_us'))} / {_ms(echo.get('max_us'))}, "
         f"{echo.get('max_gap_s') or 0:.2f} s"),
        ("echo: failures", _failures(echo)),
        ("churn: connections, connect-to-echo p99", f"{churn.get('completed', 0):,}, "
         f"{_ms(churn.get('p99_us'))}"),
        ("churn: failures", _failures(churn)),
        ("flooder: bytes the server took, last taken at",
         f"{flood.get('bytes_accepted', 0):,} B, {flood.get('last_accepted_s', 0):.1f} s"
         + (f" (error: {flood['error']})" if flood.get("error") else "")),
        ("slowloris: echoes ok / mismatches",
         f"{slow.get('echoes', 0)} / {slow.get('mismatches', 0)}"
         + (f", closed by the server at {slow['closed_by_server_s']:.0f} s"
            if slow.get("closed_by_server_s") is not None else "")
         + (f" (error: {slow['error']})" if slow.get("error") else "")),
        ("check after the soak (1 s strict echo)",
         "ok" if check.get("error") is None else f"FAILED: {check.get('error')}"),
    ]  # fmt: skip
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    every = max(1, len(samples) // 20)
    series = ", ".join(f"{t:.0f}s {rss / MIB:.1f}" for t, rss, _ in samples[::every])
    lines += ["", f"RSS over time (MiB, every {every} sample(s)): {series}", ""]
    return lines


def _mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:,.2f} ms"


def _failures(load: dict[str, Any]) -> str:
    failures = {k: v for k, v in (load.get("failures") or {}).items() if v}
    text = ", ".join(f"{k} {v}" for k, v in failures.items()) or "none"
    if load.get("last_failure") and failures:
        text += f" (last: {load['last_failure']})"
    if load.get("error"):
        text += f"; error: {load['error']}"
    return text


def _verdict(result: ScenarioResult, facts: dict[str, Any]) -> None:
    start, end = facts.get("rss_start"), facts.get("rss_end")
    if start is None or end is None:
        return
    bound = max(BOUND_MIN, BOUND_SHARE * start)
    within = end - start <= bound
    facts["within_bound"] = within
    facts["bound_bytes"] = bound
    verdict = "within" if within else "NOT within"
    result.notes.insert(0, f"RSS at the end is {verdict} the bound: {(end - start) / MIB:+.1f} MiB "
                        f"against at most +{bound / MIB:.1f} MiB.")  # fmt: skip
    if not within:
        result.problems.append("RSS did not come back within the bound after the soak")
    for who in ("echo", "churn"):
        count = sum((facts.get(who) or {}).get("failures", {}).values())
        if count:
            result.problems.append(f"soak {who} clients: {_failures(facts[who])}")
    if (facts.get("slowloris") or {}).get("mismatches"):
        result.problems.append("slowloris: echo mismatches")


def _chart(samples: list[Sample], path: Path) -> str:
    """Plot RSS over time to ``path`` if matplotlib is importable; says what it did."""
    if not samples:
        return "No RSS samples: no chart."
    if importlib.util.find_spec("matplotlib") is None:
        return "No PNG chart: matplotlib is not importable (the JSON has every sample)."
    import matplotlib  # type: ignore[import-not-found]  # optional: checked above

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found]

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s[0] for s in samples], [s[1] / MIB for s in samples], marker=".")
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS, MiB")
    ax.set_title("ours-spec RSS during the soak")
    ax.grid(True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"Chart: {path}"
