"""Demo mode from a fresh data folder: the built-in Stash and its generated library, a qbittorrent-nox seeding a
demo download, and every daemon at work, the whole chain by itself (sync, analysis, a plan approved and applied
to the built-in Stash, generation); without qbittorrent-nox, download_processor says so and retries. The built-in
Stash is a process of its own: gone when Warden stops, and when it dies or cannot start, the banner says so and
the Stash daemons show Stash unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from daemons.analysis.ffmpeg import VERSION
from daemons.download_processor import DownloadProcessor
from daemons.plan_applier import PlanApplier, plans_path
from daemons.plans.store import Change, ChangeStatus, Plan, PlanStatus, PlanStore
from daemons.qbittorrent import nox
from daemons.qbittorrent.demo import DEMO_DOWNLOAD, demo_qbittorrent
from daemons.stash.base import library_path
from daemons.stash.demo import STASH_LOG, DemoClip, demo_stash
from daemons.stash.double_process import StashDoubleProcess
from daemons.stash.library import SceneLibrary, SceneRecord
from daemons.stash_generation import StashGeneration
from daemons.stash_sync import StashSync
from daemons.video_analysis import VideoAnalysis
from supervisor.app import Warden
from supervisor.models import DaemonStatus
from tests.test_page import card, open_page, screenshot
from tests.webharness import config_text, running_warden, until

CLIPS = [
    DemoClip("one-wide.mp4", 160, 90, 2, 25, 1),
    DemoClip("two-portrait.mp4", 90, 160, 1, 30, 0),
    DemoClip("three-square.mp4", 120, 120, 3, 24, 2),
]
# Short intervals set in the file: they win over the demo's own.
SECTIONS = """  stash_sync:
    interval: 1
  stash_generation:
    interval: 1
    poll_interval: 0.05
  download_processor:
    interval: 1
  video_analysis:
    interval: 1
  plan_applier:
    interval: 1
