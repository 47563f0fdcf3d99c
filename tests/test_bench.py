"""Every benchmark, once, in its tiny configuration: a benchmark that no longer runs fails here.

Nothing is asserted about speed (that is what `make bench` reports); each run must finish,
print its table and write its results file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ["page_latency", "stash_sync", "video_analysis", "status_cost", "start_idle", "fanout"]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_benchmark_runs_in_its_tiny_configuration(name: str) -> None:
    written = RESULTS / f"{name}.tiny.json"
    started = time.time()
    run = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--tiny"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert run.stdout.strip(), "no table printed"
    assert written.stat().st_mtime >= started - 1, f"{written} was not written"
    assert json.loads(written.read_text()), f"{written} holds no results"
