"""Smoke test of the benchmark harness: it runs, measures, writes results.

No timing assertions: the figures depend on the machine. This only checks that a
quick run of the throughput scenario ends well and reports a positive figure for
the baseline and for our server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = ("asyncio-lines", "ours-spec")


def test_quick_throughput_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "throughput", "--quick",
         "--peers", ",".join(PEERS), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    results = list(tmp_path.glob("throughput-*.json"))
    assert len(results) == 1, results
    data = json.loads(results[0].read_text())
    assert data["scenario"] == "throughput"
    for name in PEERS:
        peer = data["peers"][name]
        assert peer["status"] == "ok", peer
        assert peer["median"] > 0
        assert all(sample > 0 for sample in peer["samples"])

    # The markdown summary is written and printed too.
    assert list(tmp_path.glob("throughput-*.md"))
    assert "| ours-spec |" in done.stdout