"""
DAEMONS = [StashSync, StashGeneration, DownloadProcessor, VideoAnalysis, PlanApplier]
SOURCE = f"ffmpeg {VERSION}"
UNFINISHED = (PlanStatus.DRAFT, PlanStatus.REVIEWING, PlanStatus.APPROVED, PlanStatus.APPLYING)
#: What ffprobe finds in each demo video: all are small, short and silent; one stands upright.
EXPECTED_TAGS = {
    "one-wide.mp4": {"SD", "Short", "No audio"},
    "two-portrait.mp4": {"SD", "Short", "No audio", "Vertical"},
    "three-square.mp4": {"SD", "Short", "No audio"},
    "Part 1.mp4": {"SD", "Short", "No audio"},
    "Part 2.mp4": {"SD", "Short", "No audio"},
}
#: Scene-cut markers: the library clips' cuts lie too near an end (min_cut_gap); the download's
#: Part 1 (5 s) has one cut, Part 2 (8 s) two.
EXPECTED_MARKERS = {"Part 1.mp4": 1, "Part 2.mp4": 2}
STASH_STATE = """query DemoState {
  findScenes(filter: {per_page: -1}) {
    scenes { id files { path } tags { id name } scene_markers { id seconds primary_tag { id name } } }
  }
  findTags(filter: {per_page: -1}) { tags { id name } }
  findSceneMarkers(filter: {per_page: -1}) { scene_markers { id seconds scene { id } primary_tag { name } } }
}"""


async def test_demo_mode_from_a_fresh_data_folder_reaches_a_normal_cycle_of_every_daemon(
    tmp_path: Path, browser: Browser
) -> None:
    demo = functools.partial(demo_stash, clips=CLIPS, job_step=0.01)
    async with running_warden(tmp_path, DAEMONS, config_text(SECTIONS), [demo, demo_qbittorrent]) as warden:
        assert warden.supervisor is not None
        statuses = [warden.supervisor.runner(cls.name).status for cls in DAEMONS]
        sync, generation, downloads = statuses[:3]
        await until(warden, lambda: downloads.message == "Processed 1 download: 2 linked", timeout=60)
        # The two clips of the demo download join the three of the library once Stash has scanned them.
        await until(
            warden,
            lambda: generation.message == "All 5 synced scenes have their covers, previews, sprites, phashes",
            timeout=60,
        )
        banner = warden.hub.system.get("demo", {})
        settings = warden.settings
        # By itself: video_analysis writes plans of what it finds, plan_applier approves and applies them.
        library = await SceneLibrary.open(library_path(settings))
        store = await PlanStore.open(plans_path(settings))
        try:
            await until_checked(warden, functools.partial(chain_unfinished, library, store), timeout=60)
            scenes = await library.scenes()
            plans = await store.plans()
            changes = [change for plan in plans for change in await store.changes(plan.id)]
        finally:
            await store.close()
            await library.close()
        stash = await stash_state(warden)
        await until(warden, lambda: sync.message.startswith(("No scenes changed", "Sync completed")), timeout=30)
        assert warden.url is not None
        page = await open_page(browser, warden.url)
        await expect(page.get_by_test_id("banner-demo")).to_contain_text("Demo library: a built-in Stash at")
        await expect(page.get_by_test_id("banner-demo")).to_contain_text("A demo qBittorrent at http://127.0.0.1:")
        # Generation is not thrown off by the tags and markers the plans added (the scenes changed in Stash).
        await expect(card(page, "stash_generation")).to_contain_text("All 5 synced scenes have their")
        await expect(card(page, "video_analysis")).to_contain_text("No scenes need analysis")
        await expect(card(page, "plan_applier")).to_contain_text("No plans to apply")
        # Its next check, a second later, finds nothing new: either line is the daemon at rest.
        done = re.compile(r"Processed 1 download: 2 linked|No new downloads in category stash")
        await expect(card(page, "download_processor")).to_contain_text(done)
        problems = [status.name for status in statuses if status.problem]
        await screenshot(page, "demo")
        await page.get_by_test_id("open-plans").click()
        for plan in plans:
            await expect(page.get_by_test_id(f"plan-row-{plan.id}").get_by_test_id("plan-status")).to_have_text(
                "applied"
            )
        await screenshot(page, "demo-plans")
    demo_folder = tmp_path / "data" / "demo"
    videos = sorted(path.name for path in (demo_folder / "videos").iterdir() if path.is_file())
    assert videos == sorted(clip.name for clip in CLIPS)
    placed = sorted(
        str(path.relative_to(demo_folder / "videos" / "downloads"))
        for path in (demo_folder / "videos" / "downloads").rglob("*.mp4")
    )
    assert placed == [f"{DEMO_DOWNLOAD}/Part 1.mp4", f"{DEMO_DOWNLOAD}/Part 2.mp4"]  # not the sample
    assert banner["enabled"] is True and banner["message"].startswith("Demo library")
    assert settings.stash.url == banner["stash_url"] and settings.stash.api_key is not None
    assert settings.qbittorrent.url is not None and settings.qbittorrent.url.startswith("http://127.0.0.1:")
    assert settings.daemon_config("stash_sync").interval == 1  # the file's value, not the demo's
    assert settings.daemon_config("stash_generation").batch_size == 8  # the demo's, the file sets none
    assert settings.daemon_config("plan_applier").auto_approve_all is True  # the demo's
    assert problems == []
    check_the_chain(scenes, plans, changes, stash)


async def test_demo_mode_without_qbittorrent_nox_shows_it_unreachable_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nox, "EXECUTABLE", "qbittorrent-nox-not-installed")
    demo = functools.partial(demo_stash, clips=CLIPS[:1], job_step=0.01)
    async with running_warden(tmp_path, DAEMONS, config_text(SECTIONS), [demo, demo_qbittorrent]) as warden:
        assert warden.supervisor is not None
        status = warden.supervisor.runner(DownloadProcessor.name).status
        url = warden.settings.qbittorrent.url
        unreachable = f"qBittorrent not reachable at {url}: Connection refused."
        await until(warden, lambda: status.problem and status.message.startswith(unreachable), 30)
        await until(warden, lambda: status.message == f"{unreachable} Retrying in 2 s.", 30)  # it tried again
        banner = warden.hub.system["demo"]
    assert (
        "No demo qBittorrent: qbittorrent-nox is not installed (apt-get install qbittorrent-nox)" in banner["message"]
    )


SYNC_ONLY = "  stash_sync:\n    interval: 1\n    backoff_initial: 0.2\n    backoff_max: 0.5\n"


def stash_doubles() -> list[int]:
    """The live child processes of this test that run the Stash double."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended meanwhile
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            mine = int(parent) == os.getpid() and state != "Z"
            if mine and b"daemons.stash.double" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found


