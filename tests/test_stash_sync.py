"""stash_sync against the Stash double, in a real kernel with a real scene library."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemons.stash.base import library_path
from daemons.stash.double import StashDouble
from daemons.stash.library import SceneLibrary
from daemons.stash_sync import StashSync
from supervisor.clock import Clock
from supervisor.models import DaemonStatus
from tests.fakeclock import FakeClock
from tests.harness import Kernel, make_settings, running_kernel
from tests.stashfixtures import ManualClock

KEY = "sync-test-api-key-0123"
WALL = 1_800_000_000.0  # the fake clocks' start: Warden's and the double's agree


@asynccontextmanager
async def syncing(
    tmp_path: Path, double: StashDouble, clock: Clock | None = None, **config: Any
) -> AsyncIterator[Kernel]:
    settings = make_settings(
        [StashSync],
        tmp_path,
        stash={"url": double.url, "api_key": KEY, "timeout": 10},
        jobs={"retry_initial": 0.01, "retry_max": 0.02},
        daemons={"stash_sync": {"interval": 3600, "page_size": 100, "overlap": 10, **config}},
    )
    async with running_kernel([StashSync], tmp_path, clock=clock, settings=settings) as kernel:
        await kernel.supervisor.start("stash_sync")
        yield kernel


def status(kernel: Kernel) -> DaemonStatus:
    return kernel.supervisor.runner("stash_sync").status


async def cycle_done(kernel: Kernel, after: float | None = None, timeout: float = 60) -> str:
    """Wait until the daemon sleeps again (a later sleep than `after`); returns its last message."""
    await kernel.until(
        lambda: (
            status(kernel).sleeping_until is not None
            and (after is None or status(kernel).sleeping_until > after)  # type: ignore[operator]
            and not status(kernel).problem
        ),
        timeout,
    )
    return status(kernel).message


async def sync_jobs(kernel: Kernel) -> list[dict[str, Any]]:
    """The stash_sync jobs as saved in Warden's database, newest first."""
    assert await kernel.writer.flush(10)
    return await kernel.store.jobs(job_type="stash_sync")


async def library_of(tmp_path: Path) -> dict[str, dict[str, Any]]:
    library = await SceneLibrary.open(library_path(make_settings([StashSync], tmp_path)))
    try:
        return {scene.id: {"title": scene.title, "updated_at": scene.updated_at} for scene in await library.scenes()}
    finally:
        await library.close()


def expected(double: StashDouble) -> dict[str, dict[str, Any]]:
    return {
        scene.id: {"title": scene.title or "", "updated_at": _utc(scene.updated_at)}
        for scene in double.library.scenes.values()
    }


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_first_full_sync_copies_ten_thousand_scenes(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY) as double:
        double.add_synthetic_scenes(10_000, seed=5)
        async with syncing(tmp_path, double, page_size=1000) as kernel:
            message = await cycle_done(kernel)
            job = await sync_jobs(kernel)
        assert message == "Sync completed for 10,000 scenes, 0 deleted in Stash removed"
        assert await library_of(tmp_path) == expected(double)
    assert job[0]["status"] == "completed"
    assert job[0]["message"] == "Synced 10,000/10,000 scenes"
    assert job[0]["result"] == {"synced": 10_000, "removed": 0, "full": True}


async def test_incremental_fetches_exactly_the_changed_scenes_including_one_changed_during_the_last_run(
    tmp_path: Path,
) -> None:
    clock = FakeClock(wall_start=WALL)
    stash_now = ManualClock(WALL - 3600)
    async with StashDouble(api_key=KEY, now=stash_now) as double:
        scenes = [double.add_scene(f"/media/{i}.mp4", title=f"scene {i}").id for i in range(250)]
        pages = 0

        async def during_the_first_run(root_field: str, variables: dict[str, Any]) -> None:
            nonlocal pages
            if root_field != "findScenes" or variables["filter"]["per_page"] == 1:
                return
            pages += 1
            if pages == 3:  # the last page: scene 0 was fetched long ago, on page 1
                stash_now.now = WALL + 5
                double.update_scene(scenes[0], title="edited while the first sync ran")
                double.before = None
                await clock.advance(100)  # and the run takes a while longer before it completes

        double.before = during_the_first_run
        async with syncing(tmp_path, double, clock=clock) as kernel:
            first = await cycle_done(kernel)
            first_until = status(kernel).sleeping_until
            stash_now.now = WALL + 200
            double.update_scene(scenes[7], title="edited between runs")
            double.update_scene(scenes[200], title="also edited between runs")
            await clock.advance(3600)
            second = await cycle_done(kernel, after=first_until)
        assert first.startswith("Sync completed for 250 scenes")
        # The first run's watermark is its start (WALL) minus the overlap: the edit at WALL+5 is fetched again.
        assert second == "Sync completed for 3 scenes"
        assert await library_of(tmp_path) == expected(double)


async def test_a_quiet_stash_is_reported_as_nothing_changed_and_asked_in_its_own_time_zone(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=WALL)
    async with StashDouble(api_key=KEY, now=ManualClock(WALL - 3600), utc_offset="-05:00") as double:
        double.add_scene("/media/a.mp4")
        filters: list[Any] = []

        async def record(root_field: str, variables: dict[str, Any]) -> None:
            if root_field == "findScenes":
                filters.append(variables["scene_filter"])

        double.before = record
        async with syncing(tmp_path, double, clock=clock) as kernel:
            await cycle_done(kernel)
            until = status(kernel).sleeping_until
            await clock.advance(3600)
            message = await cycle_done(kernel, after=until)
    assert message == "No scenes changed in Stash since 2027-01-15T07:59:50Z"
    # Stash compares the text with what it stored (RFC 3339 in its own zone): 07:59:50Z is 02:59:50-05:00.
    assert filters[-1] == {"updated_at": {"value": "2027-01-15T02:59:50-05:00", "modifier": "GREATER_THAN"}}


