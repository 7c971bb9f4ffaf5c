"""Smoke test of the benchmark harness: every scenario runs, measures, writes results.

No timing assertions: the figures depend on the machine. One quick run of every
scenario (``python -m benchmarks --quick``, about 40 s) must end well, and each
scenario's JSON must hold positive figures for the baseline and for our server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PEERS = ("asyncio-lines", "ours-spec")
#: Scenarios that compare the peers chosen with --peers.
PEER_SCENARIOS = ("throughput", "latency", "churn", "memory")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run every scenario once with --quick; returns the output directory and stdout."""
    out = tmp_path_factory.mktemp("benchmarks")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--peers", ",".join(PEERS),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def result(out: Path, scenario: str) -> dict[str, Any]:
    files = list(out.glob(f"{scenario}-2*.json"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".md").exists()
    data: dict[str, Any] = json.loads(files[0].read_text())
    assert data["scenario"] == scenario
    assert data["machine"]["cpu_model"]
    assert not data["problems"], data["problems"]
    return data


@pytest.mark.parametrize("scenario", PEER_SCENARIOS)
def test_peer_scenarios_measure_baseline_and_ours(
    quick_run: tuple[Path, str], scenario: str
) -> None:
    out, stdout = quick_run
    data = result(out, scenario)
    for name in PEERS:
        peer = data["peers"][name]
        assert peer["status"] == "ok", peer
        assert peer["median"] > 0
        assert all(sample > 0 for sample in peer["samples"])
    assert f"| {PEERS[1]} |" in stdout


def test_latency_reports_percentiles(quick_run: tuple[Path, str]) -> None:
    metrics = result(quick_run[0], "latency")["peers"]["ours-spec"]["metrics"]
    assert 0 < metrics["p50_us"]["median"] <= metrics["p99_us"]["median"]
    assert metrics["p99_us"]["median"] <= metrics["p999_us"]["median"]


@pytest.mark.parametrize("scenario", ["kernel", "filters"])
def test_micro_benchmarks_report_rates(quick_run: tuple[Path, str], scenario: str) -> None:
    rates = result(quick_run[0], scenario)["results"]["rates"]
    assert rates
    assert all(entry["median"] > 0 for entry in rates.values())
    assert any(key.startswith(("kernel_", "get_")) for key in rates)


def test_spec_vs_python_reports_both_and_the_ratio(quick_run: tuple[Path, str]) -> None:
    data = result(quick_run[0], "spec-vs-python")
    for name in ("asyncio-raw", "ours-spec", "ours-python-api"):
        assert data["peers"][name]["status"] == "ok"
    assert data["results"]["spec_over_python_throughput"] > 0


def test_fairness_reports_three_variants(quick_run: tuple[Path, str]) -> None:
    data = result(quick_run[0], "fairness")
    assert {p["status"] for p in data["peers"].values()} == {"ok"}
    assert set(data["results"]["p99_ms"]) == {"no job", "chunked job", "blocking job"}


def test_soak_samples_rss_and_checks_the_server(quick_run: tuple[Path, str]) -> None:
    facts = result(quick_run[0], "soak")["results"]
    assert facts["samples"]
    assert facts["rss_start"] > 0
    assert facts["check"]["error"] is None
    assert facts["within_bound"] in (True, False)


def test_micro_path_times_the_echo_path_and_checks_the_echoes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.micro.path", "--reads", "500"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["lines_per_read"] == 16
    assert len(figures["passes_ns_per_line"]) == 7
    assert 0 < figures["ns_per_line"] == min(figures["passes_ns_per_line"])


def test_micro_path_refuses_a_spec_that_does_not_echo(tmp_path: Path) -> None:
    spec = tmp_path / "quiet.yaml"
    spec.write_text("handlers:\n  input:\n    - log: '{input}'\n")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.micro.path", str(spec), "--reads", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "did not echo" in done.stderr


#: The load shapes of streaming.py, large.py and many.py (run by the same --quick run).
STREAM_SCENARIOS = (
    "streaming-1",
    "streaming-4",
    "streaming-16",
    "streaming-64",
    "large-4k",
    "large-64k",
    "many-connections",
)


@pytest.mark.parametrize("scenario", STREAM_SCENARIOS)
def test_stream_scenarios_measure_rates_and_round_trips(
    quick_run: tuple[Path, str], scenario: str
) -> None:
    out, stdout = quick_run
    data = result(out, scenario)
    for name in PEERS:
        peer = data["peers"][name]
        assert peer["status"] == "ok", peer
        assert all(sample > 0 for sample in peer["samples"])
        metrics = peer["metrics"]
        assert 0 < metrics["p50_us"]["median"] <= metrics["p99_us"]["median"]
        assert metrics["lines_per_read"]["median"] > 0
        assert peer["runs"][0]["loadgen"]["raw"]["mode"] == "stream"
    assert f"## {data['title']}" in stdout


def test_stream_scenarios_settings(quick_run: tuple[Path, str]) -> None:
    out = quick_run[0]
    for depth in (1, 4, 16, 64):
        assert result(out, f"streaming-{depth}")["settings"]["depth"] == depth
    large = result(out, "large-64k")
    assert large["settings"]["line_bytes"] == 65536
    spec = large["peers"]["ours-spec"]["command"]
    assert any(part.endswith("echo-max-length-1048576.yaml") for part in spec), spec
    many = result(out, "many-connections")
    assert many["settings"]["idle"] == 500
    for name in PEERS:
        for run in many["peers"][name]["runs"]:
            assert run["server"]["idle_disturbed"] == 0
            assert run["metrics"]["idle_open_s"] > 0


def test_scenario_groups_name_known_scenarios() -> None:
    from benchmarks.scenarios import GROUPS, SCENARIOS

    assert GROUPS["streaming"] == [f"streaming-{d}" for d in (1, 4, 16, 64)]
    assert GROUPS["large"] == ["large-4k", "large-64k"]
    assert all(name in SCENARIOS for names in GROUPS.values() for name in names)


def test_python_loadgen_stream_mode_keeps_its_window(tmp_path: Path) -> None:
    from benchmarks.pyloadgen import _match_repeated

    line = b"abc\n"
    assert _match_repeated(line, 0, b"abc\nab") == (1, 2)
    assert _match_repeated(line, 2, b"c\r\nabc\r\n") == (2, 0)  # "\r\n" is accepted
    assert _match_repeated(line, 0, b"abd\n")[0] == -1
    command = [sys.executable, "-m", "benchmarks.pyloadgen", "stream", "127.0.0.1"]
    with subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "peers" / "asyncio_lines.py"), "0"],
        stdout=subprocess.PIPE, text=True,
    ) as server:  # fmt: skip
        try:
            assert server.stdout is not None
            port = server.stdout.readline().strip().rsplit(":", 1)[1]
            window = [port, "3", "4", "64", "0.1", "0.3"]
            done = subprocess.run(
                [*command, *window], cwd=REPO, capture_output=True, text=True, timeout=30,
                check=False,
            )  # fmt: skip
            refused = subprocess.run(
                [*command, *window, "--tolerant"], cwd=REPO, capture_output=True, text=True,
                timeout=30, check=False,
            )  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout)
    assert figures["mode"] == "stream" and figures["depth"] == 4
    assert figures["lines"] > 0 and figures["error"] is None
    assert figures["unfinished_lines"] == 0
    assert refused.returncode == 2  # strict only, as loadgen.c