def unreachable(status: DaemonStatus, warden: Warden) -> bool:
    return status.problem and status.message.startswith(f"Cannot reach Stash at {warden.settings.stash.url}: ")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_the_demo_stash_is_a_process_of_its_own_gone_when_warden_stops(tmp_path: Path) -> None:
    demo = functools.partial(demo_stash, clips=CLIPS[:1], job_step=0.01)
    async with running_warden(tmp_path, [StashSync], config_text(SYNC_ONLY), [demo]) as warden:
        [pid] = stash_doubles()
        assert warden.settings.stash.url == warden.hub.system["demo"]["stash_url"]
        assert warden.supervisor is not None
        sync = warden.supervisor.runner(StashSync.name).status
        await until(warden, lambda: sync.message.startswith(("No scenes changed", "Sync completed")), timeout=30)
        assert alive(pid)
    assert not alive(pid)
    assert stash_doubles() == []
    assert "schema:" in (tmp_path / "data" / "demo" / STASH_LOG).read_text()


async def test_a_demo_stash_that_dies_shows_on_the_banner_and_as_stash_unreachable(tmp_path: Path) -> None:
    demo = functools.partial(demo_stash, clips=CLIPS[:1], job_step=0.01)
    async with running_warden(tmp_path, [StashSync], config_text(SYNC_ONLY), [demo]) as warden:
        [pid] = stash_doubles()
        assert warden.supervisor is not None
        sync = warden.supervisor.runner(StashSync.name).status
        await until(warden, lambda: sync.message.startswith(("No scenes changed", "Sync completed")), timeout=30)
        os.kill(pid, signal.SIGKILL)
        await until(warden, lambda: "It stopped unexpectedly" in warden.hub.system["demo"]["message"], timeout=10)
        await until(warden, lambda: unreachable(sync, warden), timeout=30)
        banner = warden.hub.system["demo"]["message"]
    assert f"It stopped unexpectedly (exit status {-signal.SIGKILL}; its log is " in banner
    assert "the Stash daemons show Stash unreachable until Warden is restarted" in banner


async def test_a_demo_stash_that_cannot_start_is_said_on_the_banner_and_warden_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = "import sys; sys.stdin.readline(); print('the schema is unreadable', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(StashDoubleProcess, "command", lambda self: [sys.executable, "-c", broken])
    demo = functools.partial(demo_stash, clips=CLIPS[:1], job_step=0.01)
    async with running_warden(tmp_path, [StashSync], config_text(SYNC_ONLY), [demo]) as warden:
        assert warden.supervisor is not None
        sync = warden.supervisor.runner(StashSync.name).status
        await until(warden, lambda: unreachable(sync, warden), timeout=30)
        banner = warden.hub.system["demo"]
    log = tmp_path / "data" / "demo" / STASH_LOG
    assert banner["message"] == (
        "Demo library: the built-in Stash did not start (the Stash double did not come up: it exited with status 3; "
        f"its log is {log}), so the Stash daemons have none to reach."
    )
    assert banner["stash_url"] == warden.settings.stash.url


