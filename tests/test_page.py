"""The Daemons page in a real browser (Debian's Chromium driven by Playwright).

Each test leaves a screenshot in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from daemons.children import free_port
from supervisor.daemon import Daemon
from supervisor.jobs import JobContext, JobStatus
from supervisor.models import DaemonState
from tests.daemons_for_tests import Retrier, Worker
from tests.webharness import TOKEN, config_text, running_warden, until

CHROMIUM = "/usr/bin/chromium"  # installed by `make test` (Debian package chromium)
ARTIFACTS = Path(__file__).parent / "artifacts"
# Flags that keep Chromium from reaching out to the network (this machine has none) and root-safe.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


async def open_page(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{url}login?token={TOKEN}")  # sets the session cookie, then opens the page
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    return page


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def card(page: Page, name: str):
    return page.get_by_test_id(f"card-{name}")


async def test_live_status_changes_without_reload(browser, tmp_path):
    async with running_warden(tmp_path, [Worker]) as warden:
        page = await open_page(browser, warden.url)
        worker = card(page, "worker")
        await expect(worker.get_by_test_id("state-badge")).to_have_text("running")
        await expect(worker.get_by_test_id("status-message")).to_have_text("Round 1")
        daemon = warden.supervisor.runner("worker").daemon
        await daemon.update_status("Processing batch 2 of 5 (50 scenes)", progress=40)
        await expect(worker.get_by_test_id("status-message")).to_have_text("Processing batch 2 of 5 (50 scenes)")
        await expect(worker.get_by_test_id("progress")).to_be_visible()
        await screenshot(page, "live-status")


async def test_stop_and_start_show_in_a_second_tab(browser, tmp_path):
    async with running_warden(tmp_path, [Worker]) as warden:
        first, second = await open_page(browser, warden.url), await open_page(browser, warden.url)
        await card(first, "worker").get_by_test_id("btn-stop").click()
        await expect(card(second, "worker").get_by_test_id("state-badge")).to_have_text("stopped")
        assert warden.supervisor.runner("worker").status.state is DaemonState.STOPPED
        await screenshot(second, "second-tab-stopped")
        await card(first, "worker").get_by_test_id("btn-start").click()
        await expect(card(second, "worker").get_by_test_id("state-badge")).to_have_text("running")
        await screenshot(second, "second-tab-running")


async def test_invalid_config_value_shows_the_error_inline_and_changes_nothing(browser, tmp_path):
    async with running_warden(tmp_path, [Worker]) as warden:
        before = warden.config.path.read_bytes()
        page = await open_page(browser, warden.url)
        await card(page, "worker").get_by_test_id("open-config").click()
        await page.get_by_test_id("field-interval").fill("-5")
        await page.get_by_test_id("config-save").click()
        error = page.get_by_test_id("error-interval")
        await expect(error).to_contain_text("greater than or equal to 0.001")
        assert warden.config.path.read_bytes() == before
        await error.scroll_into_view_if_needed()
        await screenshot(page, "config-invalid")


async def test_a_valid_edit_is_saved_with_comments_and_restarts_the_daemon(browser, tmp_path):
    yaml = config_text("  worker:\n    interval: 30  # seconds between rounds\n")
    async with running_warden(tmp_path, [Worker], yaml=yaml) as warden:
        runs = warden.supervisor.runner("worker").runs
        page = await open_page(browser, warden.url)
        await card(page, "worker").get_by_test_id("open-config").click()
        await page.get_by_test_id("field-interval").fill("45")
        await page.get_by_test_id("config-save").click()
        runner = warden.supervisor.runner("worker")
        await until(warden, lambda: runner.runs == runs + 1 and runner.status.state is DaemonState.RUNNING)
        assert runner.daemon is not None and runner.daemon.config.interval == 45
        text = warden.config.path.read_text()
        assert "    interval: 45  # seconds between rounds\n" in text, "the comment on the changed line is kept"
        await expect(page.get_by_test_id("error-interval")).to_be_hidden()
        await expect(card(page, "worker").get_by_test_id("state-badge")).to_have_text("running")
        await screenshot(page, "config-saved")


async def test_a_problem_is_shown_as_a_warning_until_the_daemon_reports_again(browser, tmp_path, monkeypatch):
    monkeypatch.setattr(Retrier, "service_up", False)
    async with running_warden(tmp_path, [Retrier]) as warden:
        page = await open_page(browser, warden.url)
        retrier = card(page, "retrier")
        await expect(retrier.get_by_test_id("status-message")).to_have_text("Cannot reach Stash: connection refused")
        await expect(retrier.get_by_test_id("problem-label")).to_have_text("⚠\ufe0e Problem:")
        await expect(retrier.get_by_test_id("problem-badge")).to_be_visible()
        await expect(retrier.get_by_test_id("state-badge")).to_have_text("running")
        await expect(retrier.get_by_test_id("sleeping")).to_contain_text("next try")
        await screenshot(page, "problem-status")

        monkeypatch.setattr(Retrier, "service_up", True)
        assert warden.supervisor is not None and warden.supervisor.wake("retrier")
        await expect(retrier.get_by_test_id("status-message")).to_have_text("Connected to Stash")
        await expect(retrier.get_by_test_id("problem-label")).to_be_hidden()
        await expect(retrier.get_by_test_id("problem-badge")).to_be_hidden()


class Mischief(Daemon):
    name = "mischief"
    title = "Mischief <b>bold</b>"

    async def run(self) -> None:
        await self.update_status("<img src=x onerror=alert(1)>")
        self.log.warning("<script>alert(2)</script>")
        await self.sleep(3600, "<i>resting</i>")


async def test_status_text_is_shown_as_text_never_as_html(browser, tmp_path):
    async with running_warden(tmp_path, [Mischief]) as warden:
        page = await open_page(browser, warden.url)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        message = card(page, "mischief").get_by_test_id("status-message")
        await expect(message).to_have_text("<img src=x onerror=alert(1)>")
        assert await page.locator("img").count() == 0
        await card(page, "mischief").get_by_test_id("open-logs").click()
        await expect(page.get_by_test_id("log-panel-mischief")).to_contain_text("<script>alert(2)</script>")
        assert await page.locator("[data-testid=card-mischief] b, [data-testid=card-mischief] i").count() == 0
        assert dialogs == []
        await screenshot(page, "text-not-html")


async def test_connection_indicator_follows_a_server_restart(browser, tmp_path):
    yaml = config_text().replace("port: 0", f"port: {free_port()}")
    async with running_warden(tmp_path, [Worker], yaml=yaml) as warden:
        page = await open_page(browser, warden.url)
        await expect(card(page, "worker").get_by_test_id("state-badge")).to_have_text("running")
    # The server is gone: the page says so, and keeps trying.
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    await screenshot(page, "reconnecting")
    yaml = yaml.replace("daemons:\n  {}", "daemons:\n  worker:\n    auto_start: false")
    async with running_warden(tmp_path, [Worker], yaml=yaml):
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=20_000)
        # A new boot: the page shows the new state (not auto-started this time), not the old one.
        await expect(card(page, "worker").get_by_test_id("state-badge")).to_have_text("stopped")
        await screenshot(page, "live-again")


class Importer(Daemon):
    """Runs a job of 4 steps; the test lets each step through."""

    name = "importer"
    title = "Importer"
    step: asyncio.Event

    async def run(self) -> None:
        async def work(job: JobContext) -> int:
            for n in range(1, 5):
                job.progress(done=n, total=4, message=f"importing item {n} of 4")
                await type(self).step.wait()
                type(self).step.clear()
            return 4

        await self.update_status("Importing 4 items")
        await self.run_job("import", "library", work)
        await self.update_status("Imported 4 items")
        await self.sleep(3600, "next import")


async def test_a_jobs_progress_moves_on_the_card_and_the_job_can_be_cancelled(browser, tmp_path):
    Importer.step = asyncio.Event()
    async with running_warden(tmp_path, [Importer]) as warden:
        page = await open_page(browser, warden.url)
        bar = card(page, "importer").get_by_test_id("progress")
        await expect(bar).to_have_attribute("aria-valuenow", "25")
        Importer.step.set()
        await expect(bar).to_have_attribute("aria-valuenow", "50")
        await screenshot(page, "job-progress-card")
        await card(page, "importer").get_by_test_id("job-link").click()
        detail = page.get_by_test_id("job-detail")
        await expect(detail).to_contain_text("importing item 2 of 4")
        Importer.step.set()
        await expect(detail.get_by_test_id("job-progress")).to_have_attribute("aria-valuenow", "75")
        await screenshot(page, "job-detail")
        await page.get_by_test_id("open-jobs").click()
        job = warden.jobs.active()[0]
        row = page.get_by_test_id("jobs-active").get_by_test_id(f"job-{job.id}")
        await expect(row.get_by_test_id("job-progress")).to_have_attribute("aria-valuenow", "75")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await row.get_by_test_id("job-cancel").click()
        recent = page.get_by_test_id("jobs-recent").get_by_test_id(f"job-{job.id}")
        await expect(recent.get_by_test_id("job-status")).to_have_text("cancelled")
        assert job.status is JobStatus.CANCELLED
        await screenshot(page, "jobs-page")
        await page.goto(f"{warden.url}jobs/{job.id}")  # a full load of a job's own address works too
        await expect(page.get_by_test_id("job-detail").get_by_test_id("job-status")).to_have_text("cancelled")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
