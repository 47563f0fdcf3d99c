"""stash_generation against the Stash double: only what is missing, yielding to scans, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from daemons.stash.base import library_path
from daemons.stash.client import StashClient
from daemons.stash.double import StashDouble
from daemons.stash.library import ASSETS, SceneLibrary
from daemons.stash_generation import StashGeneration
from supervisor.jobs import Job, JobStatus
from supervisor.models import DaemonStatus
from tests.harness import Kernel, make_settings, running_kernel
from tests.stashfixtures import as_synced

KEY = "generation-test-key-0123"
ALL = frozenset(ASSETS)


def settings_for(tmp_path: Path, double: StashDouble, **config: Any) -> Any:
    daemon = {"interval": 3600, "batch_size": 10, "poll_interval": 0.05, "backoff_initial": 30, **config}
    return make_settings(
        [StashGeneration],
        tmp_path,
        stash={"url": double.url, "api_key": KEY},
        daemons={"stash_generation": daemon},
    )


async def synced_library(tmp_path: Path, double: StashDouble, generated: dict[str, frozenset[str]]) -> None:
    """The local library as stash_sync leaves it, with `generated` already known per scene id."""
    library_file = library_path(settings_for(tmp_path, double))
    await as_synced(library_file, double.library.scenes.values())
    library = await SceneLibrary.open(library_file)
    try:
        for scene_id, assets in generated.items():
            await library.mark_generated([scene_id], assets)
    finally:
        await library.close()


@asynccontextmanager
async def generating(tmp_path: Path, double: StashDouble, **config: Any) -> AsyncIterator[Kernel]:
    settings = settings_for(tmp_path, double, **config)
    async with running_kernel([StashGeneration], tmp_path, settings=settings) as kernel:
        await kernel.supervisor.start("stash_generation")
        yield kernel


def status(kernel: Kernel) -> DaemonStatus:
    return kernel.supervisor.runner("stash_generation").status


async def said(kernel: Kernel, check: Callable[[str], bool], timeout: float = 30) -> None:
    await kernel.until(lambda: check(status(kernel).message), timeout)


def warden_job(kernel: Kernel) -> Job:
    job_id = status(kernel).job_id
    assert job_id is not None
    job = kernel.supervisor.jobs.get(job_id)
    assert job is not None
    return job


def generate_jobs(double: StashDouble) -> list[Any]:
    return [job for job in double.jobs.added if job.description == "Generating..."]


@asynccontextmanager
async def held_generate_job(
    tmp_path: Path, double: StashDouble, scenes: int = 3, **config: Any
) -> AsyncIterator[tuple[Kernel, Job]]:
    """The daemon running, with its generate job running in Stash and held there before it finishes."""
    for i in range(scenes):
        double.add_scene(f"/media/{i:02d}.mp4")
    await synced_library(tmp_path, double, {})
    double.jobs.hold("finish")
    async with generating(tmp_path, double, **config) as kernel:
        await double.until(lambda: [job.status for job in generate_jobs(double)] == ["RUNNING"])
        await said(kernel, lambda message: message.startswith("Generating covers"))
        yield kernel, warden_job(kernel)


async def scan_in_stash(double: StashDouble, paths: list[str]) -> str:
    """Start a scan in Stash as another program would; its job id."""
    client = StashClient(double.url, KEY, timeout=5)
    try:
        return await client.metadata_scan(paths)
    finally:
        client.close()


async def test_only_scenes_missing_an_asset_are_generated_in_batches(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scenes = [double.add_scene(f"/media/{i:02d}.mp4").id for i in range(25)]
        known = {scene: ALL for scene in scenes[:10]}
        known.update({scene: ALL - {"phashes"} for scene in scenes[10:15]})
        await synced_library(tmp_path, double, known)
        async with generating(tmp_path, double) as kernel:
            await said(kernel, lambda message: message.startswith("Generation completed"))
            message = status(kernel).message
        library = await SceneLibrary.open(library_path(settings_for(tmp_path, double)))
        try:
            still_missing = await library.missing_assets(ASSETS)
        finally:
            await library.close()
        assert message == "Generation completed for 15 scenes"
        assert [double.library.scene(scene).generated for scene in scenes[:10]] == [frozenset()] * 10
        assert [double.library.scene(scene).generated for scene in scenes[10:]] == [ALL] * 15
        assert [job.status for job in generate_jobs(double)] == ["FINISHED", "FINISHED"]  # 15 scenes, batches of 10
        assert still_missing == []


async def test_a_scan_makes_it_stop_the_stash_job_wait_for_the_confirmation_and_resume_later(
    tmp_path: Path,
) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        double.jobs.hold("stop")
        async with held_generate_job(tmp_path, double, scenes=12, batch_size=100) as (kernel, generating_job):
            assert status(kernel).job_type == "stash_generate"
            scan = await scan_in_stash(double, ["/media/new"])
            await double.until(lambda: generate_jobs(double)[0].status == "STOPPING")
            await said(kernel, lambda message: message == "Stopping generation: 1 scan job(s) waiting in Stash")
            assert generating_job.status is JobStatus.CANCELLING  # not cancelled before Stash confirms

            double.jobs.release("stop")
            await kernel.until(lambda: generating_job.status is JobStatus.CANCELLED)

            double.jobs.release("finish")  # the scan runs, then generation starts over
            await said(kernel, lambda message: message.startswith("Generation completed"))
        assert double.jobs.find(scan).status == "FINISHED"
        assert [job.status for job in generate_jobs(double)] == ["CANCELLED", "FINISHED"]
        assert double.calls["stopJob"] == 1
        assert all(scene.generated == ALL for scene in double.library.scenes.values())


async def test_a_job_failing_in_stash_is_reported_as_failed_not_finished(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scenes = [double.add_scene(f"/media/{i:02d}.mp4").id for i in range(4)]
        await synced_library(tmp_path, double, {})
        double.jobs.fail_next("ffmpeg: no space left on device")
        async with generating(tmp_path, double) as kernel:
            await kernel.until(lambda: status(kernel).problem, timeout=30)
            current = status(kernel).snapshot()
            assert await kernel.writer.flush(10)
            jobs = await kernel.store.jobs(job_type="stash_generate")
        library = await SceneLibrary.open(library_path(settings_for(tmp_path, double)))
        try:
            still_missing = await library.missing_assets(ASSETS)
        finally:
            await library.close()
    assert current.message == ("The stash_generate job failed: ffmpeg: no space left on device. Retrying in 30 s.")
    assert [(job["status"], job["error"]) for job in jobs] == [("failed", "ffmpeg: no space left on device")]
    assert still_missing == scenes  # nothing is recorded as generated


async def test_a_busy_stash_queue_is_waited_out(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        double.add_scene("/media/a.mp4")
        await synced_library(tmp_path, double, {})
        double.jobs.hold("finish")
        await scan_in_stash(double, ["/media"])
        async with generating(tmp_path, double) as kernel:
            await said(kernel, lambda message: message.startswith("Stash is busy (Scanning... running)"))
            assert generate_jobs(double) == []
            double.jobs.release("finish")
            await said(kernel, lambda message: message.startswith("Generation completed"))


async def test_stopping_the_daemon_stops_its_stash_job_and_waits_for_stash(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        async with held_generate_job(tmp_path, double) as (kernel, job):
            await kernel.supervisor.stop("stash_generation")  # the daemon's run and its client end here
            await kernel.until(lambda: job.status is JobStatus.CANCELLED)
        assert double.calls["stopJob"] == 1  # sent through the job's own client
        assert [job.status for job in generate_jobs(double)] == ["CANCELLED"]


async def test_a_job_cancelled_by_a_person_is_not_started_again_at_once(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        async with held_generate_job(tmp_path, double, scenes=1) as (kernel, job):
            await kernel.supervisor.jobs.cancel(job.id)
            await said(kernel, lambda message: message == "Generation cancelled; the next check is on schedule")
            asleep = status(kernel).sleeping_until is not None
        assert asleep
        assert [job.status for job in generate_jobs(double)] == ["CANCELLED"]


async def test_after_a_restart_mid_job_the_new_run_follows_the_job_and_still_yields_to_a_scan(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        async with held_generate_job(tmp_path, double, cancel_jobs_on_stop=False) as (kernel, job):
            await kernel.supervisor.restart("stash_generation")
            await said(kernel, lambda message: message == "Following the generate job an earlier run started")
            assert status(kernel).job_id == job.id
            await scan_in_stash(double, ["/media/new"])
            await kernel.until(lambda: job.status is JobStatus.CANCELLED)
            double.jobs.release("finish")
            await said(kernel, lambda message: message.startswith("Generation completed"))
        assert [job.status for job in generate_jobs(double)] == ["CANCELLED", "FINISHED"]
        assert double.calls["stopJob"] == 1
