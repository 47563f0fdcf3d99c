"""Demo mode from a fresh data folder: the built-in Stash and its generated library, a qbittorrent-nox seeding a
demo download, and every daemon at work; without qbittorrent-nox, download_processor says so and retries."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from daemons.download_processor import DownloadProcessor
from daemons.qbittorrent import nox
from daemons.qbittorrent.demo import DEMO_DOWNLOAD, demo_qbittorrent
from daemons.stash.demo import DemoClip, demo_stash
from daemons.stash_generation import StashGeneration
from daemons.stash_sync import StashSync
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
"""
DAEMONS = [StashSync, StashGeneration, DownloadProcessor]


async def test_demo_mode_from_a_fresh_data_folder_reaches_a_normal_cycle_of_every_daemon(
    tmp_path: Path, browser: Browser
) -> None:
    demo = functools.partial(demo_stash, clips=CLIPS, job_step=0.01)
    async with running_warden(tmp_path, DAEMONS, config_text(SECTIONS), [demo, demo_qbittorrent]) as warden:
        assert warden.supervisor is not None
        sync, generation, downloads = (warden.supervisor.runner(cls.name).status for cls in DAEMONS)
        await until(warden, lambda: downloads.message == "Processed 1 download: 2 linked", timeout=60)
        # The two clips of the demo download join the three of the library once Stash has scanned them.
        await until(
            warden,
            lambda: generation.message == "All 5 synced scenes have their covers, previews, sprites, phashes",
            timeout=60,
        )
        banner = warden.hub.system.get("demo", {})
        settings = warden.settings
        await until(warden, lambda: sync.message.startswith(("No scenes changed", "Sync completed")), timeout=30)
        problems = [status.name for status in (sync, generation, downloads) if status.problem]
        assert warden.url is not None
        page = await open_page(browser, warden.url)
        await expect(page.get_by_test_id("banner-demo")).to_contain_text("Demo library: a built-in Stash at")
        await expect(page.get_by_test_id("banner-demo")).to_contain_text("A demo qBittorrent at http://127.0.0.1:")
        await expect(card(page, "stash_generation")).to_contain_text("All 5 synced scenes have their")
        # Its next check, a second later, finds nothing new: either line is the daemon at rest.
        done = re.compile(r"Processed 1 download: 2 linked|No new downloads in category stash")
        await expect(card(page, "download_processor")).to_contain_text(done)
        await screenshot(page, "demo")
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
    assert problems == []


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