def check_the_chain(scenes: list[SceneRecord], plans: list[Plan], changes: list[Change], stash: dict[str, Any]) -> None:
    """Every scene analysed and generated, every plan applied in full, and Stash holding what they proposed."""
    files = {scene.id: Path(scene.path or "").name for scene in scenes}
    assert sorted(files.values()) == sorted(EXPECTED_TAGS)
    assert {scene.analyzed_version for scene in scenes} == {SOURCE}
    assert all(scene.generated == {"covers", "previews", "sprites", "phashes"} for scene in scenes)
    # Every plan applied in full: approved by plan_applier itself, nothing failed, skipped or left over.
    assert plans, "video analysis wrote no plan"
    for plan in plans:
        assert (plan.status, plan.source) == (PlanStatus.APPLIED, SOURCE), plan
        assert plan.counts[ChangeStatus.APPLIED] == sum(plan.counts.values()) > 0, plan
    assert {change.status for change in changes} == {ChangeStatus.APPLIED}
    # What was proposed: the technical tags of each video and a marker at each cut, each one once.
    proposed = Counter(by_file(files[change.scene_id], change.field, change.action, change.value) for change in changes)
    assert max(proposed.values()) == 1, proposed
    assert {name: tags_of(proposed, name) for name in EXPECTED_TAGS} == EXPECTED_TAGS
    assert {name: markers_of(proposed, name) for name in EXPECTED_TAGS} == {
        name: EXPECTED_MARKERS.get(name, 0) for name in EXPECTED_TAGS
    }
    # ...is what the built-in Stash now holds on its scenes, no more and nothing twice.
    stash_files = {scene["id"]: Path(scene["files"][0]["path"]).name for scene in stash["findScenes"]["scenes"]}
    assert sorted(stash_files.values()) == sorted(EXPECTED_TAGS)
    held: Counter[tuple[str, str, str, Any]] = Counter()
    for scene in stash["findScenes"]["scenes"]:
        name = stash_files[scene["id"]]
        held.update(by_file(name, "tags", "add", tag["name"]) for tag in scene["tags"])
        held.update(by_file(name, "markers", "add", marker) for marker in scene["scene_markers"])
    assert held == proposed
    # The markers Stash lists are those (none of another scene, none twice), and each tag exists once.
    markers = Counter(
        by_file(stash_files[marker["scene"]["id"]], "markers", "add", marker)
        for marker in stash["findSceneMarkers"]["scene_markers"]
    )
    assert markers == Counter({change: 1 for change in proposed if change[0] == "markers"})
    tag_names = Counter(tag["name"].lower() for tag in stash["findTags"]["tags"])
    assert max(tag_names.values()) == 1, tag_names  # however many plans and scenes use a tag


async def until_checked(warden: Warden, check: Callable[[], Awaitable[str | None]], timeout: float) -> None:
    """Wait until `check()` finds nothing missing (None), re-checking after every change Warden publishes;
    on timeout, fail saying what was still missing."""
    subscription = warden.hub.subscribe(max_lines=100)
    missing: str | None = None
    try:
        async with asyncio.timeout(timeout):
            while (missing := await check()) is not None:
                await subscription.get()
    except TimeoutError:
        raise AssertionError(f"still after {timeout} s: {missing}") from None
    finally:
        warden.hub.unsubscribe(subscription)


async def chain_unfinished(library: SceneLibrary, store: PlanStore) -> str | None:
    """What the chain has yet to do: scenes to analyse, or plans not yet taken to their end."""
    scenes = await library.scenes()
    if len(scenes) < len(EXPECTED_TAGS) or any(scene.analyzed_version != SOURCE for scene in scenes):
        return f"scenes not all analysed: {[(scene.path, scene.analyzed_version) for scene in scenes]}"
    plans: list[Plan] = await store.plans()
    if not plans:
        return "no plan written"
    if any(plan.status in UNFINISHED for plan in plans):
        return f"plans not yet applied: {[(plan.id, str(plan.status), plan.counts) for plan in plans]}"
    return None


async def stash_state(warden: Warden) -> dict[str, Any]:
    """The demo Stash's scenes, tags and markers, asked for as any Stash client would: by GraphQL."""
    stash = warden.settings.stash
    assert stash.url is not None and stash.api_key is not None
    headers = {"ApiKey": stash.api_key.get_secret_value()}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stash.url.rstrip('/')}/graphql", json={"query": STASH_STATE}, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        body = await response.json()
    assert not body.get("errors"), body
    data: dict[str, Any] = body["data"]
    return data


def by_file(name: str, field: str, action: str, value: Any) -> tuple[str, str, str, Any]:
    """A change by its video's file name: a tag by its name, a marker by its primary tag and time."""
    if field == "markers":
        primary = value["primary_tag"]
        value = (primary["name"] if isinstance(primary, dict) else primary, value["seconds"])
    return field, name, action, value


def tags_of(changes: Counter[tuple[str, str, str, Any]], name: str) -> set[str]:
    return {value for field, file, action, value in changes if (field, file, action) == ("tags", name, "add")}


def markers_of(changes: Counter[tuple[str, str, str, Any]], name: str) -> int:
    return sum(count for (field, file, _, _), count in changes.items() if (field, file) == ("markers", name))
