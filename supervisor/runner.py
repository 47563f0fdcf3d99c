"""DaemonRunner: the lifecycle of one daemon, driven by one long-lived supervising task.

Commands (start, stop, restart, wake) only change what is wanted and nudge the task; the
task alone creates, cancels and restarts the daemon's task. So concurrent commands can
never make two instances or lose a stop: whatever is wanted last is what happens.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from supervisor.clock import Clock, sleep
from supervisor.config import KERNEL_FIELDS, DaemonConfig, WardenSettings
from supervisor.daemon import Daemon, DaemonContext
from supervisor.hub import StatusHub
from supervisor.jobs import Job, JobManager
from supervisor.models import Actor, DaemonState, DaemonStatus, Event, RestartPolicy
from supervisor.tasks import RunTasks, run_context

logger = structlog.get_logger("warden.supervisor")

S = DaemonState
_ALLOWED: dict[DaemonState, frozenset[DaemonState]] = {
    S.STOPPED: frozenset({S.STARTING, S.DISABLED}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.STOPPED, S.BACKOFF, S.FATAL}),
    S.RUNNING: frozenset({S.STOPPING, S.STOPPED, S.BACKOFF, S.FATAL}),
    S.STOPPING: frozenset({S.STOPPED, S.BACKOFF, S.FATAL}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED, S.FATAL}),
    S.FATAL: frozenset({S.STARTING, S.STOPPED}),
    S.DISABLED: frozenset({S.STOPPED}),
}
#: States that end a start request: it runs, or it failed and the policy has decided.
_STARTED = frozenset({S.RUNNING, S.BACKOFF, S.FATAL})
#: States that end a stop request.
_STOPPED = frozenset({S.STOPPED, S.DISABLED, S.FATAL})


class DaemonDisabled(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Why the supervising task must cut the current run (or backoff) short."""

    actor: Actor
    restart: bool = False
    hung: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended."""

    crashed: bool
    error: str | None = None
    actor: Actor = Actor.CRASH


class DaemonRunner:
    def __init__(
        self,
        daemon_class: type[Daemon],
        config: DaemonConfig,
        settings: WardenSettings,
        hub: StatusHub,
        clock: Clock,
        rng: random.Random,
        jobs: JobManager,
        initial: DaemonStatus | None = None,
    ) -> None:
        self.daemon_class = daemon_class
        self.name = daemon_class.name
        self.config = config
        self.settings = settings
        self._hub = hub
        self._clock = clock
        self._rng = rng
        self._jobs = jobs
        state = S.STOPPED if config.enabled else S.DISABLED
        base = initial or DaemonStatus(daemon_class.name, daemon_class.title)
        self.status = DaemonStatus(
            self.name, daemon_class.title, state, last_error=base.last_error, updated_at=clock.time()
        )
        self.context: DaemonContext | None = None
        self.task: asyncio.Task[None] | None = None
        self.daemon: Daemon | None = None
        self._want_running = False
        self._start_actor = Actor.USER
        self._interrupt: Interrupt | None = None
        self._nudge: asyncio.Future[bool] | None = None
        self._restart_times: deque[float] = deque()
        self._failures = 0
        self.runs = 0
        self.closing = False  # set at shutdown: nothing starts any more
        self._waiters: list[tuple[Callable[[DaemonStatus], bool], asyncio.Future[None]]] = []
        hub.set_status(self.status)

    # -- commands -------------------------------------------------------------------

    async def start(self, actor: Actor = Actor.USER, timeout: float = 5.0) -> DaemonStatus:
        """Start the daemon (or cut its backoff short) and wait briefly for it to settle."""
        self._refuse_start()
        if self.status.state in (S.STARTING, S.RUNNING) and self._want_running and self._interrupt is None:
            return self.status
        if actor is Actor.USER:
            # A person starting a daemon clears the crash history: fatal means "wait for a person".
            self._restart_times.clear()
            self._failures = 0
        self._want_running = True
        self._start_actor = actor
        self._poke()
        await self._wait(lambda s: s.state in _STARTED or not self._want_running, timeout)
        return self.status

    async def stop(self, actor: Actor = Actor.USER, timeout: float | None = None) -> DaemonStatus:
        """Stop the daemon (cancel it, give it stop_timeout) and wait until it has stopped."""
        self._want_running = False
        if self.status.state in (S.STARTING, S.RUNNING, S.BACKOFF):
            self._interrupt = Interrupt(actor)
        elif self.status.state is S.FATAL:
            self._transition(S.STOPPED, actor, "acknowledged")
        self._poke()
        await self._wait(
            lambda s: s.state in _STOPPED or self._want_running,
            self.config.stop_timeout + 1 if timeout is None else timeout,
        )
        return self.status

    async def restart(self, actor: Actor = Actor.USER, timeout: float = 5.0) -> DaemonStatus:
        """Stop the running instance and start a new one; a start when not running."""
        self._refuse_start()
        if self.status.state not in (S.STARTING, S.RUNNING):
            return await self.start(actor, timeout)
        runs = self.runs
        self._want_running = True
        self._start_actor = actor
        self._interrupt = Interrupt(actor, restart=True)
        self._poke()
        await self._wait(
            lambda s: (self.runs > runs and s.state in _STARTED) or not self._want_running,
            self.config.stop_timeout + timeout,
        )
        return self.status

    def _refuse_start(self) -> None:
        if self.closing:
            raise DaemonDisabled("Warden is shutting down")
        if not self.config.enabled:
            raise DaemonDisabled(f"{self.name} is disabled; enable it in its configuration first")

    def wake(self) -> bool:
        """Cut the daemon's sleep short ("run now"); False when it was not sleeping."""
        return self.context is not None and self.context.wake()

    def overdue(self, now: float) -> float | None:
        """Seconds of silence when past watchdog_timeout (a hang), else None. Sleeping or waiting
        for a job is expected silence."""
        context = self.context
        if context is None or context.closed or context.resting:
            return None
        silent = now - context.last_heartbeat
        return silent if silent > self.config.watchdog_timeout else None

    def check_heartbeat(self, now: float) -> None:
        """Called by the watchdog: a daemon that is overdue is recorded as hung and cancelled."""
        silent = self.overdue(now)
        if silent is None or self._interrupt is not None:
            return
        message = f"no heartbeat for {silent:.0f} s (watchdog_timeout {self.config.watchdog_timeout:g} s)"
        self._record("hung", Actor.WATCHDOG, message)
        logger.warning("daemon hung; cancelling it", daemon=self.name, silent_for=round(silent, 1))
        self._interrupt = Interrupt(Actor.WATCHDOG, hung=True, message=message)
        self._poke()

    async def reconfigure(self, config: DaemonConfig, settings: WardenSettings) -> None:
        """Take a new config: live when nothing the running code depends on changed, else by a restart."""
        old_config, old_settings = self.config, self.settings
        self.config, self.settings = config, settings
        if self.closing:
            return
        changed = {field for field in type(config).model_fields if getattr(old_config, field) != getattr(config, field)}
        uses_changed = any(getattr(old_settings, s) != getattr(settings, s) for s in self.daemon_class.uses)
        if not changed and not uses_changed:
            return
        self._record("config", Actor.CONFIG, "changed: " + ", ".join(sorted(changed) or self.daemon_class.uses))
        self._set()  # clients show enabled and auto_start with the state: publish it even if nothing else moves
        if not config.enabled:
            await self.stop(Actor.CONFIG)
            if self.status.state is S.STOPPED:  # else its task ignores cancellation: it stays visible
                self._transition(S.DISABLED, Actor.CONFIG)
            return
        if self.status.state is S.DISABLED:
            self._transition(S.STOPPED, Actor.CONFIG)
            if config.auto_start:
                await self.start(Actor.CONFIG)
            return
        if self.status.state not in (S.STARTING, S.RUNNING) or self.daemon is None or self.context is None:
            return  # the next start reads the new config
        own_changed = changed - KERNEL_FIELDS
        # Kernel fields are read from self.config when needed, except the logger's level.
        if uses_changed or "log_level" in changed or (own_changed and not self.daemon_class.reloadable):
            await self.restart(Actor.CONFIG)
        elif own_changed:
            self.daemon.config = config
            self.context.settings = settings
            self.context.wake()

    def abandon(self) -> None:
        """Warden exits without this daemon's task, which ignores cancellation: say so, show it stopped."""
        self._record("abandoned", Actor.SHUTDOWN, "Warden exited while the daemon still ignored cancellation")
        if self.status.state is S.STOPPING:
            self._transition(S.STOPPED, Actor.SHUTDOWN, "abandoned")

    def _poke(self) -> None:
        if self._nudge is not None and not self._nudge.done():
            self._nudge.set_result(True)

    async def _wait(self, predicate: Callable[[DaemonStatus], bool], timeout: float) -> None:
        """Wait until `predicate(status)` holds after a status change, or `timeout` passes."""
        if predicate(self.status):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait({future}, timeout=timeout)
        finally:
            self._waiters.remove(entry)

    # -- the supervising task --------------------------------------------------------

    async def supervise(self) -> None:
        """Run for as long as Warden runs; owned by the Supervisor's task group."""
        while True:
            if not self._want_running:
                self._interrupt = None
                await self._wait_for_nudge()
                continue
            outcome = await self._run_once(self._start_actor)
            interrupt, self._interrupt = self._interrupt, None
            if outcome is None:
                if interrupt is not None and interrupt.restart:
                    self._start_actor = interrupt.actor
            elif not self._want_running:  # a stop came as the run ended by itself: no restart
                if outcome.error:
                    self._set(last_error=outcome.error)
                self._transition(S.STOPPED, interrupt.actor if interrupt else Actor.USER, outcome.error or "exited")
            else:
                await self._after_run(outcome)

    async def _wait_for_nudge(self, seconds: float | None = None) -> bool:
        """Wait for a command (or `seconds`); True when a command came first."""
        self._nudge = asyncio.get_running_loop().create_future()
        try:
            if seconds is None:
                return await self._nudge
            return await sleep(self._clock, seconds, self._nudge)
        finally:
            self._nudge = None

    async def _run_once(self, actor: Actor) -> Outcome | None:
        """One run of the daemon. Returns how it ended, or None when it was stopped on request."""
        self._transition(S.STARTING, actor)
        self.runs += 1
        context = DaemonContext(
            self.name, self._clock, self._hub, self.settings, self.config.log_level, self, self._jobs
        )
        self.context = context
        started = self._clock.monotonic()
        try:
            self.daemon = self.daemon_class(context, self.config)
        except Exception as error:  # a constructor that raises is a crash like any other
            context.close()
            return Outcome(True, _describe(error))
        run_tasks: RunTasks = RunTasks()
        self.task = asyncio.create_task(self.daemon.run(), name=f"daemon:{self.name}", context=run_context(run_tasks))
        try:
            while not self.task.done() and self._interrupt is None:
                waits: set[asyncio.Future[Any]] = {self.task, self._nudge_future()}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if self.task.done():
                outcome = self._outcome_of(self.task)
                # A stop that came as it ended, a crash, or else the run's own actor: a clean exit is no crash.
                ended_by = self._interrupt.actor if self._interrupt else Actor.CRASH if outcome.crashed else actor
                await self._end_leftovers(run_tasks, context, ended_by)
                return outcome
            interrupt = self._interrupt
            assert interrupt is not None
            self._transition(S.STOPPING, interrupt.actor, interrupt.message)
            await self._cancel(self.task, interrupt.actor)
            # Before the card says stopped: nothing of the run may still work then.
            await self._end_leftovers(run_tasks, context, interrupt.actor)
            if not interrupt.restart and not interrupt.hung and self.config.cancel_jobs_on_stop:
                await self._jobs.cancel_for_daemon(self.name)
            if interrupt.hung:
                return Outcome(True, interrupt.message, Actor.WATCHDOG)
            self._transition(S.STOPPED, interrupt.actor)
            return None
        finally:
            try:
                if not self.task.done():  # this supervising task was cancelled (teardown): take the daemon along
                    self.task.cancel()
                    await asyncio.wait({self.task}, timeout=self.config.stop_timeout)
                await self._end_leftovers(
                    run_tasks, context, self._interrupt.actor if self._interrupt else Actor.SHUTDOWN
                )
            finally:  # even when a second cancellation cuts the waits short
                context.close()
            self.daemon = None
            if self._clock.monotonic() - started >= self.config.healthy_after:
                self._failures = 0
                self._restart_times.clear()

    def _nudge_future(self) -> asyncio.Future[bool]:
        self._nudge = asyncio.get_running_loop().create_future()
        return self._nudge

    def _outcome_of(self, task: asyncio.Task[None]) -> Outcome:
        if task.cancelled():
            return Outcome(True, "the daemon's task was cancelled from outside")
        error = task.exception()
        if error is None:
            return Outcome(False)
        logger.error("daemon crashed", daemon=self.name, exc_info=error)
        return Outcome(True, _describe(error))

    async def _cancel(self, task: asyncio.Task[None], actor: Actor) -> None:
        """Cancel the daemon's task and wait for it: stop_timeout, then keep waiting, loudly."""
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.config.stop_timeout)
        if not done:
            message = f"did not stop within {self.config.stop_timeout:g} s of being cancelled"
            self._record("stop-timeout", actor, message)
            logger.error("daemon ignores cancellation", daemon=self.name, stop_timeout=self.config.stop_timeout)
            self._set(last_error=message)
            while not task.done():  # again and again: a daemon that swallowed one cancellation ends at its next await
                task.cancel()
                await asyncio.wait({task}, timeout=self.config.stop_timeout)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("daemon raised while stopping", daemon=self.name, exc_info=task.exception())

    async def _end_leftovers(self, run_tasks: RunTasks, context: DaemonContext, actor: Actor) -> None:
        """Tasks the daemon started and left running end with its run: named in its log and events, cancelled.

        Each is handled once: the set is emptied, so a later call (teardown) sees only tasks started since.
        """
        leftovers = [task for task in run_tasks if task is not self.task and not task.done()]
        run_tasks.clear()
        if not leftovers:
            return
        names = sorted(task.get_name() for task in leftovers)
        context.log.warning("cancelling tasks the daemon left running", tasks=names)
        self._record("leftover-tasks", actor, f"cancelled {len(names)} task(s) left running: {', '.join(names)}")
        for task in leftovers:
            task.cancel()
        _, pending = await asyncio.wait(leftovers, timeout=self.config.stop_timeout)
        if pending:
            logger.error(
                "tasks the daemon left running ignore cancellation",
                daemon=self.name,
                tasks=sorted(task.get_name() for task in pending),
            )

    async def _after_run(self, outcome: Outcome) -> None:
        """A run ended by itself (or was hung): decide between stopped, backoff and fatal."""
        policy = self.config.restart
        if not outcome.crashed and policy is not RestartPolicy.ALWAYS:
            self._want_running = False
            self._transition(S.STOPPED, Actor.CRASH, "exited")
            return
        if outcome.error:
            self._set(last_error=outcome.error)
        if policy is RestartPolicy.NEVER:
            self._want_running = False
            self._transition(S.FATAL, outcome.actor, f"crashed, restart policy is never: {outcome.error}")
            return
        delay = self._next_delay()
        if delay is None:
            self._want_running = False
            self._transition(
                S.FATAL,
                outcome.actor,
                f"{self.config.max_restarts} restarts within {self.config.restart_window:g} s; waiting for a person",
            )
            return
        self._set(next_restart_at=self._clock.time() + delay)
        self._transition(S.BACKOFF, outcome.actor, f"restart in {delay:.1f} s: {outcome.error or 'exited'}")
        self._interrupt = None
        cut_short = await self._wait_for_nudge(delay)
        self._set(next_restart_at=None)
        interrupt, self._interrupt = self._interrupt, None
        if not self._want_running:
            self._transition(S.STOPPED, interrupt.actor if interrupt else Actor.USER)
        elif not cut_short:  # an automatic restart (a person's start sets its own actor)
            self._start_actor = outcome.actor
            self._set(restarts=self.status.restarts + 1)

    def _next_delay(self) -> float | None:
        """Exponential backoff with jitter; None when the burst limit is reached."""
        now = self._clock.monotonic()
        window = self.config.restart_window
        while self._restart_times and now - self._restart_times[0] > window:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.config.max_restarts:
            return None
        self._restart_times.append(now)
        self._failures += 1
        delay = min(self.config.backoff_max, self.config.backoff_initial * 2.0 ** (self._failures - 1))
        return min(self.config.backoff_max, delay * self._rng.uniform(0.8, 1.2))

    # -- state -------------------------------------------------------------------------

    def report(
        self, message: str, job_id: str | None, job_type: str | None, progress: float | None, problem: bool
    ) -> None:
        """The daemon's update_status: the hot path, so plain attribute writes and nothing else."""
        status = self.status
        if status.state is S.STARTING:  # checked here, not in _alive(): a call per update costs 0.2 µs
            self._alive()
        status.message = message
        status.problem = problem
        status.job_id = job_id
        status.job_type = job_type
        status.progress = progress
        status.heartbeat_at = status.updated_at = self._clock.time()
        self._hub.set_status(status)

    def report_job(self, job: Job) -> None:
        """A job the daemon waits for changed: its card links to it and shows its progress."""
        if self.context is None or self.context.closed:
            return
        self._alive()
        self.context.heartbeat()
        self._set(job_id=job.id, job_type=job.type, progress=job.progress, heartbeat_at=self._clock.time())

    def report_sleep(self, until: float | None, reason: str | None) -> None:
        self._alive()
        self._set(sleeping_until=until, sleep_reason=reason, heartbeat_at=self._clock.time())

    def _alive(self) -> None:
        """The daemon's first sign of life (a status, a sleep, a job) makes it running."""
        if self.status.state is S.STARTING:
            self._transition(S.RUNNING, self._start_actor)

    def _set(self, **changes: Any) -> None:
        for field, value in changes.items():
            setattr(self.status, field, value)
        self.status.updated_at = self._clock.time()
        self._hub.set_status(self.status)
        self._notify()

    def _transition(self, to: DaemonState, actor: Actor, message: str = "") -> None:
        before = self.status.state
        assert to in _ALLOWED[before], f"{self.name}: {before} -> {to} is not a valid transition"
        now = self._clock.time()
        changes: dict[str, Any] = {"state": to}
        if to is S.STARTING:
            changes.update(message="", problem=False, job_id=None, job_type=None, progress=None, started_at=None)
        elif to is S.RUNNING:
            changes.update(started_at=now, heartbeat_at=now)
        elif to in (S.STOPPED, S.BACKOFF, S.FATAL, S.DISABLED):
            # A daemon that is not running shows no activity: nothing stale stays on the card.
            changes.update(
                message="",
                problem=False,
                job_id=None,
                job_type=None,
                progress=None,
                sleeping_until=None,
                sleep_reason=None,
                started_at=None,
            )
        self._set(**changes)
        self._hub.record_event(Event(self.name, "transition", actor, now, message, before, to))
        logger.info("daemon state", daemon=self.name, state=str(to), actor=str(actor), reason=message or None)

    def _record(self, kind: str, actor: Actor, message: str) -> None:
        self._hub.record_event(Event(self.name, kind, actor, self._clock.time(), message))

    def _notify(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(self.status):
                future.set_result(None)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
