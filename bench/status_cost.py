"""Cost of Daemon.update_status on the daemon's own task, by number and state of hub subscribers.

Warden runs whole in this process (kernel and web front, as in tests.webharness) with one
bench daemon, `status_load`, whose run() makes the calls and times them with
time.perf_counter_ns. Scenarios: 0, 100 and 1,000 subscribers taken with StatusHub.subscribe
as a WebSocket client's is (no logs), each drained by its own reader task; and one stalled
subscriber that never reads. The store writer, a subscriber in every Warden, is not counted.
Per scenario:

burst          calls back to back in batches of --batch, with no suspending await in between, so
               nothing else (the flush, readers, the store writer) runs on the loop inside a batch;
               per-call time = batch time / batch size; median and p99 over the batches. Only the
               first call of a batch schedules the flush. GC pauses and the GIL taken by Warden's
               threads (SQLite, loop-lag monitor) count.
one per turn   one call timed on its own, then `await asyncio.sleep(0)`: each call is the first of
               its loop turn, as for a daemon that reports and then does I/O. So it also schedules
               the hub's flush, and it runs with cold CPU caches after the loop's turn (the more
               subscribers, the more the readers evict). Includes one perf_counter_ns pair (printed).
empty call     the same pattern with an async method of the same signature that does nothing: what
               any awaited call costs as the first of a loop turn, in the same scenario. The
               difference from "one per turn" is update_status's own work.
flush          StatusHub.flush as the loop runs it after each one-per-turn call (timed by wrapping
               it): the status snapshot, numbering, the offer to every subscriber. Not on the
               daemon's task, but on the same loop, later in the same turn.
loop/update    wall time of the one-per-turn run divided by its calls, minus the same run with bare
               sleep(0) yields and no call: the whole price of one update on the event loop (call,
               flush, every reader waking to take its batch, the store writer's share).

The target (median <= 5 µs on the calling task) is checked for both call patterns.
Prints a table and writes bench/results/status_cost.json (status_cost.tiny.json with --tiny).

    python -m bench.status_cost [--batches 2000] [--batch 100] [--turns 5000] [--subscribers 0 100 1000]
    python -m bench.status_cost --tiny
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import Field

from bench import write_results
from supervisor import Daemon, DaemonConfig
from supervisor.daemon import DaemonContext
from supervisor.hub import StatusHub, Subscription, SubscriptionClosed
from supervisor.models import DaemonState
from supervisor.supervisor import Supervisor
from tests.webharness import config_text, running_warden
from web.ws import QUEUE_LINES

TARGET_MEDIAN_US = 5.0


@dataclass(frozen=True)
class Timings:
    """What one run of the bench daemon measured, in nanoseconds."""

    burst_ns: list[float]  # per call, one value per batch
    per_turn_ns: list[int]  # one value per call
    per_turn_window: tuple[int, int]  # perf_counter_ns at the start and end of the one-per-turn run
    yields_ns: int  # wall time of as many bare sleep(0) yields as one-per-turn calls
    empty_call_ns: list[int]  # one value per call of an async method that does nothing, one per turn


class StatusLoad(Daemon):
    """Calls update_status in the patterns of bench.status_cost, then sleeps until stopped."""

    name = "status_load"
    title = "Status load"

    class Config(DaemonConfig):
        batches: int = Field(2000, ge=1, description="Batches of back-to-back calls.")
        batch: int = Field(100, ge=1, description="Calls per batch.")
        turns: int = Field(5000, ge=1, description="Calls made one per loop turn.")

    def __init__(self, context: DaemonContext, config: DaemonConfig) -> None:
        super().__init__(context, config)
        self.timings: Timings | None = None
        self.measured = asyncio.Event()

    async def run(self) -> None:
        config = self.config
        assert isinstance(config, StatusLoad.Config)
        # Made beforehand: formatting the text is the daemon's work, not update_status's.
        messages = [f"Processing item {n + 1} of {config.batch}" for n in range(config.batch)]
        await self._burst(messages)  # warm-up; its first call also makes the daemon `running`
        burst_ns = [await self._burst(messages) for _ in range(config.batches)]
        yields_ns = await self._yields(config.turns)
        started = time.perf_counter_ns()
        per_turn_ns = await self._one_per_turn(self.update_status, messages, config.turns)
        window = (started, time.perf_counter_ns())
        empty_call_ns = await self._one_per_turn(self._nothing, messages, config.turns)
        self.timings = Timings(burst_ns, per_turn_ns, window, yields_ns, empty_call_ns)
        self.measured.set()
        await self.sleep(86_400, "measured; waiting to be stopped")

    async def _burst(self, messages: list[str]) -> float:
        """Per-call nanoseconds of one call per message in a row; then a yield, so the flush and readers run."""
        started = time.perf_counter_ns()
        for n, message in enumerate(messages):
            await self.update_status(message, progress=n)
        elapsed = time.perf_counter_ns() - started
        await asyncio.sleep(0)
        return elapsed / len(messages)

    async def _one_per_turn(self, call: Callable[..., Awaitable[None]], messages: list[str], count: int) -> list[int]:
        spans = []
        for n in range(count):
            message = messages[n % len(messages)]
            started = time.perf_counter_ns()
            await call(message, progress=n)
            spans.append(time.perf_counter_ns() - started)
            await asyncio.sleep(0)
        return spans

    async def _nothing(self, message: str, progress: float | None = None) -> None:
        """update_status's shape without its work: the floor of an awaited call."""

    async def _yields(self, count: int) -> int:
        """Wall nanoseconds of `count` bare loop turns: the yield's own price, subtracted later."""
        started = time.perf_counter_ns()
        for _ in range(count):
            await asyncio.sleep(0)
        return time.perf_counter_ns() - started


