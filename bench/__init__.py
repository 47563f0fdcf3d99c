"""Warden's benchmarks (`make bench`): each prints a table and writes its figures to bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, result: Any, *, tiny: bool) -> Path:
    """bench/results/<name>.json, or <name>.tiny.json for a tiny run, which never replaces a full run's figures."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (f"{name}.tiny.json" if tiny else f"{name}.json")
    path.write_text(json.dumps(result, indent=2))
    return path
