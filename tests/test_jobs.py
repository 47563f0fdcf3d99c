"""Jobs: single-flight, cancel in every state, retries on an injected clock, external jobs, daemons."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from supervisor import Daemon
from supervisor.jobs import ExternalState, Job, JobContext, JobFailed, JobManager, JobStatus, TransientError
from supervisor.models import DaemonState
from supervisor.store import DuplicateJob
from tests.fakeclock import FakeClock, settle
from tests.harness import Kernel, MidpointRandom, running_kernel

J = JobStatus


def manager(kernel: Kernel, **options) -> JobManager:
    return JobManager(kernel.hub, kernel.store, kernel.clock, rng=MidpointRandom(), **options)


class Gate:
    """A job body that waits until the test opens the gate, and records what happened to it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.started = 0
        self.cleaned_up = 0

    async def __call__(self, context: JobContext) -> str:
        self.started += 1
        try:
            await self.opened.wait()
            return "done"
        finally:
            self.cleaned_up += 1


async def stored(kernel: Kernel, job: Job) -> dict:
    kernel.hub.flush()
    await kernel.writer.wait_saved(kernel.hub.seq)
    row = await kernel.store.job(job.id)
    assert row is not None
    return row


async def test_concurrent_launches_with_one_key_make_one_job(tmp_path):
    async with running_kernel([], tmp_path) as kernel:
        jobs, gate = manager(kernel), Gate()
        launched = await asyncio.gather(*(jobs.launch("sync", "library", gate) for _ in range(100)))
        assert len({job.id for job in launched}) == 1
        gate.opened.set()
        await jobs.wait(launched[0])
        assert gate.started == 1 and launched[0].status is J.COMPLETED and launched[0].result == "done"
        assert len(await kernel.store.jobs(job_type="sync")) == 1
        again = await jobs.launch("sync", "library", gate)  # begin is idempotent only while one is active
        assert again.id != launched[0].id
        await jobs.wait(again)


async def test_the_database_refuses_a_second_active_job_with_the_same_key(tmp_path):
    async with running_kernel([], tmp_path) as kernel:
        jobs, gate = manager(kernel), Gate()
        job = await jobs.launch("scan", "/media", gate)
        twin = Job("other-id", "scan", "/media", None, created_at=1.0, updated_at=1.0)
        with pytest.raises(DuplicateJob):
            await kernel.store.insert_job(twin)

        def insert_twin_from_another_program() -> None:
            with sqlite3.connect(tmp_path / "warden.db", timeout=10) as db:
                db.execute(
                    "INSERT INTO jobs (id, type, key, status, message, attempt, max_attempts, created_at, "
                    "updated_at) VALUES ('x', 'scan', '/media', 'running', '', 1, 1, 0, 0)"
                )

        with pytest.raises(sqlite3.IntegrityError):  # any writer, not only Warden's memory
            await asyncio.to_thread(insert_twin_from_another_program)
        gate.opened.set()
        await jobs.wait(job)


async def test_a_cancelled_pending_job_never_starts(tmp_path):
    async with running_kernel([], tmp_path) as kernel:
        jobs = manager(kernel, concurrency={"analysis": 1})
        first, second = Gate(), Gate()
        running = await jobs.launch("analysis", "batch-1", first)
        pending = await jobs.launch("analysis", "batch-2", second)
        await settle()
        assert (running.status, pending.status) == (J.RUNNING, J.PENDING)
        await jobs.cancel(pending.id)
        await jobs.wait(pending)
        first.opened.set()
        await jobs.wait(running)
        assert pending.status is J.CANCELLED and second.started == 0
        assert running.status is J.COMPLETED
        assert (await stored(kernel, pending))["status"] == "cancelled"


async def test_a_cancelled_running_job_cleans_up_and_ends_cancelled(tmp_path):
    async with running_kernel([], tmp_path) as kernel:
        jobs, gate = manager(kernel), Gate()
        job = await jobs.launch("apply_plan", "plan-7", gate)
        await settle()
        assert job.status is J.RUNNING
        assert await jobs.cancel(job.id) is job
        await jobs.wait(job)
        assert job.status is J.CANCELLED and gate.cleaned_up == 1 and job.finished_at is not None


async def test_cancelling_a_finished_job_changes_nothing(tmp_path):
    async with running_kernel([], tmp_path) as kernel:
        jobs, gate = manager(kernel), Gate()
        gate.opened.set()
        job = await jobs.launch("sync", "x", gate)
        await jobs.wait(job)
        assert (await jobs.cancel(job.id)).status is J.COMPLETED
        assert await jobs.cancel("no-such-job") is None