@dataclass(frozen=True)
class Scenario:
    readers: int = 0  # subscribers drained by a reader task each
    stalled: bool = False  # one subscriber that is never read

    @property
    def label(self) -> str:
        return "1 stalled" if self.stalled else f"{self.readers} readers"


@dataclass(frozen=True)
class Row:
    scenario: str
    burst_median_us: float
    burst_p99_us: float
    per_turn_median_us: float
    per_turn_p99_us: float
    empty_call_median_us: float
    flush_median_us: float
    flush_p99_us: float
    flushes_per_update: float
    loop_per_update_us: float
    bare_yield_us: float


class FlushTimer:
    """Times every StatusHub.flush the loop runs, by shadowing the method on the instance."""

    def __init__(self, hub: StatusHub) -> None:
        self._hub = hub
        self.spans: list[tuple[int, int]] = []  # (perf_counter_ns at start, duration)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        # The hub schedules `self.flush` by attribute lookup, so an instance attribute is what the loop runs.
        flush = self._hub.flush

        def timed() -> None:
            started = time.perf_counter_ns()
            flush()
            self.spans.append((started, time.perf_counter_ns() - started))

        self._hub.flush = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self._hub.flush

    def within(self, window: tuple[int, int]) -> list[int]:
        return [duration for started, duration in self.spans if window[0] <= started <= window[1]]


