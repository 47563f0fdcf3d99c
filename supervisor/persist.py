"""StoreWriter: the single task that moves the hub's changes into the Store.

It reads the hub like any other subscriber, so a burst of status updates arrives collapsed
to the latest state per daemon and becomes one transaction. Writes are at least `interval`
apart: what arrives in between joins the next one, so evenly spaced updates cannot make a
transaction each, and the latest state reaches the disk within `interval` plus a write.
When a write fails, the batch is kept (merged with newer changes), the failure is published
as the `store` system state, and the write is retried by itself with a capped backoff; daemons are
never held up.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from supervisor.clock import Clock, sleep
from supervisor.hub import Batch, StatusHub, Subscription
from supervisor.jobs import ACTIVE, Job
from supervisor.models import DaemonStatus, Event, LogLine
from supervisor.store import Store, StoreError

logger = structlog.get_logger("warden.store")

#: Lines (events and logs) held for the database while it is unavailable; older ones are dropped.
MAX_UNSAVED_LINES = 200_000


class StoreWriter:
    def __init__(
        self, hub: StatusHub, store: Store, clock: Clock, boot_id: str, *, interval: float, retry_cap: float = 5.0
    ) -> None:
        self._hub = hub
        self._store = store
        self._clock = clock
        self._boot_id = boot_id
        self._interval = interval
        self._retry_cap = retry_cap
        self._next_write_at = clock.monotonic()
        self._subscription: Subscription = hub.subscribe(max_lines=MAX_UNSAVED_LINES)
        self._states: dict[str, DaemonStatus] = {}
        self._jobs: dict[str, Job] = {}
        self._lines: list[Event | LogLine] = []
        self._active_jobs: dict[str, Job] = {}  # written again into a database that replaced the file
        self._generation = store.generation
        self.transactions = 0
        self.dropped_lines = 0
        self.last_write_seconds = 0.0
        self.saved_seq = 0  # every change up to this hub sequence number is on disk
        self._pending_seq = 0
        self._progress = asyncio.Event()
        self._in_flight: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Write until cancelled. Call `flush` afterwards to save what is left."""
        failures = 0
        self._hub.set_system("store", {"ok": True, "error": None, "since": self._clock.time()})
        while True:
            # After a failure the kept batch is retried once the backoff ends, whether or not
            # anything new arrived meanwhile: an idle Warden must not hold it back indefinitely.
            self._take(self._subscription.take() if failures else await self._subscription.get())
            await self._space_out()
            try:
                await self._write_shielded()
            except StoreError as error:
                failures += 1
                self._report_failure(error, failures)
                await sleep(self._clock, min(self._retry_cap, 0.1 * 2**failures))
            else:
                if failures:
                    logger.info("database writes resumed", failed_attempts=failures)
                    self._hub.set_system("store", {"ok": True, "error": None, "since": self._clock.time()})
                failures = 0

    async def _space_out(self) -> None:
        """Wait until `interval` after the previous write began, then take what arrived meanwhile."""
        wait = self._next_write_at - self._clock.monotonic()
        if wait > 0:
            await sleep(self._clock, wait)
            self._take(self._subscription.take())
        self._next_write_at = self._clock.monotonic() + self._interval

    async def flush(self, timeout: float) -> bool:
        """Write everything published so far and stop reading the hub; True when it all reached the database."""
        if self._in_flight is not None:
            with contextlib.suppress(StoreError):
                await self._in_flight
        self._hub.flush()
        self._take(self._subscription.take())
        self._hub.unsubscribe(self._subscription)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await self._write()
                        return True
                    except StoreError as error:
                        logger.warning("final database write failed, retrying", error=str(error))
                        await sleep(self._clock, 0.2)
        except TimeoutError:
            logger.error(
                "could not save the final state in time; it is lost",
                timeout=timeout,
                daemon_states=len(self._states),
                lines=len(self._lines),
            )
            return False

    async def wait_saved(self, seq: int) -> None:
        """Wait until every change up to hub sequence number `seq` is on disk."""
        while self.saved_seq < seq:
            await self._progress.wait()

    def _take(self, batch: Batch) -> None:
        if batch.deltas:
            self._pending_seq = batch.deltas[-1].seq
        for delta in batch.deltas:
            if delta.kind == "daemon":
                self._states[delta.key] = delta.data
            elif delta.kind == "job":
                self._jobs[delta.key] = delta.data
                if delta.data.status in ACTIVE:
                    self._active_jobs[delta.key] = delta.data
                else:
                    self._active_jobs.pop(delta.key, None)
            elif delta.kind in ("event", "log"):
                self._lines.append(delta.data)
        self.dropped_lines += batch.dropped
        overflow = len(self._lines) - MAX_UNSAVED_LINES
        if overflow > 0:
            del self._lines[:overflow]
            self.dropped_lines += overflow

    async def _write(self) -> None:
        """Write what is pending. On failure it stays pending (newer states win) and StoreError is raised."""
        if self._store.generation != self._generation:
            # The database file was deleted or replaced: the one opened in its place has none of our rows.
            self._generation = self._store.generation
            self._states = {**self._states, **{name: status.snapshot() for name, status in self._hub.states.items()}}
            self._jobs = {**self._active_jobs, **self._jobs}
        if not (self._states or self._lines or self._jobs):
            self._mark_saved(self._pending_seq)
            return
        states, lines, jobs, seq = self._states, self._lines, self._jobs, self._pending_seq
        self._states, self._lines, self._jobs = {}, [], {}
        started = self._clock.monotonic()
        try:
            await self._store.write(
                self._boot_id,
                states=states.values(),
                events=[line for line in lines if isinstance(line, Event)],
                logs=[line for line in lines if isinstance(line, LogLine)],
                jobs=jobs.values(),
            )
        except StoreError:
            self._states = {**states, **self._states}
            self._jobs = {**jobs, **self._jobs}
            self._lines = lines + self._lines
            raise
        self.last_write_seconds = self._clock.monotonic() - started
        self.transactions += 1
        self._mark_saved(seq)

    def _mark_saved(self, seq: int) -> None:
        self.saved_seq = max(self.saved_seq, seq)
        self._progress.set()
        self._progress = asyncio.Event()

    async def _write_shielded(self) -> None:
        # A cancelled await must not leave a transaction half-known: the write finishes either
        # way and `flush` waits for it, so nothing is written twice or lost.
        self._in_flight = asyncio.ensure_future(self._write())
        await asyncio.shield(self._in_flight)

    def _report_failure(self, error: StoreError, failures: int) -> None:
        if failures == 1:
            logger.error("database write failed; daemons keep running and writes are retried", error=str(error))
            self._hub.set_system("store", {"ok": False, "error": str(error), "since": self._clock.time()})