async def test_a_thousand_cancels_leave_the_runner_healthy(tmp_path):
    async with running_kernel([], tmp_path) as kernel:
        jobs = manager(kernel, concurrency={"work": 1})
        for n in range(1000):
            job = await jobs.launch("work", f"item-{n}", Gate())
            if n % 2:
                await settle(2)  # half are cancelled while running, half while pending or just started
            await jobs.cancel(job.id)
            await jobs.wait(job)
            assert job.status is J.CANCELLED
        gate = Gate()
        gate.opened.set()
        job = await jobs.launch("work", "after", gate)
        await jobs.wait(job)
        assert job.status is J.COMPLETED
        await settle()
        assert jobs.active() == [] and not jobs._tasks, "no task or slot leaked"


class Flaky:
    """Fails with `error` for the first `failures` attempts."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.attempts = failures, error, 0

    async def __call__(self, context: JobContext) -> int:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        return self.attempts


async def run_with_retries(kernel: Kernel, clock: FakeClock, body: Flaky, max_attempts: int) -> tuple[Job, list]:
    """Run a job to its end, moving the clock to each retry; the delays it waited."""
    jobs = manager(kernel, backoff_initial=1, backoff_max=60)
    job = await jobs.launch("sync", "k", body, max_attempts=max_attempts)
    delays = []
    while True:
        await settle()
        if job.retry_at is None:
            break
        delays.append(job.retry_at - clock.time())
        await clock.advance(delays[-1])
    await jobs.wait(job)
    return job, delays


async def test_transient_failures_retry_with_growing_delays_then_succeed(tmp_path):
    clock = FakeClock()
    async with running_kernel([], tmp_path, clock=clock) as kernel:
        job, delays = await run_with_retries(kernel, clock, Flaky(3, ConnectionError("stash unreachable")), 5)
        assert job.status is J.COMPLETED and job.result == 4 and job.attempt == 4
        assert delays == [1, 2, 4]


async def test_transient_failures_fail_after_max_attempts(tmp_path):
    clock = FakeClock()
    async with running_kernel([], tmp_path, clock=clock) as kernel:
        job, delays = await run_with_retries(kernel, clock, Flaky(10, TransientError("try later")), 3)
        assert job.status is J.FAILED and job.attempt == 3 and delays == [1, 2]
        assert job.error == "TransientError: try later"


async def test_permanent_failures_fail_at_once_with_the_error_kept(tmp_path):
    clock = FakeClock()
    async with running_kernel([], tmp_path, clock=clock) as kernel:
        job, delays = await run_with_retries(kernel, clock, Flaky(1, ValueError("bad plan")), 5)
        assert job.status is J.FAILED and job.attempt == 1 and delays == []
        assert job.error == "ValueError: bad plan" and "raise self.error" in (job.traceback or "")
        row = await stored(kernel, job)
        assert row["error"] == "ValueError: bad plan" and row["attempt"] == 1


class ExternalSystem:
    """Another system's job queue: a job that runs until stopped (if it listens to stop)."""

    def __init__(self, obeys_stop: bool = True, unreachable_stops: int = 0) -> None:
        self.obeys_stop = obeys_stop
        self.unreachable_stops = unreachable_stops  # stop calls that fail as if the system were down
        self.stop_calls = 0
        self.progress = 0.0
        self.finished: JobStatus | None = None

    async def poll(self) -> ExternalState:
        if self.finished:
            return ExternalState(self.finished, self.progress)
        return ExternalState(J.RUNNING, self.progress, f"scanning {self.progress:.0f}%")

    async def stop(self) -> None:
        self.stop_calls += 1
        if self.stop_calls <= self.unreachable_stops:
            raise TransientError("connection refused")


@asynccontextmanager
async def external_setup(tmp_path, **system) -> AsyncIterator[tuple[FakeClock, JobManager, ExternalSystem]]:
    """A kernel on a fake clock, its job manager, and another system whose jobs it watches."""
    clock = FakeClock()
    async with running_kernel([], tmp_path, clock=clock) as kernel:
        yield clock, manager(kernel), ExternalSystem(**system)


async def test_an_external_job_is_followed_to_its_end(tmp_path):
    async with external_setup(tmp_path) as (clock, jobs, other):
        job = await jobs.watch_external("stash_scan", "/downloads/new", "42", other.poll, other.stop, interval=2)
        await settle()
        other.progress = 60.0
        await clock.advance(2)
        assert (job.status, job.progress, job.external_id) == (J.RUNNING, 60.0, "42")
        other.finished = J.COMPLETED
        await clock.advance(2)
        await jobs.wait(job)
        assert job.status is J.COMPLETED


