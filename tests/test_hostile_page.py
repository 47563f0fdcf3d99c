"""Markup and script in everything the page shows, checked in a real browser: status messages, sleep
reasons, log lines, job types, keys, messages and results, torrent names, plan names and changes, and
the titles and paths of scenes set aside. Nothing executes (`window.__pwned` stays undefined), no
element is injected, the text shows literally, and a job link never becomes a `javascript:` URL.
(tests/test_page.py has the first check of a status and a log line.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from playwright.async_api import Browser, Page, expect

from daemons.plan_applier import PlanApplier
from daemons.plans.store import ProposedChange
from daemons.stash.base import library_path
from daemons.stash.library import SceneLibrary, SceneRecord
from daemons.video_analysis import VideoAnalysis
from supervisor.daemon import Daemon
from supervisor.jobs import JobContext
from tests.tally import TallyRecorder
from tests.test_page import card, open_page, screenshot
from tests.test_plans_api import draft
from tests.webharness import config_text, running_warden, until

PWN = "window.__pwned=1"
IMG = f'<img src=x onerror="{PWN}">'
SCRIPT = f"<script>{PWN}</script>"
SVG = f'<svg onload="{PWN}"></svg>'
LINK = f"javascript:{PWN}"
TORRENT = f"Show.2024.{IMG}.1080p"


class Prankster(Daemon):
    """Says everything in markup: status, log line, sleep reason, and a job with hostile names that waits."""

    name = "prankster"
    title = f"Prankster {SVG}"
    release: ClassVar[asyncio.Event] = asyncio.Event()

    async def run(self) -> None:
        self.log.warning(f"log {SCRIPT}", torrent=TORRENT, link=LINK)

        async def work(job: JobContext) -> dict[str, str]:
            job.progress(done=1, total=2, message=f"Processing torrent 1/2: {TORRENT}")
            await self.release.wait()
            return {"placed": IMG, "link": LINK}

        await self.update_status(f"status {IMG}")
        await self.run_job(f"type{SCRIPT}", f"key{SVG}", work)
        await self.update_status(f"done {SCRIPT}", job_id=LINK)
        await self.sleep(3600, f"reason {SVG}")


YAML = (
    config_text(f"  {PlanApplier.name}:\n    auto_start: false\n  {VideoAnalysis.name}:\n    auto_start: false\n")
    + "stash:\n  url: http://127.0.0.1:9\n"
)


async def set_aside_scene(path: Path) -> None:
    """A scene with a hostile title and path, set aside after three failed analyses (the default)."""
    library = await SceneLibrary.open(path)
    try:
        record = SceneRecord("77", f"scene {IMG}", f"/media/{SCRIPT}.mp4", [], [], 0, "2027-01-15T08:00:00Z", None)
        await library.upsert([record], seen_at=1.0)
        for _ in range(3):
            await library.analysis_failed("77", f"ffprobe said {SVG}")
    finally:
        await library.close()


async def shows(page: Page, texts: list[str], missing: list[str]) -> None:
    """Wait for each text on the page, as text; add those that never show to `missing`."""
    for text in texts:
        try:
            await expect(page.locator("body")).to_contain_text(text)
        except AssertionError:
            missing.append(text)


async def test_markup_everywhere_on_the_page_is_shown_as_text_and_never_runs(
    browser: Browser, tmp_path: Path, tally: TallyRecorder
) -> None:
    Prankster.release = asyncio.Event()
    plan = await draft(
        tmp_path,
        [
            ProposedChange("12", "tags", "add", f"tag {IMG}", 1.0),
            ProposedChange("12", "markers", "add", {"seconds": 3.0, "title": SCRIPT, "primary_tag": SVG}, 0.9),
        ],
        name=f"plan {SCRIPT}",
    )
    missing: list[str] = []
    async with running_warden(tmp_path, [Prankster, PlanApplier, VideoAnalysis], yaml=YAML) as warden:
        await set_aside_scene(library_path(warden.settings))
        page = await open_page(browser, warden.url)
        prankster = card(page, "prankster")

        # The daemons page: the card while the job runs, then the log panel.
        await expect(prankster.get_by_test_id("progress")).to_be_visible()
        texts = [Prankster.title, f"Processing torrent 1/2: {TORRENT}"]
        await shows(page, texts, missing)
        await prankster.get_by_test_id("open-logs").click()
        texts += [f"log {SCRIPT}", TORRENT]
        await shows(page, texts[2:], missing)

        # The job's own view, reached through the card's link.
        await prankster.get_by_test_id("job-link").click()
        texts += [f"type{SCRIPT}", f"key{SVG}"]
        await shows(page, texts[4:], missing)
        Prankster.release.set()
        await expect(page.get_by_test_id("job-result")).to_contain_text(LINK)
        texts.append(IMG)
        await shows(page, [IMG], missing)

        # Back on the daemons page: a status linking a "job" named javascript:... and a sleep reason.
        runner = warden.supervisor.runner("prankster")
        await until(warden, lambda: runner.status.sleeping_until is not None)
        await page.goto(warden.url)
        texts += [f"done {SCRIPT}", f"reason {SVG}"]
        await shows(page, texts[-2:], missing)
        href = await card(page, "prankster").get_by_test_id("job-link").get_attribute("href")
        assert href is not None and not href.lower().startswith("javascript"), href
        links = await page.eval_on_selector_all("a[href]", "as => as.map(a => a.protocol)")
        javascript_links = sum(protocol == "javascript:" for protocol in links)

        # The plans page: the plan's name and changes, and the scene set aside.
        await page.goto(f"{warden.url}plans/{plan.id}")
        texts += [f"plan {SCRIPT}", f"tag {IMG}", SCRIPT]
        await shows(page, texts[-3:], missing)
        await page.goto(f"{warden.url}plans")
        await expect(page.get_by_test_id("set-aside-77")).to_be_visible()
        texts += [f"scene {IMG}", f"/media/{SCRIPT}.mp4", f"ffprobe said {SVG}"]
        await shows(page, texts[-3:], missing)
        pwned = await page.evaluate("typeof window.__pwned")
        injected = await page.locator("img[src=x], svg[onload], script:not([src]):not([type=module])").count()
        await screenshot(page, "hostile-text")
    lost = len(missing) + (pwned != "undefined") + injected + javascript_links
    tally.record(
        "page",
        "<img onerror>, <script>, <svg onload> and javascript: in status, logs, jobs, torrent, plan and scene names",
        tries=len(texts),
        outcome="each shown as literal text; nothing ran, no element injected, no javascript: link",
        lost=lost,
    )
    assert missing == [], "shown literally"
    assert pwned == "undefined"
    assert injected == 0 and javascript_links == 0
    assert lost == 0
