"""The soak scenario: mixed and misbehaving traffic against one spec server, RSS over time.

One server (``ours-soak-spec``: ``peers/soak.yaml`` run by ``statemachine_server
run``, which echoes and logs ordinary lines, as the built-in echo spec does, and
also serves chat rooms and chunked ``primes N`` jobs on the same port), one long
run (``--seconds``, default 60, 5 with ``--quick``; ``--repeat`` does not apply).
Timeline:

1. warm-up: 1 s of echo traffic; the server's RSS then is the *start*;
2. soak, all at once for ``--seconds``: 20 echo clients in a latency loop and 4
   churn slots (the C client, ``--tolerant``: failures are counted, not fatal),
   one client that floods lines and never reads, one slowloris client sending a
   byte per second, 10 chat clients in 2 rooms (each says something every 50 to
   100 ms; every message must reach every other member of its room, in order per
   sender) and one job client (``primes 200000``, one job at a time, each answer
   checked); RSS sampled every second;
3. the clients leave; RSS sampled for a few more seconds (*end*: the last);
4. check: 1 s of strict echo traffic, to show the server still answers.

Verdict: RSS at the end within ``max(16 MiB, 25% of start)`` of the start, no
chat message missing (or out of order), no job failed. The JSON has every RSS
sample; a PNG chart is written if matplotlib is importable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import loadgen
from ..clients import ChatClients, Flooder, JobLoop, Slowloris
from ..report import stem
from ..results import Context, Options, Run, ScenarioResult
from ..servers import Peer, RunningServer, soak_peer
from .common import add_peers, new_result, now, with_server

NAME = "soak"
TITLE = "Soak: echo, chat, jobs, churn and misbehaving clients against one spec, RSS over time"
UNIT = "bytes (RSS end - start)"
SECONDS, SECONDS_QUICK = 60.0, 5.0
ECHO_CONNECTIONS = 20
CHURN_SLOTS = 4
LINE_BYTES = 64
CHAT_CLIENTS, CHAT_ROOMS = 10, 2
CHAT_INTERVAL_S = (0.05, 0.1)  # between one chat client's messages, uniform at random
CHAT_DRAIN_S = 3.0  # waited after the soak for the last chat deliveries
JOB_N = 200_000  # the job: `primes 200000` (about 0.3 s of chunked work on an idle server)
JOB_TIMEOUT_S = 20.0
SETTLE_S, SETTLE_S_QUICK = 5, 2  # seconds sampled after the clients leave
MIB = 1024 * 1024
BOUND_MIN = 16 * MIB
BOUND_SHARE = 0.25

Sample = tuple[float, int, str]  # seconds since the start, RSS bytes, phase


def run(ctx: Context, peers: list[Peer], options: Options) -> ScenarioResult:
    """``peers`` is ignored: the soak runs against ``peers/soak.yaml``."""
    seconds = options.seconds_given or (SECONDS_QUICK if options.quick else SECONDS)
    settle = SETTLE_S_QUICK if options.quick else SETTLE_S
    peer = soak_peer()
    low, high = (round(s * 1000) for s in CHAT_INTERVAL_S)
    description = (
        f"{seconds:g} s against {peer.name} (peers/soak.yaml: echo and log, chat rooms, "
        f"chunked jobs on one port) of, at once: {ECHO_CONNECTIONS} echo clients "
        f"(latency loop), {CHURN_SLOTS} churn slots, one client flooding lines without "
        f"reading, one slowloris client (a byte per second), {CHAT_CLIENTS} chat clients in "
        f"{CHAT_ROOMS} rooms (a message every {low}-{high} ms each), one client running "
        f"`primes {JOB_N}` jobs one after the other. Server RSS sampled every second."
    )
    settings = {"soak_seconds": seconds, "settle_seconds": settle,
                "echo_connections": ECHO_CONNECTIONS, "churn_slots": CHURN_SLOTS,
                "chat_clients": CHAT_CLIENTS, "chat_rooms": CHAT_ROOMS,
                "chat_interval_s": list(CHAT_INTERVAL_S), "job": f"primes {JOB_N}",
                "bound": f"max({BOUND_MIN // MIB} MiB, {BOUND_SHARE:.0%} of start)"}  # fmt: skip
    result = new_result(NAME, TITLE, description, UNIT, options, settings)
    result.method = (
        f"one run: 1 s warm-up, {seconds:g} s soak, {settle} s after the clients left, "
        "then a 1 s strict echo check"
    )
    entries = add_peers(ctx, result, [peer])
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
    chart = _chart(facts.get("samples", []), stem(result, ctx).with_suffix(".png"), peer.name)
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
        chat = ChatClients(srv.host, srv.port, seconds, clients=CHAT_CLIENTS, rooms=CHAT_ROOMS,
                           interval=CHAT_INTERVAL_S, drain=CHAT_DRAIN_S)  # fmt: skip
        stack.callback(chat.finish, CHAT_DRAIN_S + 10.0)
        jobs = JobLoop(srv.host, srv.port, seconds, JOB_N, job_timeout=JOB_TIMEOUT_S)
        stack.callback(jobs.finish, JOB_TIMEOUT_S + 5.0)
        threads = (flooder, slow, chat, jobs)
        stack.callback(lambda: [t.stop() for t in threads])  # runs first: all stop at once
        for thread in threads:
            thread.start()
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
    facts["chat"] = _chat_facts(chat)
    facts["jobs"] = _job_facts(jobs)
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


def _chat_facts(chat: ChatClients) -> dict[str, Any]:
    lat = sorted(chat.latencies)
    return {"clients": chat.clients, "rooms": chat.rooms, "sent": chat.sent,
            "deliveries_due": chat.expected, "delivered": chat.delivered,
            "missing": chat.missing, "out_of_order": chat.out_of_order,
            "unexpected": chat.unexpected, "last_unexpected": chat.last_unexpected,
            "joined_s": chat.joined_s, "left": chat.left,
            "delivery_p50_ms": _rank(lat, 0.50), "delivery_p99_ms": _rank(lat, 0.99),
            "delivery_max_ms": lat[-1] * 1000 if lat else None,
            "error": chat.error}  # fmt: skip


def _job_facts(jobs: JobLoop) -> dict[str, Any]:
    return {"job": f"primes {jobs.n}", "done": jobs.done, "failed": jobs.failed,
            "last_failure": jobs.last_failure, "reconnects": jobs.reconnects,
            "progress_lines": jobs.progress_lines,
            "time_median_s": statistics.median(jobs.times) if jobs.times else None,
            "time_max_s": max(jobs.times) if jobs.times else None,
            "times_s": [round(t, 4) for t in jobs.times], "error": jobs.error}  # fmt: skip


def _rank(ordered: list[float], share: float) -> float | None:
    """The nearest-rank percentile of sorted seconds, in ms (None if there are none)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))] * 1000


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
    chat, jobs = facts.get("chat", {}), facts.get("jobs", {})
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
        ("chat: messages sent / deliveries due, delivered, missing",
         f"{chat.get('sent', 0):,} / {chat.get('deliveries_due', 0):,}, "
         f"{chat.get('delivered', 0):,}, {chat.get('missing', 0):,}"),
        ("chat: out of order, unexpected lines, /leave answered",
         f"{chat.get('out_of_order', 0)}, {chat.get('unexpected', 0)}, "
         f"{chat.get('left', 0)} of {chat.get('clients', 0)}"
         + (f" (last unexpected: {chat['last_unexpected']})" if chat.get("last_unexpected")
            else "")
         + (f" (error: {chat['error']})" if chat.get("error") else "")),
        ("chat: delivery time p50 / p99 / max",
         " / ".join(_ms_value(chat.get(k)) for k in
                    ("delivery_p50_ms", "delivery_p99_ms", "delivery_max_ms"))),
        (f"jobs (`{jobs.get('job', '')}`): done / failed, time median / max",
         f"{jobs.get('done', 0)} / {jobs.get('failed', 0)}, "
         f"{_ms_value(_times_1000(jobs.get('time_median_s')))} / "
         f"{_ms_value(_times_1000(jobs.get('time_max_s')))}"
         + (f" (last failure: {jobs['last_failure']})" if jobs.get("last_failure") else "")
         + (f" (error: {jobs['error']})" if jobs.get("error") else "")),
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