async def test_the_full_pass_removes_scenes_deleted_in_stash(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=WALL)
    async with StashDouble(api_key=KEY, now=ManualClock(WALL - 3600)) as double:
        scenes = [double.add_scene(f"/media/{i}.mp4").id for i in range(30)]
        async with syncing(tmp_path, double, clock=clock, full_sync_interval=7200) as kernel:
            await cycle_done(kernel)
            until = status(kernel).sleeping_until
            double.delete_scene(scenes[3])
            double.delete_scene(scenes[17])
            await clock.advance(3600)
            incremental = await cycle_done(kernel, after=until)
            after_incremental = await library_of(tmp_path)
            until = status(kernel).sleeping_until
            await clock.advance(3600)
            full = await cycle_done(kernel, after=until)
    assert incremental.startswith("No scenes changed")
    assert len(after_incremental) == 30  # an incremental run cannot see deletions
    assert full == "Sync completed for 28 scenes, 2 deleted in Stash removed"
    assert await library_of(tmp_path) == expected(double)


async def test_stash_going_down_mid_sync_shows_a_problem_then_recovers_with_a_correct_table(
    tmp_path: Path,
) -> None:
    async with StashDouble(api_key=KEY) as double:
        double.add_synthetic_scenes(1000, seed=9)
        pages = 0
        gone: list[asyncio.Task[None]] = []

        async def go_down_on_page_four(root_field: str, variables: dict[str, Any]) -> None:
            nonlocal pages
            if root_field == "findScenes" and variables["filter"]["per_page"] != 1:
                pages += 1
                if pages == 4:
                    double.before = None
                    gone.append(asyncio.create_task(double.down()))

        double.before = go_down_on_page_four
        async with syncing(tmp_path, double, backoff_initial=0.05, backoff_max=0.1) as kernel:
            await kernel.until(lambda: status(kernel).problem, timeout=30)
            problem = status(kernel).message
            failed = await sync_jobs(kernel)
            partial = len(await library_of(tmp_path))
            await double.up()
            message = await cycle_done(kernel)
        assert problem.startswith("The stash_sync job failed: StashUnreachable: cannot reach Stash")
        assert problem.endswith("s.") and "Retrying in" in problem
        assert failed[0]["status"] == "failed" and failed[0]["attempt"] == 3  # transient: retried first
        assert 300 <= partial < 1000
        await asyncio.gather(*gone)
        assert message.startswith("Sync completed for 1,000 scenes")
        assert await library_of(tmp_path) == expected(double)


async def test_a_refused_api_key_is_a_visible_problem_not_nothing_to_sync(tmp_path: Path) -> None:
    async with StashDouble(api_key="the-key-stash-really-wants") as double:
        double.add_scene("/media/a.mp4")
        async with syncing(tmp_path, double, backoff_initial=30) as kernel:
            await kernel.until(lambda: status(kernel).problem, timeout=30)
            current = status(kernel).snapshot()
    assert current.message == (f"Stash at {double.url} refused the API key (check stash.api_key). Retrying in 30 s.")
    assert current.sleeping_until is not None and current.state == "running"


async def test_a_restart_mid_sync_leaves_the_job_its_own_connection_and_the_new_run_joins_it(
    tmp_path: Path,
) -> None:
    async with StashDouble(api_key=KEY) as double:
        double.add_synthetic_scenes(500, seed=3)
        reached, release = asyncio.Event(), asyncio.Event()
        pages = 0

        async def hold_page_two(root_field: str, variables: dict[str, Any]) -> None:
            nonlocal pages
            if root_field == "findScenes" and variables["filter"]["per_page"] != 1:
                pages += 1
                if pages == 2:
                    reached.set()
                    await release.wait()

        double.before = hold_page_two
        async with syncing(tmp_path, double) as kernel:
            await reached.wait()
            await kernel.supervisor.restart("stash_sync")  # the first run, its client and library end here
            release.set()
            message = await cycle_done(kernel)
            jobs = await sync_jobs(kernel)
        assert message == "Sync completed for 500 scenes, 0 deleted in Stash removed"
        assert [job["status"] for job in jobs] == ["completed"]  # one job, joined by the new run
        assert await library_of(tmp_path) == expected(double)


async def test_a_scene_added_after_syncing_an_empty_stash_west_of_utc_is_found(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=WALL)
    stash_now = ManualClock(WALL - 3600)
    async with StashDouble(api_key=KEY, now=stash_now, utc_offset="-05:00") as double:
        async with syncing(tmp_path, double, clock=clock) as kernel:
            first = await cycle_done(kernel)  # nothing to read: Stash's zone is still unknown
            until = status(kernel).sleeping_until
            stash_now.now = WALL + 100
            double.add_scene("/media/first.mp4", title="the first scene")
            await clock.advance(3600)
            second = await cycle_done(kernel, after=until)
        assert first == "Sync completed for 0 scenes, 0 deleted in Stash removed"
        assert second == "Sync completed for 1 scenes"
        assert await library_of(tmp_path) == expected(double)