async def test_cancelling_an_external_job_waits_for_the_other_system(tmp_path):
    async with external_setup(tmp_path) as (clock, jobs, other):
        job = await jobs.watch_external("stash_generate", "all", "7", other.poll, other.stop, interval=2)
        await settle()
        await jobs.cancel(job.id)
        await settle()
        assert job.status is J.CANCELLING and other.stop_calls == 1, "asked, and shown as cancelling"
        await clock.advance(4)
        assert job.status is J.CANCELLING, "not cancelled until the other system says so"
        other.finished = J.CANCELLED
        await clock.advance(2)
        await jobs.wait(job)
        assert job.status is J.CANCELLED


async def test_a_stop_request_that_fails_for_a_moment_is_sent_again(tmp_path):
    async with external_setup(tmp_path, unreachable_stops=2) as (clock, jobs, other):
        job = await jobs.watch_external("stash_generate", "all", "9", other.poll, other.stop, interval=2)
        await settle()
        await jobs.cancel(job.id)
        await settle()
        assert job.status is J.CANCELLING and "asking again" in job.message
        await clock.advance(4)
        assert other.stop_calls == 3, "asked until the other system took the request"
        other.finished = J.CANCELLED
        await clock.advance(2)
        await jobs.wait(job)
        assert job.status is J.CANCELLED


async def test_an_external_job_that_ignores_stop_fails_after_the_timeout(tmp_path):
    async with external_setup(tmp_path, obeys_stop=False) as (clock, jobs, other):
        job = await jobs.watch_external("stash_generate", "all", "8", other.poll, other.stop, stop_timeout=30)
        await settle()
        await jobs.cancel(job.id)
        for _ in range(20):
            await clock.advance(2)
        await jobs.wait(job)
        assert job.status is J.FAILED and job.error == "failed to stop" and "within 30 s" in job.message


class Importer(Daemon):
    """Runs one job with progress, then sleeps."""

    name = "importer"
    title = "Importer"

    async def run(self) -> None:
        async def work(context: JobContext) -> int:
            for n in range(1, 5):
                context.progress(done=n, total=4, message=f"item {n} of 4")
                await type(self).step.wait()
                type(self).step.clear()
            return 4

        await self.update_status("Importing 4 items")
        try:
            imported = await self.run_job("import", "all", work)
        except JobFailed as failed:
            await self.update_status(f"Import ended: {failed.job.status}")
        else:
            await self.update_status(f"Imported {imported} items")
        await self.sleep(3600, "next import")


async def test_a_daemons_job_shows_in_its_status_and_ends_with_a_stop(tmp_path):
    Importer.step = asyncio.Event()
    async with running_kernel([Importer], tmp_path) as kernel:
        await kernel.supervisor.start("importer")
        runner = kernel.supervisor.runner("importer")
        await kernel.until(lambda: runner.status.job_type == "import" and runner.status.progress == 25.0)
        job = kernel.supervisor.jobs.get(runner.status.job_id)
        assert job is not None and job.daemon == "importer" and job.message == "item 1 of 4"
        Importer.step.set()
        await kernel.until(lambda: runner.status.progress == 50.0)
        await kernel.supervisor.stop("importer")
        await kernel.supervisor.jobs.wait(job)
        assert job.status is J.CANCELLED, "stopping the daemon cancelled its job (cancel_jobs_on_stop)"
        assert runner.status.state is DaemonState.STOPPED


async def test_a_daemon_gets_its_jobs_result(tmp_path):
    Importer.step = asyncio.Event()
    async with running_kernel([Importer], tmp_path) as kernel:
        await kernel.supervisor.start("importer")
        runner = kernel.supervisor.runner("importer")
        for _ in range(4):
            await kernel.until(lambda: runner.status.job_id is not None)
            Importer.step.set()
            await settle()
        await kernel.until(lambda: runner.status.message == "Imported 4 items")
        [job] = await kernel.store.jobs(job_type="import")
        assert job["daemon"] == "importer"


async def test_a_launch_never_joins_a_job_that_is_being_cancelled(tmp_path):
    async with external_setup(tmp_path) as (clock, jobs, other):
        old = await jobs.watch_external("stash_generate", "all", "1", other.poll, other.stop, interval=2)
        await settle()
        await jobs.cancel(old.id)
        relaunch = asyncio.create_task(jobs.watch_external("stash_generate", "all", "2", other.poll, other.stop))
        await settle()
        assert not relaunch.done(), "it waits for the cancelled job to end"
        other.finished = J.CANCELLED
        await clock.advance(2)
        new = await relaunch
        assert new.id != old.id and old.status is J.CANCELLED and new.external_id == "2"
