"""Scenes video analysis set aside, in a whole running Warden: listed with their last error through the
API and on the Plans page, and analysed again when a person asks (one scene, or all), with bad asks
refused before anything changes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, expect

from daemons.plans.store import PlanStore
from daemons.stash.double import StashDouble
from daemons.stash.videos import make_video
from daemons.video_analysis import VideoAnalysis
from supervisor.app import Warden
from tests.stashfixtures import as_synced
from tests.test_page import open_page, screenshot
from tests.test_video_analysis import analysed_by
from tests.webharness import api_session, call, config_text, eventually, running_warden, until

KEY = "set-aside-key-0123"
NAME = VideoAnalysis.name
SET_ASIDE = "No scenes need analysis; 2 set aside after 2 failures"
MALFORMED = "scene_ids must be a non-empty list of scene ids (strings of digits)"
NEW_ERROR = "Is a directory"  # ffprobe, given a folder


@dataclass
class Library:
    double: StashDouble
    clip: Path
    good: str
    broken: str
    missing: str  # its file appears once the test puts it there

    def restore_missing_file(self) -> None:
        shutil.copy(self.clip, self.clip.parent / "gone.mp4")

    def break_differently(self) -> None:
        """The broken scene's analysis then fails with another error (NEW_ERROR): a sign of a new failure."""
        broken = self.clip.parent / "broken.mp4"
        broken.unlink()
        broken.mkdir()


@asynccontextmanager
async def set_aside_library(tmp_path: Path) -> AsyncIterator[tuple[Warden, Library]]:
    """A running Warden whose video_analysis has set aside two scenes: an unreadable file and a missing one."""
    media = tmp_path / "media"
    media.mkdir()
    clip = make_video(media / "clip.mp4", width=320, height=180, duration=3, fps=10)
    (media / "broken.mp4").write_text("not a video")
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        ids = [double.add_scene(str(media / name)).id for name in ("clip.mp4", "broken.mp4", "gone.mp4")]
        await as_synced(tmp_path / "data" / "library.db", double.library.scenes.values())
        section = f"  {NAME}:\n    interval: 1\n    max_failures: 2\n    max_parallel: 2\n"
        yaml = config_text(section) + f"stash:\n  url: {double.url}\n  api_key: {KEY}\n"
        async with running_warden(tmp_path, [VideoAnalysis], yaml=yaml) as warden:
            status = warden.supervisor.runner(NAME).status
            await until(warden, lambda: status.message == SET_ASIDE, 60)
            yield warden, Library(double, clip, *ids)


async def is_analysed(tmp_path: Path, scene_id: str) -> bool:
    return await analysed_by(tmp_path / "data" / "library.db", scene_id) == "ffmpeg 1"


async def planned_scenes(tmp_path: Path) -> set[str]:
    store = await PlanStore.open(tmp_path / "data" / "plans.db")
    try:
        return {change.scene_id for plan in await store.plans() for change in await store.changes(plan.id)}
    finally:
        await store.close()


async def test_set_aside_scenes_are_listed_and_retried_on_request(tmp_path: Path) -> None:
    async with set_aside_library(tmp_path) as (warden, scenes), api_session(warden) as session:
        listed = await call(session, "GET", "api/analysis/set-aside")
        assert listed["max_failures"] == 2
        by_id = {scene["id"]: scene for scene in listed["scenes"]}
        assert set(by_id) == {scenes.broken, scenes.missing}
        assert by_id[scenes.broken]["failures"] == 2 and "ffprobe" in by_id[scenes.broken]["error"]
        assert by_id[scenes.missing]["path"].endswith("gone.mp4") and "gone.mp4" in by_id[scenes.missing]["error"]

        # Bad asks are refused, and nothing changes.
        refused = [
            ({"scene_ids": [scenes.good]}, f"scenes not set aside: {scenes.good}"),
            ({"scene_ids": [scenes.missing, "999"]}, "scenes not set aside: 999"),
            ({"scene_ids": []}, MALFORMED),
            ({"scene_ids": [int(scenes.missing)]}, MALFORMED),
            ({"scene_ids": ["../1"]}, MALFORMED),
            ({"everything": True}, "unknown fields: everything"),
        ]
        for body, message in refused:
            answer = await call(session, "POST", "api/analysis/retry", 400, json=body)
            assert answer["error"] == message
        assert await call(session, "GET", "api/analysis/set-aside") == listed

        # The missing file is back: one retry analyses that scene, and the other stays aside.
        scenes.restore_missing_file()
        retried = await call(session, "POST", "api/analysis/retry", json={"scene_ids": [scenes.missing]})
        assert retried["retried"] == [scenes.missing]
        assert [s["id"] for s in (await call(session, "GET", "api/analysis/set-aside"))["scenes"]] == [scenes.broken]
        await eventually(lambda: is_analysed(tmp_path, scenes.missing), 60)
        assert scenes.missing in await planned_scenes(tmp_path)

        # Retry all, asked twice at once: the scene is retried once. Its file, now a folder, fails twice more
        # (with the new error) and it is set aside again.
        scenes.break_differently()
        asks = [call(session, "POST", "api/analysis/retry", json={}) for _ in range(2)]
        answers = await asyncio.gather(*asks)
        assert sorted(scene for answer in answers for scene in answer["retried"]) == [scenes.broken]
        assert {answer["state"] for answer in answers} == {"running"}

        async def set_aside_again() -> bool:
            listed = (await call(session, "GET", "api/analysis/set-aside"))["scenes"]
            return [(s["id"], s["failures"], NEW_ERROR in s["error"]) for s in listed] == [(scenes.broken, 2, True)]

        await eventually(set_aside_again, 60)
        assert await analysed_by(tmp_path / "data" / "library.db", scenes.broken) is None


