"""Supervisor: owns every daemon's runner and the tasks that watch over them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

from supervisor.clock import Clock, sleep
from supervisor.config import WardenSettings
from supervisor.daemon import Daemon
from supervisor.hub import StatusHub
from supervisor.jobs import JobManager
from supervisor.looplag import LoopLagMonitor
from supervisor.models import Actor, DaemonStatus, Event
from supervisor.runner import DaemonRunner
from supervisor.tasks import track_tasks

logger = structlog.get_logger("warden.supervisor")


#: Settings sections read once at start (the listening socket, the database, the job runner).
RESTART_SECTIONS = ("server", "store", "supervisor", "jobs")


class UnknownDaemon(KeyError):
    def __str__(self) -> str:
        return f"no daemon named {self.args[0]!r}"


class Supervisor:
    def __init__(
        self,
        daemons: dict[str, type[Daemon]],
        settings: WardenSettings,
        hub: StatusHub,
        clock: Clock,
        jobs: JobManager,
        *,
        rng: random.Random | None = None,
        previous: dict[str, DaemonStatus] | None = None,
    ) -> None:
        self.settings = settings
        self._hub = hub
        self._clock = clock
        rng = rng or random.Random()
        previous = previous or {}
        self.jobs = jobs
        self.runners = {
            name: DaemonRunner(cls, settings.daemon_config(name), settings, hub, clock, rng, jobs, previous.get(name))
            for name, cls in sorted(daemons.items())
        }

    def runner(self, name: str) -> DaemonRunner:
        try:
            return self.runners[name]
        except KeyError:
            raise UnknownDaemon(name) from None

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Supervise until cancelled: one task per daemon, the watchdog, the loop-lag monitor."""
        loop = asyncio.get_running_loop()
        monitor = LoopLagMonitor(loop, self.settings.supervisor.loop_lag_threshold, self._loop_blocked)
        monitor.start()
        track_tasks(loop)  # so the tasks a daemon leaves running end with its run
        try:
            async with asyncio.TaskGroup() as group:
                for runner in self.runners.values():
                    group.create_task(runner.supervise(), name=f"supervise:{runner.name}")
                group.create_task(self._watchdog(), name="watchdog")
                if started is not None:
                    started.set()
        finally:
            monitor.stop()

    async def _watchdog(self) -> None:
        while True:
            await sleep(self._clock, self.settings.supervisor.watchdog_interval)
            now = self._clock.monotonic()
            for runner in self.runners.values():
                runner.check_heartbeat(now)

    def _loop_blocked(self, task_name: str | None, seconds: float) -> None:
        daemon = task_name.removeprefix("daemon:") if task_name and task_name.startswith("daemon:") else None
        culprit = f"daemon {daemon}" if daemon else f"task {task_name or 'unknown'}"
        logger.warning("event loop blocked", culprit=culprit, seconds=round(seconds, 2))
        if daemon in self.runners:
            message = f"blocked the event loop for {seconds:.2f} s"
            self._hub.record_event(Event(daemon, "loop-blocked", Actor.WATCHDOG, self._clock.time(), message))

    # -- commands --------------------------------------------------------------------

    async def start(self, name: str, actor: Actor = Actor.USER) -> DaemonStatus:
        return await self.runner(name).start(actor)

    async def stop(self, name: str, actor: Actor = Actor.USER) -> DaemonStatus:
        return await self.runner(name).stop(actor)

    async def restart(self, name: str, actor: Actor = Actor.USER) -> DaemonStatus:
        return await self.runner(name).restart(actor)

    def wake(self, name: str) -> bool:
        return self.runner(name).wake()

    async def start_all(self, actor: Actor = Actor.USER) -> list[DaemonStatus]:
        return await self._each(lambda r: r.start(actor), lambda r: r.config.enabled)

    async def stop_all(self, actor: Actor = Actor.USER) -> list[DaemonStatus]:
        return await self._each(lambda r: r.stop(actor))

    async def shutdown(self) -> None:
        """Stop every daemon for good: from now on nothing starts (a request, a config edit)."""
        for runner in self.runners.values():
            runner.closing = True
        await self.stop_all(Actor.SHUTDOWN)

    async def restart_all(self, actor: Actor = Actor.USER) -> list[DaemonStatus]:
        return await self._each(lambda r: r.restart(actor), lambda r: r.config.enabled)

    async def auto_start(self) -> None:
        await self._each(
            lambda r: r.start(Actor.AUTO_START),
            lambda r: r.config.auto_start and r.config.enabled,
        )

    async def _each(
        self,
        command: Callable[[DaemonRunner], Awaitable[DaemonStatus]],
        which: Callable[[DaemonRunner], bool] = lambda runner: True,
    ) -> list[DaemonStatus]:
        """Run a command on the chosen daemons concurrently."""
        return list(await asyncio.gather(*(command(r) for r in self.runners.values() if which(r))))

    async def apply_settings(self, settings: WardenSettings) -> None:
        """New validated settings: each daemon reconfigures itself, concurrently, only if affected."""
        later = [name for name in RESTART_SECTIONS if getattr(self.settings, name) != getattr(settings, name)]
        if later:
            # Said plainly, so nobody wonders why a new port or job limit does nothing yet.
            logger.warning("these settings take effect when Warden restarts", sections=later)
        self.settings = settings
        await asyncio.gather(
            *(runner.reconfigure(settings.daemon_config(name), settings) for name, runner in self.runners.items())
        )

    def abandon_stuck(self) -> list[str]:
        """At shutdown: daemons whose task outlived its stop_timeout are recorded as abandoned."""
        stuck = [r for r in self.runners.values() if r.task is not None and not r.task.done()]
        for runner in stuck:
            runner.abandon()
        return [runner.name for runner in stuck]
