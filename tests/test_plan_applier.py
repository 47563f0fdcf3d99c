"""plan_applier against the Stash double: tags created once and added, markers created, deleted
scenes skipped, and a Warden killed mid-plan finishing it after a restart with nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from daemons.plan_applier import PlanApplier
from daemons.plans.store import ChangeStatus, Plan, PlanStatus, PlanStore, ProposedChange
from daemons.stash.double import StashDouble
from supervisor.plugins import discover
from tests.harness import make_settings, running_kernel
from tests.test_process import child_env, warden_command
from tests.webharness import eventually

KEY = "plans-test-key-0123"
NAME = PlanApplier.name


def tag(scene_id: str, name: str, action: str = "add") -> ProposedChange:
    return ProposedChange(scene_id, "tags", action, name, 1.0)


def marker(scene_id: str, seconds: float, primary: str = "Scene cut") -> ProposedChange:
    return ProposedChange(scene_id, "markers", "add", {"seconds": seconds, "title": "Cut", "primary_tag": primary}, 0.9)


async def stored_plan(data_dir: Path, changes: list[ProposedChange], *, approved: bool = True) -> Plan:
    store = await PlanStore.open(data_dir / "plans.db")
    try:
        return await store.create("Video analysis 1", "ffmpeg 1", changes, approved=approved)
    finally:
        await store.close()


async def plan_now(data_dir: Path, plan_id: int) -> tuple[Plan, dict[str, ChangeStatus]]:
    store = await PlanStore.open(data_dir / "plans.db")
    try:
        plan = await store.plan(plan_id)
        assert plan is not None
        return plan, {f"{change.scene_id} {change.value}": change.status for change in await store.changes(plan_id)}
    finally:
        await store.close()


def tag_names(double: StashDouble, scene_id: str) -> list[str]:
    return sorted(double.library.tags[tag_id].name for tag_id in double.library.scene(scene_id).tag_ids)


def markers_of(double: StashDouble) -> Counter[tuple[str, float, str]]:
    return Counter(
        (found.scene_id, found.seconds, double.library.tags[found.primary_tag_id].name)
        for found in double.library.markers.values()
    )


async def test_approved_changes_are_applied_once_and_deleted_scenes_skipped(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        one, two, gone = (double.add_scene(f"/media/{name}.mp4").id for name in ("one", "two", "gone"))
        existing = double.library.add_tag("1080p").id
        double.library.update_scenes_tags([two], [existing], "ADD")
        plan = await stored_plan(
            tmp_path,
            [
                tag(one, "1080p"),
                tag(two, "1080P"),  # already on the scene (names compare without case)
                tag(one, "Vertical"),
                marker(one, 12.0),
                marker(one, 30.5),
                tag(gone, "1080p"),
            ],
        )
        double.library.delete_scene(gone)
        settings = make_settings(
            [PlanApplier], tmp_path, stash={"url": double.url, "api_key": KEY}, daemons={NAME: {"interval": 3600}}
        )
        async with running_kernel([PlanApplier], tmp_path, settings=settings) as kernel:
            await kernel.supervisor.start(NAME)
            await kernel.until(lambda: kernel.supervisor.runner(NAME).status.message.startswith("Applied 1 plans"), 30)
            (job,) = [job for job in kernel.jobs.values() if job.type == "apply_plan"]
        stored, outcomes = await plan_now(tmp_path, plan.id)
    assert tag_names(double, one) == ["1080p", "Vertical"] and tag_names(double, two) == ["1080p"]
    assert [found.name for found in double.library.tags.values()].count("1080p") == 1, "a tag is created once"
    assert markers_of(double) == Counter({(one, 12.0, "Scene cut"): 1, (one, 30.5, "Scene cut"): 1})
    assert outcomes[f"{gone} 1080p"] is ChangeStatus.SKIPPED
    assert stored.status is PlanStatus.PARTIALLY_APPLIED and stored.counts["applied"] == 5
    assert job.message == "Applied 6/6 changes"


async def test_a_tag_known_by_an_alias_is_the_one_used_and_nothing_is_added_twice(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scene = double.add_scene("/media/one.mp4").id
        brief = double.library.add_tag("Brief", aliases=["Short"]).id
        cut = double.library.add_tag("Cut", aliases=["scene cut"]).id
        double.library.update_scenes_tags([scene], [brief], "ADD")
        double.library.add_marker(scene, "Cut", 20.0, cut)
        # Already true under the user's own names, and a marker at a new time.
        plan = await stored_plan(tmp_path, [tag(scene, "short"), marker(scene, 20.4), marker(scene, 40.0)])
        settings = make_settings(
            [PlanApplier], tmp_path, stash={"url": double.url, "api_key": KEY}, daemons={NAME: {"interval": 3600}}
        )
        async with running_kernel([PlanApplier], tmp_path, settings=settings) as kernel:
            await kernel.supervisor.start(NAME)
            await kernel.until(lambda: kernel.supervisor.runner(NAME).status.message.startswith("Applied 1 plans"), 30)
        stored, outcomes = await plan_now(tmp_path, plan.id)
    assert stored.status is PlanStatus.APPLIED and set(outcomes.values()) == {ChangeStatus.APPLIED}
    assert tag_names(double, scene) == ["Brief"]
    assert markers_of(double) == Counter({(scene, 20.0, "Cut"): 1, (scene, 40.0, "Cut"): 1})
    assert sorted(found.name for found in double.library.tags.values()) == ["Brief", "Cut"], "no tag is created"


async def test_a_warden_killed_mid_plan_finishes_it_after_a_restart_with_nothing_applied_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scenes = [double.add_scene(f"/media/{index:02d}.mp4").id for index in range(6)]
        changes = [
            change for scene in scenes for change in (tag(scene, "Short"), marker(scene, 5.0), marker(scene, 9.0))
        ]
        plan = await stored_plan(data, changes)
        config = tmp_path / "warden.yaml"
        bundled = {name: {"auto_start": False} for name in discover().daemons}
        settings = {
            "server": {"port": 0},
            "paths": {"data_dir": str(data)},
            "stash": {"url": double.url, "api_key": KEY},
            "daemons": {**bundled, NAME: {"auto_start": True, "interval": 3600}},
        }
        config.write_text(json.dumps(settings))
        created = 0
        killed = asyncio.Event()
        warden: asyncio.subprocess.Process | None = None

        async def kill_at_the_fifth_marker(root_field: str, variables: dict[str, Any]) -> None:
            nonlocal created
            if root_field == "sceneMarkerCreate" and not killed.is_set():
                created += 1
                if created == 5:  # Stash still creates this one; Warden never records that it did
                    assert warden is not None
                    os.kill(warden.pid, signal.SIGKILL)
                    killed.set()

        double.before = kill_at_the_fifth_marker
        for run in range(2):
            log = (tmp_path / f"warden-{run}.log").open("wb")
            warden = await asyncio.create_subprocess_exec(
                *warden_command("run", "--config", str(config)), env=child_env(tmp_path), stdout=log, stderr=log
            )
            try:
                if run == 0:
                    await asyncio.wait_for(killed.wait(), 60)
                    await warden.wait()
                    interrupted, _ = await plan_now(data, plan.id)
                else:
                    await until_plan_ends(data, plan.id)
            finally:
                if warden.returncode is None:
                    warden.send_signal(signal.SIGTERM)
                await warden.wait()
                log.close()
        finished, outcomes = await plan_now(data, plan.id)
    with sqlite3.connect(data / "warden.db") as db:
        resumed = db.execute(
            "SELECT message, items_done, items_total FROM jobs WHERE type = 'apply_plan' AND status = 'completed'"
        ).fetchall()
    assert resumed == [(f"Applied {len(changes)}/{len(changes)} changes", len(changes), len(changes))], (
        "the resumed job counts the whole plan, the changes applied before the kill too"
    )
    assert interrupted.status is PlanStatus.APPLYING and 0 < interrupted.counts["applied"] < len(changes)
    assert finished.status is PlanStatus.APPLIED and set(outcomes.values()) == {ChangeStatus.APPLIED}
    assert markers_of(double) == Counter(
        {(scene, seconds, "Scene cut"): 1 for scene in scenes for seconds in (5.0, 9.0)}
    )
    assert all(tag_names(double, scene) == ["Short"] for scene in scenes)
    assert [found.name for found in double.library.tags.values()].count("Short") == 1


async def until_plan_ends(data: Path, plan_id: int, timeout: float = 60) -> None:
    async def ended() -> bool:  # another process writes the file: polling is the only way to see it
        return (await plan_now(data, plan_id))[0].status is not PlanStatus.APPLYING

    await eventually(ended, timeout=timeout, poll=0.1)


async def test_auto_approval_takes_matching_drafts_rejects_the_unsure_and_fails_a_malformed_change(
    tmp_path: Path,
) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scene = double.add_scene("/media/one.mp4").id
        unsure = ProposedChange(scene, "markers", "add", {"seconds": 3.0, "title": "Cut", "primary_tag": "Cut"}, 0.5)
        malformed = ProposedChange(scene, "markers", "add", {"title": "no time"}, 0.95)
        matching = await stored_plan(tmp_path, [tag(scene, "Vertical"), unsure, malformed], approved=False)
        store = await PlanStore.open(tmp_path / "plans.db")
        try:
            other = await store.create("Manual edits", "a person", [tag(scene, "Mine")])
        finally:
            await store.close()
        config = {"interval": 3600, "auto_approve_all": True, "plan_prefix_filter": "Video", "min_confidence": 0.8}
        settings = make_settings(
            [PlanApplier], tmp_path, stash={"url": double.url, "api_key": KEY}, daemons={NAME: config}
        )
        async with running_kernel([PlanApplier], tmp_path, settings=settings) as kernel:
            await kernel.supervisor.start(NAME)
            await kernel.until(lambda: kernel.supervisor.runner(NAME).status.message.startswith("Applied 1 plans"), 30)
        applied, outcomes = await plan_now(tmp_path, matching.id)
        untouched, _ = await plan_now(tmp_path, other.id)
    assert tag_names(double, scene) == ["Vertical"] and markers_of(double) == Counter()
    assert sorted(outcomes.values()) == sorted([ChangeStatus.APPLIED, ChangeStatus.REJECTED, ChangeStatus.FAILED])
    assert applied.status is PlanStatus.PARTIALLY_APPLIED
    assert untouched.status is PlanStatus.DRAFT, "a plan not matching the prefix waits for a person"


async def test_a_plans_database_that_cannot_be_opened_is_shown_and_retried(tmp_path: Path) -> None:
    blocked = tmp_path / "plans.db"
    blocked.mkdir()  # a folder where the file should be: SQLite cannot open it
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        daemon = {"interval": 3600, "backoff_initial": 0.2, "backoff_max": 0.2}
        settings = make_settings(
            [PlanApplier], tmp_path, stash={"url": double.url, "api_key": KEY}, daemons={NAME: daemon}
        )
        async with running_kernel([PlanApplier], tmp_path, settings=settings) as kernel:
            status = kernel.supervisor.runner(NAME).status
            await kernel.supervisor.start(NAME)
            await kernel.until(lambda: status.problem and "Cannot open the plans database" in status.message, 30)
            shown = status.message
            blocked.rmdir()
            await kernel.until(lambda: status.message == "No plans to apply", 30)
            state = kernel.state(NAME)
    assert shown.startswith(f"Cannot open the plans database {blocked}: ") and shown.endswith("Retrying in 0.2 s.")
    assert state == "running" and not status.problem