async def test_databases_that_cannot_be_opened_yet_leave_the_page_up_and_answer_503(tmp_path: Path) -> None:
    data = tmp_path / "data"
    blocked = [data / "library.db", data / "plans.db"]
    for path in blocked:
        path.mkdir(parents=True)  # a folder where the file should be: SQLite cannot open it
    async with running_warden(tmp_path, [VideoAnalysis]) as warden, api_session(warden) as session:
        await call(session, "GET", "api/daemons")
        library = await call(session, "GET", "api/analysis/set-aside", 503)
        plans = await call(session, "GET", "api/plans", 503)
        for path in blocked:
            path.rmdir()
        # The next request opens them.
        assert (await call(session, "GET", "api/analysis/set-aside"))["scenes"] == []
        assert (await call(session, "GET", "api/plans"))["plans"] == []
    assert library["error"].startswith(f"cannot open the scene library {blocked[0]}: ")
    assert plans["error"].startswith(f"cannot open the plans database {blocked[1]}: ")


async def test_without_video_analysis_nothing_is_set_aside(tmp_path: Path) -> None:
    async with running_warden(tmp_path, []) as warden, api_session(warden) as session:
        answer = await call(session, "GET", "api/analysis/set-aside", 409)
        assert answer["error"] == "video_analysis is not installed, so no scene is set aside"
        await call(session, "POST", "api/analysis/retry", 409, json={})


async def test_the_plans_page_lists_set_aside_scenes_and_retries_them(tmp_path: Path, browser: Browser) -> None:
    async with set_aside_library(tmp_path) as (warden, scenes):
        page = await open_page(browser, warden.url)
        await page.get_by_test_id("open-plans").click()
        section = page.get_by_test_id("set-aside")
        await expect(section).to_be_visible()
        await expect(section.get_by_test_id("set-aside-about")).to_have_text(
            "These scenes failed video analysis 2 times and are not tried again until you ask."
        )
        missing = section.get_by_test_id(f"set-aside-{scenes.missing}")
        broken = section.get_by_test_id(f"set-aside-{scenes.broken}")
        await expect(missing.get_by_test_id("analysis-error")).to_contain_text("gone.mp4")
        await expect(broken.get_by_test_id("failures")).to_have_text("2")
        await screenshot(page, "set-aside")

        scenes.restore_missing_file()
        async with page.expect_response(lambda response: response.url.endswith("api/analysis/retry")) as asked:
            await missing.get_by_test_id("retry-scene").click()
        assert (await (await asked.value).json())["retried"] == [scenes.missing]
        await expect(missing).to_have_count(0)
        await expect(broken).to_be_visible()
        # Its plan appears in the list, live, once the analysis ends.
        await expect(page.get_by_test_id("plans-table").locator("tbody tr")).to_have_count(1, timeout=30_000)

        scenes.break_differently()
        async with page.expect_response(lambda response: response.url.endswith("api/analysis/retry")) as asked:
            await section.get_by_test_id("retry-all").click()
        assert (await (await asked.value).json())["retried"] == [scenes.broken]
        # It fails twice more, and is back in the list with its new error, without a reload.
        await expect(broken.get_by_test_id("analysis-error")).to_contain_text(NEW_ERROR, timeout=30_000)
        await expect(broken.get_by_test_id("failures")).to_have_text("2")
    assert scenes.missing in await planned_scenes(tmp_path)
