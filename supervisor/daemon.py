"""The daemon contract: what a plugin daemon subclasses, and the context it talks to.

A daemon never touches Warden's database, sockets or files. It reports through its
context: `update_status` (returns at once), `sleep` (interruptible and visible), `log`.
Stopping is cancellation: clean up in `finally` and never swallow `CancelledError`.
A daemon that raises is restarted by the supervisor with its restart policy.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import structlog

from supervisor.clock import Clock, sleep
from supervisor.config import DaemonConfig, LogLevel
from supervisor.hub import StatusHub
from supervisor.jobs import ExternalState, Job, JobFailed, JobFunction, JobManager, JobStatus
from supervisor.models import LogLine

if TYPE_CHECKING:
    from supervisor.config import WardenSettings

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
T = TypeVar("T")


class StatusSink(Protocol):
    """Where a context reports (the daemon's runner)."""

    def report(
        self, message: str, job_id: str | None, job_type: str | None, progress: float | None, problem: bool
    ) -> None: ...

    def report_sleep(self, until: float | None, reason: str | None) -> None: ...

    def report_job(self, job: Job) -> None: ...


class DaemonContext:
    """One run of one daemon: its heartbeat, its sleep, its status and log outlets.

    A new context is made for every run; once the run is over the context is closed and
    anything a leftover task still reports through it is ignored, so an old instance can
    never overwrite the state of the new one.
    """

    def __init__(
        self,
        name: str,
        clock: Clock,
        hub: StatusHub,
        settings: WardenSettings,
        log_level: LogLevel,
        sink: StatusSink,
        jobs: JobManager,
    ) -> None:
        self.name = name
        self.clock = clock
        self.settings = settings
        self.last_heartbeat = clock.monotonic()
        self.closed = False
        self._sink = sink
        self.jobs = jobs
        self._wake: asyncio.Future[bool] | None = None
        self._waiting_jobs = 0
        self.log = DaemonLogger(self, hub, log_level)

    @property
    def resting(self) -> bool:
        """Sleeping or waiting for a job: silence is expected, so the watchdog leaves it alone."""
        return self._wake is not None or self._waiting_jobs > 0

    def heartbeat(self) -> None:
        self.last_heartbeat = self.clock.monotonic()

    def update_status(
        self, message: str, job_id: str | None, job_type: str | None, progress: float | None, problem: bool
    ) -> None:
        if self.closed:
            return
        self.last_heartbeat = self.clock.monotonic()
        self._sink.report(message, job_id, job_type, progress, problem)

    async def sleep(self, seconds: float, reason: str) -> bool:
        if self.closed:
            raise asyncio.CancelledError
        self.heartbeat()
        self._wake = asyncio.get_running_loop().create_future()
        self._sink.report_sleep(self.clock.time() + seconds, reason)
        try:
            return await sleep(self.clock, seconds, self._wake)
        finally:
            self._wake = None
            if not self.closed:
                self.heartbeat()
                self._sink.report_sleep(None, None)

    async def wait_for_job(self, job: Job) -> Job:
        """Wait for a job to end, showing it (id, type, progress) in the daemon's status meanwhile."""
        if self.closed:
            raise asyncio.CancelledError
        stop_listening = self.jobs.listen(job, self._sink.report_job)
        self._waiting_jobs += 1
        try:
            return await self.jobs.wait(job)
        finally:
            self._waiting_jobs -= 1
            self.heartbeat()
            stop_listening()

    def wake(self) -> bool:
        """Cut the current sleep short; False when the daemon was not sleeping."""
        if self._wake is None or self._wake.done():
            return False
        self._wake.set_result(True)
        return True

    def close(self) -> None:
        self.closed = True


class DaemonLogger:
    """Structured log lines of one daemon: kept, streamed to the page, and printed."""

    def __init__(self, context: DaemonContext, hub: StatusHub, level: LogLevel) -> None:
        self._context = context
        self._hub = hub
        self._threshold = _LEVELS[level]
        self._out = structlog.get_logger("warden.daemon").bind(daemon=context.name)

    def debug(self, message: str, **fields: Any) -> None:
        self._emit("debug", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._emit("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._emit("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._emit("error", message, fields)

    def exception(self, message: str, **fields: Any) -> None:
        """An error line with the traceback of the exception being handled."""
        self._emit("error", message, {**fields, "traceback": traceback.format_exc()})

    def _emit(self, level: str, message: str, fields: dict[str, Any]) -> None:
        context = self._context
        if context.closed:
            return
        context.heartbeat()
        if _LEVELS[level] < self._threshold:
            return
        self._hub.record_log(LogLine(context.name, level, message, context.clock.time(), fields))
        getattr(self._out, level)(message, **fields)


class Daemon:
    """Base class of every Warden daemon. See README.md, "Writing a daemon"."""

    #: Identifier: the config section, the URL segment, the log tag. Lowercase, digits, underscores.
    name: ClassVar[str]
    #: What a person reads on the page.
    title: ClassVar[str]
    #: The daemon's settings: subclass DaemonConfig; every field needs a default and a description.
    Config: ClassVar[type[DaemonConfig]] = DaemonConfig
    #: True when a change to the daemon's own Config fields can be taken without a restart:
    #: the supervisor replaces `self.config` and wakes the daemon from its sleep.
    reloadable: ClassVar[bool] = False
    #: Shared settings sections the daemon reads ("stash", "qbittorrent", "paths"): a change to
    #: one of them restarts the daemon.
    uses: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, context: DaemonContext, config: DaemonConfig) -> None:
        self.context = context
        self.config = config
        self.log = context.log

    @property
    def settings(self) -> WardenSettings:
        """The whole validated Warden settings (connections, paths) for this run."""
        return self.context.settings

    async def run(self) -> None:
        raise NotImplementedError

    async def update_status(
        self,
        message: str,
        job_id: str | None = None,
        job_type: str | None = None,
        progress: float | None = None,
        *,
        problem: bool = False,
    ) -> None:
        """Say what the daemon is doing now. Returns at once; also a heartbeat.

        `problem=True` marks the line as a problem the daemon is riding out by itself (its
        service is unreachable or refuses the credentials, and it retries): the page shows it
        as a warning until the next update_status.
        """
        self.context.update_status(message, job_id, job_type, progress, problem)

    async def sleep(self, seconds: float, reason: str) -> bool:
        """Sleep visibly ("sleeping until T: reason"). Returns True when woken early ("run now")."""
        return await self.context.sleep(seconds, reason)

    async def wait_out(self, problem: str, failures: int) -> None:
        """Show `problem` (a service unreachable, credentials refused) and sleep before trying again.

        The wait is backoff_initial, doubled for each failure in a row (`failures`, from 1), up to
        backoff_max. For failures the daemon rides out itself: raising instead would restart it
        and count towards `fatal`, which an outage of its service should never reach.
        """
        delay = min(self.config.backoff_max, self.config.backoff_initial * 2.0 ** (failures - 1))
        self.log.warning("retrying after a failure", problem=problem, attempt=failures, retry_in=round(delay, 2))
        problem = problem.strip()
        if problem.split(" ", 1)[0].islower():  # "the job failed" → "The job failed"; "qBittorrent" stays
            problem = problem[:1].upper() + problem[1:]
        sentence = problem + ("" if problem.endswith((".", "!", "?")) else ".")
        await self.update_status(f"{sentence} Retrying in {delay:g} s.", problem=True)
        await self.sleep(delay, "retry after a failure")

    async def keep_trying(self, attempt: Callable[[], Awaitable[T]], problems: tuple[type[Exception], ...]) -> T:
        """`await attempt()` until it succeeds; each failure of one of the `problems` kinds (a file
        locked or unwritable, a service down) is ridden out with `wait_out` before the next try."""
        failures = 0
        while True:
            try:
                return await attempt()
            except problems as error:
                failures += 1
                await self.wait_out(str(error), failures)

    async def wait_for_setting(self, problem: str, until: Callable[[], bool] | None = None) -> None:
        """Show that a setting the daemon needs is missing, and wait.

        Setting it in a shared section the daemon `uses` restarts the daemon; a change to its own
        config wakes it, and the wait ends once `until()` holds (never, without `until`).
        """
        await self.update_status(problem, problem=True)
        while until is None or not until():
            await self.sleep(86_400, "waiting for the setting")

    async def run_cycles(self, cycle: Callable[[], Awaitable[None]], outages: tuple[type[Exception], ...] = ()) -> None:
        """Call `cycle()` forever (it ends with the daemon's visible sleep until the next).

        A failure of one of the `outages` kinds (its service down, refusing the credentials) or
        a failed job is ridden out with `wait_out`; anything else crashes the run as usual.
        """
        failures = 0
        while True:
            try:
                await cycle()
            except outages as error:
                failures += 1
                await self.wait_out(str(error), failures)
            except JobFailed as failed:  # a job that kept failing (its transient errors were retried already)
                failures += 1
                await self.wait_out(f"the {failed.job.type} job failed: {failed.job.error}", failures)
            else:
                failures = 0

    async def run_job(self, job_type: str, key: str, func: JobFunction, *, max_attempts: int = 3) -> Any:
        """Run `func(job_context)` as a job (or join the active one with this type and key) and wait.

        Returns the job's result; raises JobFailed when it failed or was cancelled. Raise
        TransientError (or a ConnectionError/TimeoutError) inside to have it retried with backoff.
        """
        job = await self.launch_job(job_type, key, func, max_attempts=max_attempts)
        return _result(await self.context.wait_for_job(job))

    async def launch_job(self, job_type: str, key: str, func: JobFunction, *, max_attempts: int = 3) -> Job:
        """Start a job without waiting (see run_job); `wait_for_job` it later."""
        return await self.context.jobs.launch(job_type, key, func, daemon=self.name, max_attempts=max_attempts)

    async def wait_for_job(self, job: Job) -> Any:
        return _result(await self.context.wait_for_job(job))

    async def watch_external_job(
        self,
        job_type: str,
        key: str,
        external_id: str,
        poll: Callable[[], Awaitable[ExternalState]],
        stop: Callable[[], Awaitable[None]],
        *,
        interval: float = 2.0,
        stop_timeout: float = 60.0,
    ) -> Any:
        """Mirror a job of another system (poll its state; `stop` asks it to stop) until it ends there."""
        job = await self.launch_external_job(
            job_type, key, external_id, poll, stop, interval=interval, stop_timeout=stop_timeout
        )
        return _result(await self.context.wait_for_job(job))

    async def launch_external_job(
        self,
        job_type: str,
        key: str,
        external_id: str,
        poll: Callable[[], Awaitable[ExternalState]],
        stop: Callable[[], Awaitable[None]],
        *,
        interval: float = 2.0,
        stop_timeout: float = 60.0,
    ) -> Job:
        """Start mirroring an external job without waiting (see watch_external_job); `wait_for_job` it later."""
        return await self.context.jobs.watch_external(
            job_type, key, external_id, poll, stop, daemon=self.name, interval=interval, stop_timeout=stop_timeout
        )

    async def cancel_job(self, job: Job) -> None:
        """Ask for a job to be cancelled, in any state, and return at once; an external job is then
        stopped in its own system and ends `cancelled` once that system confirms (see jobs.py)."""
        await self.context.jobs.cancel(job.id)


def _result(job: Job) -> Any:
    if job.status is not JobStatus.COMPLETED:
        raise JobFailed(job)
    return job.result
