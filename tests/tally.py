"""The reliability table, counted by the tests that produce it.

A fault or hostile-input test calls `tally.record(...)` with what it tried, how many times,
what happened and how many updates, results or changes were lost (counted, not assumed),
before it asserts. At the end of the run the rows are written to
tests/artifacts/reliability.json and, as a markdown table, to tests/artifacts/reliability.md:
docs/reliability.md quotes one such run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ARTIFACTS = Path(__file__).parent / "artifacts"


def unmatched(expected: Iterable[Hashable], found: Iterable[Hashable]) -> int:
    """Items expected but not found plus items found but not expected, repeats counted: a result
    kept twice does not make up for one lost."""
    wanted, seen = Counter(expected), Counter(found)
    return (wanted - seen).total() + (seen - wanted).total()


@dataclass(frozen=True)
class Row:
    area: str  # "daemon", "process", "database", "stash", "qbittorrent", "config", "load", "api", ...
    case: str  # what was tried, in words
    tries: int  # how many times
    outcome: str  # what happened, in words
    lost: int  # updates, results or changes lost: counted by the test
    test: str


@dataclass
class Tally:
    rows: list[Row] = field(default_factory=list)

    def for_test(self, test: str) -> TallyRecorder:
        return TallyRecorder(self, test)

    def write(self, folder: Path = ARTIFACTS) -> None:
        if not self.rows:
            return
        folder.mkdir(parents=True, exist_ok=True)
        rows = sorted(self.rows, key=lambda row: (row.area, row.case))
        (folder / "reliability.json").write_text(json.dumps([asdict(row) for row in rows], indent=1))
        lines = ["| area | fault or input | tries | outcome | lost |", "|---|---|---|---|---|"]
        lines += [f"| {row.area} | {row.case} | {row.tries} | {row.outcome} | {row.lost} |" for row in rows]
        (folder / "reliability.md").write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class TallyRecorder:
    """What one test sees: `record` files its rows under the test's id."""

    tally: Tally
    test: str

    def record(self, area: str, case: str, *, tries: int, outcome: str, lost: int) -> None:
        self.tally.rows.append(Row(area, case, tries, outcome, lost, self.test))
