"""Stash's job manager, as the double plays it.

As in Stash (pkg/job/manager.go): one job runs at a time and later ones wait READY; stopping
a READY job cancels it at once (with no end time), stopping a RUNNING one makes it STOPPING
until its next step, then CANCELLED; ended jobs leave the queue for a graveyard of the last
ten, where findJob still sees them. A job's progress is null until it knows its total.

Tests steer jobs with holds ("start": nothing starts; "finish": a job waits before
finishing; "stop": a stopping job stays STOPPING) and with `fail`/`fail_next`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from daemons.stash.double.changes import Changes

logger = logging.getLogger(__name__)

HoldPoint = Literal["start", "finish", "stop"]
GRAVEYARD_SIZE = 10


class JobStatus(StrEnum):
    READY = "READY"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    STOPPING = "STOPPING"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


ENDED = frozenset({JobStatus.FINISHED, JobStatus.CANCELLED, JobStatus.FAILED})


@dataclass(eq=False)
class Job:
    id: str
    description: str
    add_time: float
    body: JobBody = field(repr=False)
    status: JobStatus = JobStatus.READY
    progress: float | None = None
    sub_tasks: list[str] | None = None
    start_time: float | None = None
    end_time: float | None = None
    error: str | None = None
    stop_requested: bool = False
    failure_planned: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class _Stopped(Exception):
    pass


class _Failed(Exception):
    pass


class JobSteps:
    """What a running job's body reports through, one step per unit of work."""

    def __init__(self, job: Job, manager: JobManager) -> None:
        self._job = job
        self._manager = manager

    async def step(self, done: int, total: int, detail: str) -> None:
        """Start unit `done` of `total`: show it, spend the step delay on it, then stop or fail here if asked."""
        self._job.progress = done / total if total else None
        self._job.sub_tasks = [detail]
        self._manager.changed()
        _interrupt_if_asked(self._job)
        await asyncio.sleep(self._manager.step_delay)
        _interrupt_if_asked(self._job)


def _interrupt_if_asked(job: Job) -> None:
    if job.stop_requested:
        raise _Stopped
    if job.failure_planned is not None:
        raise _Failed(job.failure_planned)


JobBody = Callable[[JobSteps], Awaitable[None]]


class JobManager:
    def __init__(
        self,
        now: Callable[[], float],
        changes: Changes,
        *,
        step_delay: float = 0.01,
        graveyard_size: int = GRAVEYARD_SIZE,
    ) -> None:
        self._now = now
        self._changes = changes
        self.step_delay = step_delay
        self._queue: list[Job] = []
        self._graveyard: deque[Job] = deque(maxlen=graveyard_size)
        self._last_id = 0
        self._held: set[HoldPoint] = set()
        self._planned_failures: list[str] = []
        self.added: list[Job] = []  # every job ever added, for tests; Stash itself forgets old ones

    # What GraphQL sees

    def add(self, description: str, body: JobBody) -> Job:
        self._last_id += 1
        job = Job(str(self._last_id), description, self._now(), body)
        self._queue.append(job)
        self.added.append(job)
        self.changed()
        return job

    def queue(self) -> list[Job]:
        return list(self._queue)

    def find(self, job_id: str) -> Job | None:
        return next((job for job in (*self._queue, *self._graveyard) if job.id == str(job_id)), None)

    def stop(self, job_id: str) -> None:
        """Stash's CancelJob: no effect on an unknown or ended job."""
        job = next((job for job in self._queue if job.id == str(job_id)), None)
        if job is None:
            return
        if job.status is JobStatus.READY:
            job.status = JobStatus.CANCELLED
            self._bury(job)
        elif job.status is JobStatus.RUNNING:
            job.status = JobStatus.STOPPING
            job.stop_requested = True
        self.changed()

    def stop_all(self) -> None:
        for job in list(self._queue):
            self.stop(job.id)

    # Test controls

    def hold(self, point: HoldPoint) -> None:
        self._held.add(point)
        self.changed()

    def release(self, point: HoldPoint) -> None:
        self._held.discard(point)
        self.changed()

    def fail(self, job_id: str, error: str) -> None:
        """Make a waiting or running job fail with `error` at its next step."""
        job = self.find(job_id)
        if job is None or job.ended:
            raise ValueError(f"job {job_id} is not waiting or running")
        job.failure_planned = error
        self.changed()

    def fail_next(self, error: str) -> None:
        """Make the next job that starts fail with `error` at its first step."""
        self._planned_failures.append(error)

    def changed(self) -> None:
        self._changes.notify()

    # Running

    async def run(self) -> None:
        """Run queued jobs one at a time, for as long as the double runs."""
        while True:
            await self._changes.wait_for(lambda: "start" not in self._held and self._next_ready() is not None)
            job = self._next_ready()
            assert job is not None
            await self._execute(job)

    def _next_ready(self) -> Job | None:
        return next((job for job in self._queue if job.status is JobStatus.READY), None)

    async def _execute(self, job: Job) -> None:
        job.status = JobStatus.RUNNING
        job.start_time = self._now()
        if self._planned_failures and job.failure_planned is None:
            job.failure_planned = self._planned_failures.pop(0)
        self.changed()
        try:
            await job.body(JobSteps(job, self))
            await self._changes.wait_for(
                lambda: "finish" not in self._held or job.stop_requested or job.failure_planned is not None
            )
            _interrupt_if_asked(job)
            job.progress = 1.0
            job.status = JobStatus.FINISHED
        except _Stopped:
            await self._changes.wait_for(lambda: "stop" not in self._held)
            job.status = JobStatus.CANCELLED
        except _Failed as failure:
            job.status, job.error = JobStatus.FAILED, str(failure)
        except Exception as error:
            logger.exception("job %s (%s) failed", job.id, job.description)
            job.status, job.error = JobStatus.FAILED, str(error)
        job.end_time = self._now()
        self._bury(job)
        self.changed()

    def _bury(self, job: Job) -> None:
        self._queue.remove(job)
        job.sub_tasks = None  # Stash clears a job's details when it leaves the queue
        self._graveyard.append(job)
