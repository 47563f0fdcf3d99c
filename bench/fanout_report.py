"""What bench.fanout measured: one row per step, Warden/baseline ratios, and the issue's targets."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

REFERENCE_RATE = 50  # updates/s, all daemons together: the rate the latency targets are set at
P99_LIMIT_MS = 1000.0  # a step whose p99 passes this is past the sustained rate

Slow = dict[str, tuple["StepResult", "StepResult"]]  # by server: without, then with the silent client


@dataclass(frozen=True)
class StepResult:
    kind: str  # "warden" or "baseline"
    clients: int
    label: str
    target_rate: float | None  # None: as fast as the daemons go
    updates_per_s: float
    max_lag_ms: float  # the furthest a daemon fell behind the step's schedule (paced steps)
    latency_ms: dict[str, float]  # update_status call to receipt: p50, p95, p99, max
    delivered_per_s: float
    delivered_share: float  # of updates x clients; Warden collapses states a client has not taken yet
    call_us: dict[str, float]  # update_status: p50, p99, max, mean
    server_cpu_pct: float
    clients_cpu_pct: float
    transactions_per_s: float
    on_disk_ms: float | None  # last update to its state readable by another connection; None: never
    peak_rss_mib: float
    clients_closed: int  # reading clients whose connection the server ended
    closed_slow_total: int  # Warden's count of clients it closed for not reading, since it started
    stalled_s: float  # how long the step overran because the server was stuck
    memory_mib: list[tuple[float, float]]  # the server's VmRSS by second, when sampled

    @property
    def passed(self) -> bool:
        """Latency and the daemons' lag behind schedule within the limit, every client still connected."""
        within = self.latency_ms["p99"] <= P99_LIMIT_MS and self.max_lag_ms <= P99_LIMIT_MS
        return within and self.clients_closed == 0


def sustained(results: list[StepResult], kind: str, clients: int) -> float:
    """The highest update rate reached in a step that passed."""
    rates = [r.updates_per_s for r in results if r.kind == kind and r.clients == clients and r.passed]
    return max(rates, default=0.0)


def reference(results: list[StepResult], kind: str, clients: int) -> StepResult | None:
    """The step at the reference rate."""
    found = (r for r in results if r.kind == kind and r.clients == clients and r.target_rate == REFERENCE_RATE)
    return next(found, None)


# -- rows -----------------------------------------------------------------------------------

HEADER = (
    f"{'server':8} {'clients':>7} {'step':>8} {'upd/s':>8} {'lag ms':>7}"
    f" {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    f" {'deliv/s':>8} {'deliv%':>6} {'call p50/p99 us':>16} {'srv CPU%':>8} {'cli CPU%':>8} {'tx/s':>7}"
    f" {'disk ms':>7} {'RSS MiB':>7} {'closed':>6}"
)


def show(result: StepResult) -> StepResult:
    """Print the result's row as soon as it is measured (a full run takes minutes)."""
    r, lat = result, result.latency_ms
    disk = "-" if r.on_disk_ms is None else f"{r.on_disk_ms:.0f}"
    calls = f"{r.call_us['p50']:.1f}/{r.call_us['p99']:.1f}"
    stall = f"  (stalled {r.stalled_s:g} s)" if r.stalled_s else ""
    print(
        f"{r.kind:8} {r.clients:>7} {r.label:>8} {r.updates_per_s:>8.0f} {r.max_lag_ms:>7.0f}"
        f" {lat['p50']:>8.2f} {lat['p95']:>8.2f} {lat['p99']:>8.2f} {lat['max']:>8.1f}"
        f" {r.delivered_per_s:>8.0f} {100 * r.delivered_share:>6.1f}"
        f" {calls:>16} {r.server_cpu_pct:>8.0f} {r.clients_cpu_pct:>8.0f} {r.transactions_per_s:>7.1f}"
        f" {disk:>7} {r.peak_rss_mib:>7.1f} {r.clients_closed:>6}{stall}",
        flush=True,
    )
    return result


# -- summaries ------------------------------------------------------------------------------


