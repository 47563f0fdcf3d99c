"""Demo mode from a fresh data folder: the built-in Stash, its generated library, both Stash daemons at work."""

from __future__ import annotations

import functools
from pathlib import Path

from playwright.async_api import Browser, expect

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
"""


async def test_demo_mode_from_a_fresh_data_folder_reaches_a_normal_cycle_of_every_stash_daemon(
    tmp_path: Path, browser: Browser
) -> None:
    demo = functools.partial(demo_stash, clips=CLIPS, job_step=0.01)
    async with running_warden(tmp_path, [StashSync, StashGeneration], config_text(SECTIONS), [demo]) as warden:
        assert warden.supervisor is not None
        sync, generation = (warden.supervisor.runner(name).status for name in ("stash_sync", "stash_generation"))
        banner = warden.hub.system.get("demo", {})
        await until(
            warden,
            lambda: generation.message == "All 3 synced scenes have their covers, previews, sprites, phashes",
            timeout=60,
        )
        settings = warden.settings
        await until(warden, lambda: sync.message.startswith(("No scenes changed", "Sync completed")), timeout=30)
        problems = [status.name for status in (sync, generation) if status.problem]
        assert warden.url is not None
        page = await open_page(browser, warden.url)
        await expect(page.get_by_test_id("banner-demo")).to_contain_text("Demo library: a built-in Stash at")
        await expect(card(page, "stash_generation")).to_contain_text("All 3 synced scenes have their")
        await screenshot(page, "demo")
    videos = sorted(path.name for path in (tmp_path / "data" / "demo" / "videos").iterdir())
    assert videos == sorted(clip.name for clip in CLIPS)
    assert banner["enabled"] is True and banner["message"].startswith("Demo library")
    assert settings.stash.url == banner["stash_url"] and settings.stash.api_key is not None
    assert settings.daemon_config("stash_sync").interval == 1  # the file's value, not the demo's
    assert settings.daemon_config("stash_generation").batch_size == 8  # the demo's, the file sets none
    assert problems == []
