"""Start-up order: the page answers first and says that Warden is starting, the companions (demo mode's Stash
and qBittorrent) come up together, and the daemons set to auto-start start once they are all up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from supervisor.app import Warden, load_config
from supervisor.plugins import Registry
from tests.daemons_for_tests import Worker
from tests.test_page import card, open_page
from tests.webharness import api_session, call, config_text
from web.app import serve


class Gate:
    """A companion that comes up only when the test opens it; it records what happened to it."""

    def __init__(self) -> None:
        self.entering = asyncio.Event()
        self.open = asyncio.Event()
        self.up = asyncio.Event()
        self.left = asyncio.Event()
        self.cancelled = False

    @asynccontextmanager
    async def __call__(self, warden: Warden) -> AsyncIterator[None]:
        self.entering.set()
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.up.set()
        try:
            yield
        finally:
            self.left.set()


Companion = Callable[[Warden], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def starting_warden(
    tmp_path: Path, *companions: Companion
) -> AsyncIterator[tuple[Warden, asyncio.Event, asyncio.Task[list[str]]]]:
    """Warden with `companions`, run until the block ends (then stopped); the block begins as soon as it runs."""
    path = tmp_path / "warden.yaml"
    path.write_text(
        config_text("  worker:\n    interval: 3600\n").replace("data_dir: data", f"data_dir: {tmp_path / 'data'}")
    )
    registry = Registry(daemons={Worker.name: Worker})
    warden = Warden(load_config(path, registry), registry, front=serve, companions=list(companions))
    stop = asyncio.Event()
    task = asyncio.create_task(warden.run(stop))
    try:
        yield warden, stop, task
    finally:
        stop.set()  # companions still coming up are cancelled
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)


async def test_the_page_answers_while_the_companions_come_up_and_says_warden_is_starting(
    tmp_path: Path, browser: Browser
) -> None:
    stash, qbittorrent = Gate(), Gate()
    async with starting_warden(tmp_path, stash, qbittorrent) as (warden, _, _):
        # Both are coming up at once, neither waits for the other; the page is already served.
        await asyncio.wait_for(asyncio.gather(stash.entering.wait(), qbittorrent.entering.wait()), 10)
        assert warden.url is not None and not warden.ready.is_set()
        async with api_session(warden) as session:
            health = await call(session, "GET", "api/health")
            assert health["ok"] is True and health["starting"] is True
            assert health["daemons"] == {"worker": {"state": "stopped", "healthy": True}}
            startup = (await call(session, "GET", "api/daemons"))["system"]["startup"]
            assert startup["ready"] is False
            assert (
                startup["message"]
                == "Warden is starting: daemons with auto-start begin once the services they use are up."
            )
            page = await open_page(browser, warden.url)
            banner = page.get_by_test_id("banner-startup")
            await expect(banner).to_have_text(startup["message"])
            await expect(card(page, "worker").get_by_test_id("state-badge")).to_have_text("stopped")

            stash.open.set()
            await asyncio.wait_for(stash.up.wait(), 10)  # one companion up is not enough
            assert not warden.ready.is_set() and (await call(session, "GET", "api/health"))["starting"] is True
            qbittorrent.open.set()
            await asyncio.wait_for(warden.ready.wait(), 10)
            health = await call(session, "GET", "api/health")
            assert health["starting"] is False and health["daemons"]["worker"]["state"] == "running"
            assert (await call(session, "GET", "api/daemons"))["system"]["startup"]["ready"] is True
            await expect(banner).to_be_hidden()
            await expect(card(page, "worker").get_by_test_id("state-badge")).to_have_text("running")
            assert not stash.left.is_set() and not qbittorrent.left.is_set()
    assert stash.left.is_set() and qbittorrent.left.is_set()


async def test_a_stop_while_the_companions_come_up_cancels_them_and_starts_no_daemon(tmp_path: Path) -> None:
    slow, quick = Gate(), Gate()
    quick.open.set()
    runs = Worker.runs
    async with starting_warden(tmp_path, slow, quick) as (warden, stop, task):
        await asyncio.wait_for(quick.entering.wait(), 10)
        await asyncio.wait_for(slow.entering.wait(), 10)
        stop.set()
        assert await asyncio.wait_for(task, 10) == []
    assert slow.cancelled and not slow.left.is_set()
    assert quick.left.is_set(), "the companion that was up was left"
    assert not warden.ready.is_set()
    assert warden.supervisor is not None
    assert warden.supervisor.runner("worker").status.state == "stopped"
    assert Worker.runs == runs, "a daemon was started"


async def test_a_companion_that_fails_to_come_up_stops_warden_with_its_error(tmp_path: Path) -> None:
    @asynccontextmanager
    async def broken(warden: Warden) -> AsyncIterator[None]:
        raise RuntimeError("the demo Stash cannot start")
        yield

    bystander = Gate()
    async with starting_warden(tmp_path, bystander, broken) as (_, _, task):
        with pytest.raises(BaseExceptionGroup) as failure:
            await asyncio.wait_for(task, 10)
    assert failure.group_contains(RuntimeError, match="the demo Stash cannot start")
    assert bystander.cancelled