def memory_summary(result: StepResult) -> dict[str, float]:
    """RSS at the start, once settled (at 10 s, or a sixth of a longer run), at the end, and its growth after."""
    samples = [mib for _, mib in result.memory_mib] or [math.nan]
    settled = min(len(samples) - 1, max(1, len(samples) // 6, 10))
    return {
        "start_mib": samples[0],
        "settled_mib": samples[settled],
        "end_mib": samples[-1],
        "max_mib": max(samples),
        "growth_after_settling_mib": max(samples[settled:]) - samples[settled],
    }


def ratios(results: list[StepResult], counts: list[int]) -> dict[int, dict[str, float]]:
    """Warden beside the baseline for each number of clients (latency, CPU and memory at the reference rate)."""
    table = {}
    for clients in counts:
        warden, base = reference(results, "warden", clients), reference(results, "baseline", clients)
        if warden is None or base is None:
            continue
        ours, theirs = sustained(results, "warden", clients), sustained(results, "baseline", clients)
        table[clients] = {
            "p99_baseline_over_warden": base.latency_ms["p99"] / warden.latency_ms["p99"],
            "warden_sustained_per_s": ours,
            "baseline_sustained_per_s": theirs,
            "sustained_warden_over_baseline": ours / theirs if theirs else math.inf,
            "cpu_warden_over_baseline": warden.server_cpu_pct / base.server_cpu_pct,
            "peak_rss_warden_over_baseline": warden.peak_rss_mib / base.peak_rss_mib,
        }
    return table


def print_summary(results: list[StepResult], slow: Slow, counts: list[int]) -> None:
    print("\nWarden / baseline by clients (p99, CPU and RSS at 50/s; sustained: best step that passed)")
    for clients, row in ratios(results, counts).items():
        print(
            f"  {clients:>5} clients: p99 {row['p99_baseline_over_warden']:.1f}x lower;"
            f" sustained {row['warden_sustained_per_s']:.0f}/s vs {row['baseline_sustained_per_s']:.0f}/s"
            f" = {row['sustained_warden_over_baseline']:.0f}x; CPU {row['cpu_warden_over_baseline']:.2f}x;"
            f" peak RSS {row['peak_rss_warden_over_baseline']:.2f}x"
        )
    print("\nSlow client: server memory (VmRSS MiB) and update_status, without -> with it")
    for kind, (without, with_silent) in slow.items():
        before, after = memory_summary(without), memory_summary(with_silent)
        print(
            f"  {kind:8}: RSS settled {before['settled_mib']:.1f} -> {after['settled_mib']:.1f},"
            f" then +{after['growth_after_settling_mib']:.1f} (max {after['max_mib']:.1f});"
            f" update_status max {without.call_us['max'] / 1000:.1f} -> {with_silent.call_us['max'] / 1000:.1f} ms;"
            f" stalled {with_silent.stalled_s:g} s; closed for not reading: {with_silent.closed_slow_total}"
        )
    print("\nTargets")
    for line in targets(results, slow, counts):
        print(line)


# -- targets --------------------------------------------------------------------------------

Check = tuple[bool, str] | None  # met, and the figures; None: not measured in this run


def targets(results: list[StepResult], slow: Slow, counts: list[int]) -> list[str]:
    """Each target of the issue: met, MISSED, or not measured in this run."""
    table = ratios(results, counts)
    warden = [r for r in results if r.kind == "warden"]
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("p99 <= 50 ms at 1,000 clients, 50/s", lambda: top_latency(reference(results, "warden", 1000))),
        ("p99 10x lower than the baseline's at 100 clients", lambda: latency_ratio(table.get(100))),
        ("p99 10x lower than the baseline's at 1,000 clients", lambda: latency_ratio(table.get(1000))),
        ("100x the baseline's sustained rate at 100 clients", lambda: rate_ratio(table.get(100))),
        ("100x the baseline's sustained rate at 1,000 clients", lambda: rate_ratio(table.get(1000))),
        ("slow client: the others' p99 within 1.2x", lambda: others_latency(slow.get("warden"))),
        ("slow client: update_status unchanged (p99 within 1.2x)", lambda: call_cost(slow.get("warden"))),
        ("slow client: memory flat once settled (within 2 MiB)", lambda: memory_flat(slow.get("warden"))),
        ("at most 20 transactions/s whatever the rate", lambda: transactions(warden)),
        ("latest state on disk within 200 ms of the last update", lambda: on_disk(warden)),
    ]
    lines = []
    for name, check in checks:
        outcome = check()
        verdict = "not measured" if outcome is None else "met" if outcome[0] else "MISSED"
        lines.append(f"{verdict:>12}  {name}" + ("" if outcome is None else f": {outcome[1]}"))
    return lines


def top_latency(step: StepResult | None) -> Check:
    return None if step is None else (step.latency_ms["p99"] <= 50, f"{step.latency_ms['p99']:.1f} ms")


def latency_ratio(row: dict[str, float] | None) -> Check:
    if row is None:
        return None
    return row["p99_baseline_over_warden"] >= 10, f"{row['p99_baseline_over_warden']:.1f}x"


def rate_ratio(row: dict[str, float] | None) -> Check:
    if row is None:
        return None
    figure = (
        f"{row['warden_sustained_per_s']:.0f}/s vs {row['baseline_sustained_per_s']:.0f}/s"
        f" = {row['sustained_warden_over_baseline']:.0f}x"
    )
    return row["sustained_warden_over_baseline"] >= 100, figure


def others_latency(pair: tuple[StepResult, StepResult] | None) -> Check:
    if pair is None:
        return None
    without, with_silent = (step.latency_ms["p99"] for step in pair)
    return with_silent <= 1.2 * without, f"{without:.2f} -> {with_silent:.2f} ms ({with_silent / without:.2f}x)"


def call_cost(pair: tuple[StepResult, StepResult] | None) -> Check:
    if pair is None:
        return None
    without, with_silent = (step.call_us for step in pair)
    figure = (
        f"p50 {without['p50']:.1f} -> {with_silent['p50']:.1f} us, p99 {without['p99']:.1f} -> {with_silent['p99']:.1f}"
        f" us, max {without['max']:.0f} -> {with_silent['max']:.0f} us"
    )
    return with_silent["p99"] <= 1.2 * without["p99"], figure


def memory_flat(pair: tuple[StepResult, StepResult] | None) -> Check:
    if pair is None:
        return None
    memory = memory_summary(pair[1])
    growth = memory["growth_after_settling_mib"]
    return growth <= 2, f"{memory['settled_mib']:.1f} MiB once settled, +{growth:.1f} MiB after"


def transactions(steps: list[StepResult]) -> Check:
    if not steps:
        return None
    busiest = max(steps, key=lambda r: r.transactions_per_s)
    figure = f"up to {busiest.transactions_per_s:.1f}/s (at {busiest.clients} clients, {busiest.label})"
    return busiest.transactions_per_s <= 20, figure


def on_disk(steps: list[StepResult]) -> Check:
    if not steps:
        return None
    seen = [r.on_disk_ms for r in steps if r.on_disk_ms is not None]
    slowest = max(seen, default=math.inf)
    never = len(steps) - len(seen)
    figure = f"at most {slowest:.0f} ms" + (f"; {never} step(s) never saw it within 5 s" if never else "")
    return never == 0 and slowest <= 200, figure
