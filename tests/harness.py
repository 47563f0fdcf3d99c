"""A running kernel for tests: hub, real SQLite store, writer and supervisor, no web."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from supervisor.clock import Clock, SystemClock
from supervisor.config import WardenSettings, settings_model
from supervisor.daemon import Daemon
from supervisor.hub import Batch, StatusHub
from supervisor.jobs import Job, JobManager
from supervisor.models import DaemonState, Event
from supervisor.persist import StoreWriter
from supervisor.store import Store
from supervisor.supervisor import Supervisor


class MidpointRandom(random.Random):
    """Jitter-free randomness: uniform(a, b) is always the midpoint."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def make_settings(daemon_classes: list[type[Daemon]], data_dir: Path, **sections: Any) -> WardenSettings:
    model = settings_model({cls.name: cls.Config for cls in daemon_classes})
    return model(paths={"data_dir": data_dir}, **sections)


class Kernel:
    def __init__(self, hub: StatusHub, store: Store, writer: StoreWriter, supervisor: Supervisor, clock: Clock) -> None:
        self.hub = hub
        self.store = store
        self.writer = writer
        self.supervisor = supervisor
        self.clock = clock
        self.events: list[Event] = []  # every event published since the kernel started
        self.jobs: dict[str, Job] = {}  # the latest state of every job published since (seen by `until`)
        self._recorder = hub.subscribe(max_lines=1_000_000)

    def state(self, name: str) -> DaemonState:
        return self.supervisor.runner(name).status.state

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checking after every change the hub publishes.

        One waiter at a time: call it from the test's own task.
        """
        async with asyncio.timeout(timeout):
            self._record(self._recorder.take())
            while not predicate():
                self._record(await self._recorder.get())

    def _record(self, batch: Batch) -> None:
        for delta in batch.deltas:
            if delta.kind == "event":
                self.events.append(delta.data)
            elif delta.kind == "job":
                self.jobs[delta.data.id] = delta.data

    async def until_state(self, name: str, state: DaemonState, timeout: float = 5.0) -> None:
        await self.until(lambda: self.state(name) is state, timeout)

    async def until_event(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """Wait for a published event matching `predicate` (events seen earlier count too)."""
        await self.until(lambda: any(predicate(e) for e in self.events), timeout)
        return next(e for e in self.events if predicate(e))


@asynccontextmanager
async def running_kernel(
    daemon_classes: list[type[Daemon]],
    tmp_path: Path,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    settings: WardenSettings | None = None,
    busy_timeout_ms: int = 5000,
    **sections: Any,
) -> AsyncIterator[Kernel]:
    """Start a kernel around `daemon_classes`; on exit stop everything and flush to the database."""
    clock = clock or SystemClock()
    settings = settings or make_settings(daemon_classes, tmp_path, **sections)
    hub = StatusHub()
    store = await Store.open(tmp_path / "warden.db", busy_timeout_ms=busy_timeout_ms)
    # A fake clock stands still unless a test moves it, so writes are not spaced out on one (the
    # spacing's own tests move the clock).
    interval = settings.store.write_interval if isinstance(clock, SystemClock) else 0.0
    writer = StoreWriter(hub, store, clock, "test-boot", interval=interval)
    jobs = JobManager(hub, store, clock, rng=rng or MidpointRandom())
    supervisor = Supervisor(
        {cls.name: cls for cls in daemon_classes}, settings, hub, clock, jobs, rng=rng or MidpointRandom()
    )
    kernel = Kernel(hub, store, writer, supervisor, clock)
    started = asyncio.Event()
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(supervisor.run(started))]
    try:
        await started.wait()
        yield kernel
    finally:
        await asyncio.wait_for(supervisor.stop_all(), 30)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writer.flush(10)
        await store.close()