def p99(values: list[float] | list[int]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def timer_pair_ns(samples: int = 100_000) -> float:
    """Median cost of one perf_counter_ns pair: it is inside every one-per-turn time."""
    counter = time.perf_counter_ns
    spans = []
    for _ in range(samples):
        started = counter()
        spans.append(counter() - started)
    return statistics.median(spans)


async def drain(subscription: Subscription) -> None:
    """A reader that keeps up, as a WebSocket client's writer does (minus the socket)."""
    with contextlib.suppress(SubscriptionClosed):
        while True:
            await subscription.get()


@contextlib.asynccontextmanager
async def subscribers(hub: StatusHub, scenario: Scenario) -> AsyncIterator[None]:
    taken = [hub.subscribe(max_lines=QUEUE_LINES, log_filter=frozenset()) for _ in range(scenario.readers)]
    readers = [asyncio.create_task(drain(subscription)) for subscription in taken]
    if scenario.stalled:
        taken.append(hub.subscribe(max_lines=QUEUE_LINES, log_filter=frozenset()))
    try:
        yield
    finally:
        for subscription in taken:
            hub.unsubscribe(subscription)
        await asyncio.gather(*readers)


def summarise(scenario: Scenario, timings: Timings, flushes: list[int]) -> Row:
    def us(nanoseconds: float) -> float:
        return round(nanoseconds / 1000, 3)

    turns = len(timings.per_turn_ns)
    start, end = timings.per_turn_window
    bare_yield = timings.yields_ns / turns
    return Row(
        scenario=scenario.label,
        burst_median_us=us(statistics.median(timings.burst_ns)),
        burst_p99_us=us(p99(timings.burst_ns)),
        per_turn_median_us=us(statistics.median(timings.per_turn_ns)),
        per_turn_p99_us=us(p99(timings.per_turn_ns)),
        empty_call_median_us=us(statistics.median(timings.empty_call_ns)),
        flush_median_us=us(statistics.median(flushes)),
        flush_p99_us=us(p99(flushes)),
        flushes_per_update=round(len(flushes) / turns, 2),
        loop_per_update_us=us((end - start) / turns - bare_yield),
        bare_yield_us=us(bare_yield),
    )


async def measure_one(hub: StatusHub, supervisor: Supervisor, scenario: Scenario) -> Row:
    runner = supervisor.runner(StatusLoad.name)
    timer = FlushTimer(hub)
    async with subscribers(hub, scenario):
        with timer.installed():
            status = await runner.start()
            assert status.state is DaemonState.RUNNING, status
            daemon = runner.daemon
            assert isinstance(daemon, StatusLoad)
            await daemon.measured.wait()
        await runner.stop()
    assert daemon.timings is not None
    return summarise(scenario, daemon.timings, timer.within(daemon.timings.per_turn_window))


async def measure(scenarios: list[Scenario], batches: int, batch: int, turns: int) -> list[Row]:
    section = (
        f"  {StatusLoad.name}:\n    auto_start: false\n    batches: {batches}\n    batch: {batch}\n    turns: {turns}\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        async with running_warden(Path(folder), [StatusLoad], yaml=config_text(section)) as warden:
            assert warden.supervisor is not None
            return [await measure_one(warden.hub, warden.supervisor, scenario) for scenario in scenarios]


def verdict(median_us: float) -> str:
    return "met" if median_us <= TARGET_MEDIAN_US else f"MISSED x{median_us / TARGET_MEDIAN_US:.1f}"


COLUMNS: list[tuple[str, Callable[[Row], object]]] = [
    ("subscribers", lambda r: r.scenario),
    ("burst med µs", lambda r: r.burst_median_us),
    ("burst p99 µs", lambda r: r.burst_p99_us),
    ("1/turn med µs", lambda r: r.per_turn_median_us),
    ("1/turn p99 µs", lambda r: r.per_turn_p99_us),
    ("empty call 1/turn med µs", lambda r: r.empty_call_median_us),
    ("flush med µs", lambda r: r.flush_median_us),
    ("flush p99 µs", lambda r: r.flush_p99_us),
    ("loop/update µs", lambda r: r.loop_per_update_us),
    ("target burst", lambda r: verdict(r.burst_median_us)),
    ("target 1/turn", lambda r: verdict(r.per_turn_median_us)),
]


def print_table(rows: list[Row]) -> None:
    widths = [max(len(title), *(len(str(cell(row))) for row in rows)) for title, cell in COLUMNS]
    print("  ".join(title.rjust(width) for (title, _), width in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        print("  ".join(str(cell(row)).rjust(width) for (_, cell), width in zip(COLUMNS, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000, help="batches of back-to-back calls per scenario")
    parser.add_argument("--batch", type=int, default=100, help="calls per batch")
    parser.add_argument("--turns", type=int, default=5000, help="calls made one per loop turn, per scenario")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[0, 100, 1000], help="reader counts")
    parser.add_argument("--tiny", action="store_true", help="a few seconds: 100 batches and 300 turns")
    options = parser.parse_args()
    if options.tiny:
        options.batches, options.turns = 100, 300
    scenarios = [Scenario(readers) for readers in options.subscribers] + [Scenario(stalled=True)]
    rows = asyncio.run(measure(scenarios, options.batches, options.batch, options.turns))
    print_table(rows)
    timer_ns = timer_pair_ns()
    print(f"1/turn times include one perf_counter_ns pair: {timer_ns:.0f} ns")
    result = {
        "batches": options.batches,
        "batch": options.batch,
        "turns": options.turns,
        "target_median_us": TARGET_MEDIAN_US,
        "timer_pair_ns": timer_ns,
        "load_average": os.getloadavg(),
        "rows": [asdict(row) for row in rows],
    }
    write_results("status_cost", result, tiny=options.tiny)


if __name__ == "__main__":
    main()
