"""Warden: builds the kernel's parts in order, runs them, and shuts them down in reverse."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from supervisor.clock import Clock, SystemClock, sleep
from supervisor.config import WardenSettings, settings_model
from supervisor.configfile import ConfigFile
from supervisor.hub import StatusHub
from supervisor.jobs import JobManager
from supervisor.models import ACTIVE_STATES, Actor, DaemonState, DaemonStatus, Event
from supervisor.persist import StoreWriter
from supervisor.plugins import Registry
from supervisor.store import Retention, Store, StoreError
from supervisor.supervisor import Supervisor

logger = structlog.get_logger("warden")

#: States that mean "a daemon task existed" when read back from the database.
_INTERRUPTED = ACTIVE_STATES | {DaemonState.BACKOFF}
_DAY = 86_400.0


def load_config(path: Path, registry: Registry) -> ConfigFile:
    model = settings_model(
        {name: cls.Config for name, cls in registry.daemons.items()},
        unchecked=frozenset(error.name for error in registry.errors),
    )
    return ConfigFile.load(path, model)


@dataclass
class Warden:
    """The running kernel. `run` returns when `stop` is set and everything is saved."""

    config: ConfigFile
    registry: Registry
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    hub: StatusHub = field(default_factory=StatusHub)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Serves the page and API while Warden runs (web.app.serve); yields the page's URL.
    front: Callable[[Warden], AbstractAsyncContextManager[str]] | None = None
    #: Run beside the kernel (the demo Stash and qBittorrent): entered at once after the front is up and before
    #: the daemons are auto-started; left after the daemons stop.
    companions: list[Callable[[Warden], AbstractAsyncContextManager[None]]] = field(default_factory=list)
    supervisor: Supervisor | None = None
    writer: StoreWriter | None = None
    store: Store | None = None
    jobs: JobManager | None = None
    url: str | None = None
    _supervisor_task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> WardenSettings:
        return self.config.settings

    @property
    def supervising(self) -> bool:
        """The supervisor's task is alive (for health checks)."""
        return self._supervisor_task is not None and not self._supervisor_task.done()

    async def run(self, stop: asyncio.Event) -> list[str]:
        """Run until `stop` is set. Returns the daemons whose task outlived shutdown."""
        for error in self.registry.errors:
            logger.error("daemon plugin not loaded", plugin=error.name, source=error.source, error=error.error)
        settings = self.settings
        self.store = store = await Store.open(
            settings.database_path, busy_timeout_ms=int(settings.store.busy_timeout * 1000)
        )
        try:
            self.writer = writer = StoreWriter(
                self.hub, store, self.clock, self.boot_id, interval=settings.store.write_interval
            )
            previous = await self._recover(store)
            await store.begin_boot(self.boot_id, self.clock.time(), os.getpid())
            jobs = settings.jobs
            self.jobs = JobManager(
                self.hub,
                store,
                self.clock,
                rng=self.rng,
                concurrency=jobs.concurrency,
                default_concurrency=jobs.default_concurrency,
                backoff_initial=jobs.retry_initial,
                backoff_max=jobs.retry_max,
            )
            self.supervisor = supervisor = Supervisor(
                self.registry.daemons, settings, self.hub, self.clock, self.jobs, rng=self.rng, previous=previous
            )
            self.config.on_change(supervisor.apply_settings)
            self.config.on_status(lambda status: self.hub.set_system("config", status))
            await self._serve(store, writer, supervisor, stop)
            leftovers = supervisor.abandon_stuck()
        finally:
            # Also when starting failed: no write may still be running on the connection we close.
            if self.writer is not None and await self.writer.flush(settings.supervisor.shutdown_flush_timeout):
                await store.end_boot(self.boot_id, self.clock.time())  # a clean end (a no-op if never begun)
            await store.close()
        logger.info("Warden stopped", boot=self.boot_id)
        return leftovers

    async def _serve(self, store: Store, writer: StoreWriter, supervisor: Supervisor, stop: asyncio.Event) -> None:
        supervising = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            self._supervisor_task = group.create_task(supervisor.run(supervising), name="supervisor")
            tasks = [
                group.create_task(writer.run(), name="store-writer"),
                self._supervisor_task,
                group.create_task(
                    self.config.watch(self.clock, self.settings.supervisor.config_poll_interval), name="config-watch"
                ),
                group.create_task(self._retention(store), name="retention"),
            ]
            await supervising.wait()
            self._starting()
            async with AsyncExitStack() as around:
                if self.front is not None:
                    # The page first: it answers, and says that Warden is starting, while the companions come up.
                    self.url = await around.enter_async_context(self.front(self))
                # Left before the front: after the daemons stop, while the page still shows the shutdown.
                if await around.enter_async_context(self._beside_companions(stop)):
                    await supervisor.auto_start()
                    self.ready.set()
                    self.hub.set_system("startup", {"ready": True, "message": None, "since": self.clock.time()})
                    logger.info(
                        "Warden running", boot=self.boot_id, daemons=len(supervisor.runners), database=str(store.path)
                    )
                await stop.wait()
                # Daemons stop first, while the page still shows it; then the front closes its clients.
                logger.info("shutting down: stopping every daemon")
                await supervisor.shutdown()
                await self._close_jobs()
            for task in tasks:
                task.cancel()

    def _starting(self) -> None:
        """Until the daemons are auto-started, the page and /api/health say that Warden is still starting."""
        waiting = " once the services they use are up" if self.companions else " in a moment"
        message = f"Warden is starting: daemons with auto-start begin{waiting}."
        self.hub.set_system("startup", {"ready": False, "message": message, "since": self.clock.time()})

    @asynccontextmanager
    async def _beside_companions(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """Enter every companion at once, each in a task of its own that also leaves it (a companion may
        hold a task group open). Yields True once all are in, False if `stop` is set first; leaving this
        leaves them all (a companion still coming up is cancelled)."""
        leave = asyncio.Event()
        entered = [asyncio.Event() for _ in self.companions]

        async def beside(companion: Callable[[Warden], AbstractAsyncContextManager[None]], up: asyncio.Event) -> None:
            async with companion(self):
                up.set()
                await leave.wait()

        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(beside(companion, up), name=f"companion:{getattr(companion, '__name__', 'demo')}")
                for companion, up in zip(self.companions, entered, strict=True)
            ]
            try:
                yield await _first_of(asyncio.gather(*(up.wait() for up in entered)), stop.wait())
            finally:
                leave.set()
                for task, up in zip(tasks, entered, strict=True):
                    if not up.is_set():
                        task.cancel()

    async def _close_jobs(self) -> None:
        """Jobs end with the daemons (the ones left by cancel_jobs_on_stop: false too), within a bound."""
        assert self.jobs is not None
        try:
            async with asyncio.timeout(self.settings.supervisor.shutdown_flush_timeout):
                await self.jobs.close()
        except TimeoutError:
            logger.error("some jobs did not end in time; they are recorded as they were")

    async def _recover(self, store: Store) -> dict[str, DaemonStatus]:
        """Reconcile what a previous process left: anything it was running was interrupted."""
        interrupted = await store.interrupt_jobs(self.clock.time(), "interrupted: Warden stopped unexpectedly")
        if interrupted:
            logger.warning("jobs left running by the previous process marked failed", jobs=interrupted)
        stored = await store.states()
        for name, row in stored.items():
            if row.status.state in _INTERRUPTED:
                message = f"Warden stopped unexpectedly while this daemon was {row.status.state} (boot {row.boot_id})"
                logger.warning("recovered an interrupted daemon", daemon=name, previous_boot=row.boot_id)
                self.hub.record_event(
                    Event(
                        name,
                        "interrupted",
                        Actor.RECOVERY,
                        self.clock.time(),
                        message,
                        row.status.state,
                        DaemonState.STOPPED,
                    )
                )
        return {name: row.status for name, row in stored.items()}

    async def _retention(self, store: Store) -> None:
        settings = self.settings.store
        retention = Retention(
            log_max_age=settings.log_retention_days * _DAY,
            log_max_rows=settings.log_max_rows,
            event_max_age=settings.event_retention_days * _DAY,
            event_max_rows=settings.event_max_rows,
            job_max_age=self.settings.jobs.retention_days * _DAY,
        )
        while True:
            try:
                removed = await store.prune(self.clock.time(), retention)
            except StoreError as error:
                logger.warning("retention pass failed; retrying later", error=str(error))
            else:
                if removed:
                    logger.info("old log lines and events removed", rows=removed)
            await sleep(self.clock, 3600)


async def _first_of(wanted: Awaitable[object], otherwise: Awaitable[object]) -> bool:
    """True when `wanted` is done before `otherwise`, else False; whichever is left is cancelled."""
    first, second = asyncio.ensure_future(wanted), asyncio.ensure_future(otherwise)
    try:
        await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            first.result()  # its error, if it failed
            return True
        return False
    finally:
        first.cancel()
        second.cancel()
