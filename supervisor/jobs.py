"""Jobs: units of work a daemon launches (local) or watches in another system (external).

The JobManager owns every job task. A job is single-flight per (type, key): launching while
one is active returns that one, and SQLite's unique index on active jobs enforces it across
everything that writes the database. Cancelling a job cancels its own task only, so it can
never harm the others; a pending job that is cancelled never starts.
"""

from __future__ import annotations

import asyncio
import enum
import random
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from supervisor.clock import Clock, sleep
from supervisor.hub import StatusHub
from supervisor.models import shallow_copier
from supervisor.store import DuplicateJob, Store, StoreError
from supervisor.tasks import detached

logger = structlog.get_logger("warden.jobs")


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"  # an external job asked to stop; waiting for the other system
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELLING})
#: Ended jobs kept in memory (for waiters and quick lookups); the database keeps them all.
KEEP_ENDED = 1000


@dataclass(slots=True)
class Job:
    """A job's whole record. Mutated by the JobManager only; subscribers get snapshots."""

    id: str
    type: str
    key: str
    daemon: str | None
    status: JobStatus = JobStatus.PENDING
    progress: float | None = None
    message: str = ""
    items_done: int | None = None
    items_total: int | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    attempt: int = 0
    max_attempts: int = 1
    external_id: str | None = None
    retry_at: float | None = None  # when the next attempt starts, after a transient failure
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def snapshot(self) -> Job:
        return _copy_job(self)


_copy_job = shallow_copier(Job)


class JobFailed(Exception):
    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.type} {job.key!r} {job.status}: {job.error or ''}".rstrip(": "))


class TransientError(Exception):
    """Raise it (or `raise TransientError from error`) from a job to have the job retried."""


@dataclass(frozen=True, slots=True)
class ExternalState:
    """What the other system says about its job."""

    status: JobStatus  # RUNNING while it works, then COMPLETED, FAILED or CANCELLED
    progress: float | None = None
    message: str = ""
    error: str | None = None