def _ms_value(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:,.2f} ms"


def _times_1000(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


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
    _chat_jobs_verdict(result, facts)


def _chat_jobs_verdict(result: ScenarioResult, facts: dict[str, Any]) -> None:
    chat, jobs = facts.get("chat"), facts.get("jobs")
    if chat is not None:
        wrong = {k: chat[k] for k in ("missing", "out_of_order", "unexpected") if chat[k]}
        if wrong or chat["error"] or not chat["sent"]:
            what = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in wrong.items())
            what = what or ("nothing missing" if chat["sent"] else "no message sent")
            result.problems.append(
                f"soak chat clients: {what} of {chat['deliveries_due']:,} "
                f"deliveries due ({chat['sent']:,} messages sent)"
                + (f"; last unexpected line: {chat['last_unexpected']}"
                   if chat["last_unexpected"] else "")
                + (f"; error: {chat['error']}" if chat["error"] else "")
            )  # fmt: skip
    if jobs is not None and (jobs["failed"] or jobs["error"] or not jobs["done"]):
        result.problems.append(
            f"soak job client: {jobs['done']} `{jobs['job']}` done, {jobs['failed']} failed"
            + (f" (last: {jobs['last_failure']})" if jobs["last_failure"] else "")
            + (f"; error: {jobs['error']}" if jobs["error"] else "")
        )


def _chart(samples: list[Sample], path: Path, server: str) -> str:
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
    ax.set_title(f"{server} RSS during the soak")
    ax.grid(True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"Chart: {path}"
