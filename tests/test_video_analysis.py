"""video_analysis against the Stash double and real clips: what already holds in Stash is never
proposed, the same analyser version never analyses a scene twice, a newer one does, and a scene
that keeps failing (an unreadable or missing file) is set aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemons.analysis.analyser import SceneToAnalyse
from daemons.analysis.ffmpeg import FfmpegAnalyser
from daemons.plans.store import ChangeStatus, Plan, PlanStore, ProposedChange
from daemons.stash.base import library_path
from daemons.stash.double import StashDouble
from daemons.stash.library import SceneLibrary
from daemons.stash.videos import make_video
from daemons.video_analysis import VideoAnalysis
from tests.harness import Kernel, make_settings, running_kernel
from tests.stashfixtures import as_synced
from tests.webharness import eventually

KEY = "analysis-test-key-0123"
NAME = VideoAnalysis.name


def settings_for(tmp_path: Path, double: StashDouble) -> Any:
    daemon = {"interval": 1, "max_failures": 2, "max_parallel": 2, "backoff_initial": 30}
    return make_settings([VideoAnalysis], tmp_path, stash={"url": double.url, "api_key": KEY}, daemons={NAME: daemon})


async def synced(tmp_path: Path, double: StashDouble) -> None:
    await as_synced(library_path(settings_for(tmp_path, double)), double.library.scenes.values())


async def plans(tmp_path: Path) -> list[tuple[Plan, list[ProposedChange]]]:
    store = await PlanStore.open(tmp_path / "plans.db")
    try:
        found = []
        for plan in reversed(await store.plans()):
            changes = await store.changes(plan.id)
            found.append(
                (plan, [ProposedChange(c.scene_id, c.field, c.action, c.value, c.confidence) for c in changes])
            )
        return found
    finally:
        await store.close()


async def analysed_by(library_file: Path, scene_id: str) -> str | None:
    """What analysed the scene, as the library records it."""
    library = await SceneLibrary.open(library_file)
    try:
        scene = await library.scene(scene_id)
    finally:
        await library.close()
    assert scene is not None
    return scene.analyzed_version


async def forget_analysis(tmp_path: Path, double: StashDouble, scene_id: str) -> None:
    with sqlite3.connect(library_path(settings_for(tmp_path, double))) as db:
        db.execute("UPDATE scenes SET analyzed_version = NULL WHERE id = ?", (int(scene_id),))


def status(kernel: Kernel) -> str:
    return kernel.supervisor.runner(NAME).status.message


async def test_proposals_skip_what_holds_and_failing_scenes_are_set_aside(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    clip = make_video(tmp_path / "media" / "clip.mp4", width=320, height=180, duration=6, fps=10, cuts=2)
    unreadable = tmp_path / "media" / "broken.mp4"
    unreadable.write_text("not a video")
    expected = await FfmpegAnalyser().analyse(SceneToAnalyse("0", str(clip)))
    first_cut = next(proposal for proposal in expected if proposal.field == "markers")
    assert {"Short", "No audio"} <= {proposal.value for proposal in expected if proposal.field == "tags"}

    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        good = double.add_scene(str(clip)).id
        broken = double.add_scene(str(unreadable)).id
        missing = double.add_scene(str(tmp_path / "media" / "gone.mp4")).id
        # Already true in Stash: the tag (another case) and the first cut's marker, half a second off.
        double.library.update_scenes_tags([good], [double.library.add_tag("short").id], "ADD")
        cut_tag = double.library.add_tag(first_cut.value["primary_tag"]).id
        double.library.add_marker(good, "Cut", first_cut.value["seconds"] + 0.5, cut_tag)
        await synced(tmp_path, double)

        async with running_kernel([VideoAnalysis], tmp_path, settings=settings_for(tmp_path, double)) as kernel:
            await kernel.supervisor.start(NAME)
            await kernel.until(lambda: status(kernel) == "No scenes need analysis; 2 set aside after 2 failures", 60)
            library = await SceneLibrary.open(library_path(settings_for(tmp_path, double)))
            try:
                aside = {record.id: record.analysis_error for record in await library.set_aside(2)}
            finally:
                await library.close()
            first = await plans(tmp_path)

    left_out = {("tags", "Short"), ("markers", str(first_cut.value))}
    wanted = [p for p in expected if (p.field, str(p.value) if p.field == "markers" else p.value) not in left_out]
    assert len(first) == 1, "one plan; the scenes analysed with this version are never analysed again"
    plan, changes = first[0]
    assert plan.source == "ffmpeg 1" and plan.status == "draft"
    assert sorted((c.field, str(c.value)) for c in changes) == sorted((p.field, str(p.value)) for p in wanted)
    assert {c.scene_id for c in changes} == {good}
    assert set(aside) == {broken, missing}
    assert "ffprobe" in (aside[broken] or "") and "gone.mp4" in (aside[missing] or "")


async def test_a_newer_version_analyses_again_but_never_proposes_what_waits_in_a_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "media").mkdir()
    clip = make_video(tmp_path / "media" / "clip.mp4", width=320, height=180, duration=6, fps=10, cuts=2)
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scene = double.add_scene(str(clip)).id
        await synced(tmp_path, double)

        async def until_analysed_by(source: str) -> None:
            async def done() -> bool:  # the library file is the daemon's: nothing publishes its changes
                return await analysed_by(library_path(settings_for(tmp_path, double)), scene) == source

            await eventually(done, 60)

        async with running_kernel([VideoAnalysis], tmp_path, settings=settings_for(tmp_path, double)) as kernel:
            await kernel.supervisor.start(NAME)
            await until_analysed_by("ffmpeg 1")
            first = await plans(tmp_path)

            # The first plan is still a draft: what it proposes is not proposed again.
            monkeypatch.setattr(FfmpegAnalyser, "version", "2")
            kernel.supervisor.wake(NAME)
            await until_analysed_by("ffmpeg 2")
            after_new_version = len(await plans(tmp_path))
            # As a crash between storing a plan and marking its scenes leaves them: analysed again, nothing new.
            await forget_analysis(tmp_path, double, scene)
            kernel.supervisor.wake(NAME)
            await until_analysed_by("ffmpeg 2")
            after_crash = len(await plans(tmp_path))

            # Once a person has rejected the first plan, a newer version proposes its changes again.
            store = await PlanStore.open(tmp_path / "plans.db")
            try:
                await store.review(first[0][0].id, None, ChangeStatus.REJECTED)
            finally:
                await store.close()
            monkeypatch.setattr(FfmpegAnalyser, "version", "3")
            kernel.supervisor.wake(NAME)
            await until_analysed_by("ffmpeg 3")  # its plan is stored first
            last = await plans(tmp_path)

    assert len(first) == 1 and first[0][1], "the first analysis proposes changes"
    assert after_new_version == 1 and after_crash == 1
    assert [plan.source for plan, _ in last] == ["ffmpeg 1", "ffmpeg 3"]
    assert sorted(str(c.value) for c in last[1][1]) == sorted(str(c.value) for c in first[0][1])