class JobContext:
    """What a running job reports through."""

    def __init__(self, manager: JobManager, job: Job) -> None:
        self._manager = manager
        self.job = job

    def progress(
        self,
        progress: float | None = None,
        message: str | None = None,
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress (0-100; or `done` of `total` items, from which progress follows)."""
        job = self.job
        if done is not None:
            job.items_done = done
        if total is not None:
            job.items_total = total
        if progress is None and job.items_total:
            progress = 100 * (job.items_done or 0) / job.items_total
        if progress is not None:
            job.progress = max(0.0, min(100.0, progress))
        if message is not None:
            job.message = message
        self._manager.publish(job)


JobFunction = Callable[[JobContext], Awaitable[Any]]


@dataclass
class _Running:
    job: Job
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    stop_external: Callable[[], Awaitable[None]] | None = None
    listeners: list[Callable[[Job], None]] = field(default_factory=list)
    recorded: asyncio.Event = field(default_factory=asyncio.Event)  # the row is in the database (or failed)
    failure: BaseException | None = None


class JobManager:
    def __init__(
        self,
        hub: StatusHub,
        store: Store,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        concurrency: dict[str, int] | None = None,
        default_concurrency: int = 2,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self._hub = hub
        self._store = store
        self._clock = clock
        self._rng = rng or random.Random()
        self._concurrency = concurrency or {}
        self._default_concurrency = default_concurrency
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._active: dict[tuple[str, str], _Running] = {}
        self._by_id: dict[str, _Running] = {}
        self._backoff = (backoff_initial, backoff_max)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: deque[str] = deque()

    # -- launching -----------------------------------------------------------------------

    async def launch(
        self, job_type: str, key: str, func: JobFunction, *, daemon: str | None = None, max_attempts: int = 3
    ) -> Job:
        """Start a local job, or return the active one with this type and key (single-flight)."""
        running = await self._register(job_type, key, daemon, max_attempts, None)
        if running.task is None and running.job.status is JobStatus.PENDING and not running.done.is_set():
            running.task = self._spawn(self._execute(running, func), running)
        return running.job

    async def watch_external(
        self,
        job_type: str,
        key: str,
        external_id: str,
        poll: Callable[[], Awaitable[ExternalState]],
        stop: Callable[[], Awaitable[None]],
        *,
        daemon: str | None = None,
        interval: float = 2.0,
        stop_timeout: float = 60.0,
    ) -> Job:
        """Mirror a job running in another system until it ends there."""
        running = await self._register(job_type, key, daemon, 1, external_id)
        if running.task is None and not running.done.is_set():
            running.stop_external = stop
            running.task = self._spawn(self._follow(running, poll, interval, stop_timeout), running)
        return running.job

    async def wait(self, job: Job) -> Job:
        """Wait until the job has ended; returns its final record."""
        running = self._by_id.get(job.id)
        if running is not None:
            await running.done.wait()
        return job

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a job in any state. Returns the job (unchanged when it had already ended), None if unknown."""
        running = self._by_id.get(job_id)
        if running is None:
            return None
        job = running.job
        if job.status not in ACTIVE or running.cancel_requested:
            return job
        running.cancel_requested = True
        if running.stop_external is not None:
            self._set(job, status=JobStatus.CANCELLING, message="stop requested; waiting for confirmation")
            # The follower sends the stop call and keeps watching until the other system confirms.
        if running.task is not None:
            running.task.cancel()
        return job

    async def cancel_for_daemon(self, daemon: str) -> None:
        for running in list(self._by_id.values()):
            if running.job.daemon == daemon and running.job.status in ACTIVE:
                await self.cancel(running.job.id)

    def listen(self, job: Job, listener: Callable[[Job], None]) -> Callable[[], None]:
        """Call `listener(job)` on every change of the job; returns the function that stops it."""
        running = self._by_id[job.id]
        running.listeners.append(listener)
        listener(job)
        return lambda: running.listeners.remove(listener)

    def get(self, job_id: str) -> Job | None:
        running = self._by_id.get(job_id)
        return running.job if running else None

    def active(self) -> list[Job]:
        return [running.job for running in self._active.values()]

    async def close(self) -> None:
        """At shutdown: cancel every job and wait for their cleanup."""
        for running in list(self._active.values()):
            await self.cancel(running.job.id)
        if self._tasks:
            await asyncio.wait(self._tasks)

    # -- internals -------------------------------------------------------------------------

    async def _register(
        self, job_type: str, key: str, daemon: str | None, max_attempts: int, external_id: str | None
    ) -> _Running:
        while (existing := self._active.get((job_type, key))) is not None:
            if existing.cancel_requested:  # never join a job on its way out: wait, then start anew
                await existing.done.wait()
                continue
            await existing.recorded.wait()
            if existing.failure is not None:
                raise existing.failure
            return existing
        now = self._clock.time()
        job = Job(
            uuid.uuid4().hex[:12],
            job_type,
            key,
            daemon,
            max_attempts=max_attempts,
            external_id=external_id,
            created_at=now,
            updated_at=now,
        )
        # Reserve the key before awaiting the database, so concurrent launches here join this one.
        running = self._active[(job_type, key)] = self._by_id[job.id] = _Running(job)
        insert = asyncio.create_task(self._insert(job), context=detached())
        try:
            # Shielded: a cancelled launch must still learn whether the row was written.
            await asyncio.shield(insert)
        except asyncio.CancelledError:
            running.failure = StoreError("the launch was cancelled")
            running.cancel_requested = True
            insert.add_done_callback(lambda done: self._launch_abandoned(running, done))
            raise
        except StoreError as error:
            self._forget(running)
            running.failure = error
            raise
        finally:
            running.recorded.set()
        self.publish(job)
        return running

    def _launch_abandoned(self, running: _Running, insert: asyncio.Future[None]) -> None:
        """The launch was cancelled while its row was being written: a written row ends cancelled."""
        if insert.cancelled() or insert.exception() is not None:
            self._forget(running)
        else:
            self._finish(running, JobStatus.CANCELLED, message="the launch was cancelled")

    def _forget(self, running: _Running) -> None:
        job = running.job
        self._active.pop((job.type, job.key), None)
        self._by_id.pop(job.id, None)
        running.done.set()

    async def _insert(self, job: Job) -> None:
        """Record a new job; the unique index guarantees no other writer has an active twin."""
        try:
            await self._store.insert_job(job)
        except DuplicateJob:
            # A twin that ended here may not be written yet (writes are batched): save it, then retry.
            ended = [
                r.job
                for r in self._by_id.values()
                if (r.job.type, r.job.key) == (job.type, job.key) and r.job.status not in ACTIVE
            ]
            if not ended:
                raise
            await self._store.save_jobs(ended)
            await self._store.insert_job(job)

    def _spawn(self, work: Coroutine[Any, Any, None], running: _Running) -> asyncio.Task[None]:
        # Detached: a job may outlive the daemon run that launched it (the runner ends a run's own tasks).
        task = asyncio.create_task(work, name=f"job:{running.job.type}:{running.job.id}", context=detached())
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._settle(running, done))
        return task

    def _settle(self, running: _Running, task: asyncio.Task[None]) -> None:
        """A job task ended: its job must have ended too (a task cancelled before it ever ran has not)."""
        self._tasks.discard(task)
        if task.cancelled():
            self._finish(running, JobStatus.CANCELLED)
        elif task.exception() is not None:
            self._finish(running, JobStatus.FAILED, error=task.exception())

    def _slot(self, job_type: str) -> asyncio.Semaphore:
        if job_type not in self._slots:
            self._slots[job_type] = asyncio.Semaphore(self._concurrency.get(job_type, self._default_concurrency))
        return self._slots[job_type]

    async def _execute(self, running: _Running, func: JobFunction) -> None:
        job = running.job
        try:
            async with self._slot(job.type):
                while True:
                    job.attempt += 1
                    self._set(job, status=JobStatus.RUNNING, started_at=job.started_at or self._clock.time())
                    try:
                        result = await func(JobContext(self, job))
                    except (TransientError, ConnectionError, TimeoutError) as error:
                        if job.attempt >= job.max_attempts:
                            self._finish(running, JobStatus.FAILED, error=error)
                            return
                        delay = self._retry_delay(job.attempt)
                        message = f"attempt {job.attempt} failed ({_describe(error)}); retrying in {delay:.1f} s"
                        self._set(job, message=message, retry_at=self._clock.time() + delay)
                        await sleep(self._clock, delay)
                        job.retry_at = None
                    except Exception as error:
                        self._finish(running, JobStatus.FAILED, error=error)
                        return
                    else:
                        self._finish(running, JobStatus.COMPLETED, result=result)
                        return
        except asyncio.CancelledError:
            self._finish(running, JobStatus.CANCELLED)
            if not running.cancel_requested:
                raise  # shutdown or an outer cancel: not ours to swallow

    async def _follow(
        self, running: _Running, poll: Callable[[], Awaitable[ExternalState]], interval: float, stop_timeout: float
    ) -> None:
        job = running.job
        self._set(job, status=JobStatus.RUNNING, attempt=1, started_at=self._clock.time())
        try:
            while True:
                state = await poll()
                self._set(job, progress=state.progress, message=state.message or job.message)
                if state.status not in ACTIVE:
                    self._finish(running, state.status, error=state.error)
                    return
                await sleep(self._clock, interval)
        except asyncio.CancelledError:
            if not running.cancel_requested:
                self._finish(running, JobStatus.CANCELLED)
                raise
        except Exception as error:
            self._finish(running, JobStatus.FAILED, error=error)
            return
        await self._stop_external(running, poll, interval, stop_timeout)

    async def _stop_external(
        self, running: _Running, poll: Callable[[], Awaitable[ExternalState]], interval: float, stop_timeout: float
    ) -> None:
        """Ask the other system to stop, then watch until it confirms (or time runs out)."""
        deadline = self._clock.monotonic() + stop_timeout
        try:
            asked = False
            while self._clock.monotonic() < deadline:
                if not asked:
                    asked = await self._ask_to_stop(running)
                    if not asked:  # the other system did not take the request: ask again after a pause
                        await sleep(self._clock, min(interval, max(0.0, deadline - self._clock.monotonic())))
                        continue
                state = await poll()
                if state.status not in ACTIVE:
                    self._finish(
                        running,
                        JobStatus.CANCELLED if state.status is JobStatus.CANCELLED else state.status,
                        error=state.error,
                    )
                    return
                await sleep(self._clock, min(interval, max(0.0, deadline - self._clock.monotonic())))
        except Exception as error:
            self._finish(running, JobStatus.FAILED, error=error, message="the stop request failed")
            return
        self._finish(
            running,
            JobStatus.FAILED,
            message=f"did not stop within {stop_timeout:g} s of the stop request",
            error="failed to stop",
        )

    async def _ask_to_stop(self, running: _Running) -> bool:
        """Send the stop call; False after a transient failure (any other failure raises)."""
        assert running.stop_external is not None  # set by watch_external, the only kind that stops
        try:
            await running.stop_external()
        except (TransientError, ConnectionError, TimeoutError) as error:
            self._set(running.job, message=f"stop request failed ({_describe(error)}); asking again")
            return False
        return True

    def _retry_delay(self, attempt: int) -> float:
        initial, cap = self._backoff
        return min(cap, initial * 2.0 ** (attempt - 1) * self._rng.uniform(0.8, 1.2))

    def _finish(
        self,
        running: _Running,
        status: JobStatus,
        *,
        result: Any = None,
        error: BaseException | str | None = None,
        message: str | None = None,
    ) -> None:
        job = running.job
        if job.status not in ACTIVE:
            return
        changes: dict[str, Any] = {"status": status, "finished_at": self._clock.time(), "result": result}
        if status is JobStatus.COMPLETED:
            changes["progress"] = 100.0
        if isinstance(error, BaseException):
            changes["error"] = _describe(error)
            changes["traceback"] = "".join(traceback.format_exception(error))
        elif error is not None:
            changes["error"] = error
        if message is not None:
            changes["message"] = message
        self._set(job, **changes)
        self._active.pop((job.type, job.key), None)
        running.done.set()
        self._ended.append(job.id)
        if len(self._ended) > KEEP_ENDED:  # older ended jobs are read from the database
            self._by_id.pop(self._ended.popleft(), None)
        logger.info("job ended", job=job.id, type=job.type, key=job.key, status=str(status))

    def _set(self, job: Job, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(job, name, value)
        self.publish(job)

    def publish(self, job: Job) -> None:
        job.updated_at = self._clock.time()
        self._hub.set_job(job)
        running = self._by_id.get(job.id)
        for listener in running.listeners if running else ():
            listener(job)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
