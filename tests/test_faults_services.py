"""Stash and qBittorrent faults, seen from the daemons: what the status line says, that the
daemon keeps retrying with growing delays (never "nothing to do" when it could not ask), and
that it recovers by itself once the service is back, with nothing lost and nothing done twice.

Stash is the double (down, stalled past the timeout, refusing the key, GraphQL errors, and
answers broken on their way by a small proxy); qBittorrent is a real qbittorrent-nox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemons.qbittorrent.client import QbittorrentClient, Torrent
from daemons.qbittorrent.nox import QbittorrentNox
from daemons.stash.double import StashDouble
from daemons.stash.library import ASSETS
from daemons.stash_generation import StashGeneration
from daemons.stash_sync import StashSync
from supervisor.jobs import JobStatus
from supervisor.models import DaemonState, DaemonStatus
from tests.harness import Kernel, make_settings, running_kernel
from tests.qbtfixtures import nox, torrent_info, until_at_rest, webui_session
from tests.tally import TallyRecorder, unmatched
from tests.test_download_processor import NAME, World, add, processing, tags_of, video, world
from tests.test_stash_generation import KEY as GENERATION_KEY
from tests.test_stash_generation import held_generate_job, scan_in_stash
from tests.test_stash_sync import expected, library_of
from tests.webharness import eventually

__all__ = ["nox"]  # the fixture, used by name

KEY = "faults-test-key-0123"
#: Long enough for stashapi's connection (a schema introspection) on a loaded machine; only a stalled call reaches it.
TIMEOUT = 2.0
#: The retry delays of the daemons below (backoff_initial 0.05, doubled, capped at backoff_max 0.2).
DELAYS = ["0.05", "0.1", "0.2"]


async def watch(kernel: Kernel, name: str, done: Callable[[DaemonStatus], bool], timeout: float = 30) -> list[str]:
    """Wait until `done(status)` holds; every distinct status message shown meanwhile, in order."""
    shown: list[str] = []

    def check() -> bool:
        status = kernel.supervisor.runner(name).status
        if not shown or shown[-1] != status.message:
            shown.append(status.message)
        return done(status)

    await kernel.until(check, timeout)
    return shown


def problems(shown: list[str]) -> list[str]:
    """The messages that announce a retry: a problem the daemon rides out."""
    return [message for message in shown if "Retrying in " in message]


def retries(shown: list[str]) -> list[str]:
    """The retry delays announced, in order ("0.05", "0.1", ...)."""
    return [message.rsplit("Retrying in ", 1)[1].removesuffix(" s.") for message in problems(shown)]


def retrying_in(delay: str) -> Callable[[DaemonStatus], bool]:
    """A status announcing a retry after `delay` seconds."""
    return lambda status: f"Retrying in {delay} s." in status.message


@asynccontextmanager
async def syncing(tmp_path: Path, url: str) -> AsyncIterator[Kernel]:
    """stash_sync on a kernel, talking to Stash at `url`, with short retry delays."""
    settings = make_settings(
        [StashSync],
        tmp_path,
        stash={"url": url, "api_key": KEY, "timeout": TIMEOUT},
        daemons={"stash_sync": {"interval": 3600, "overlap": 10, "backoff_initial": 0.05, "backoff_max": 0.2}},
    )
    async with running_kernel([StashSync], tmp_path, settings=settings) as kernel:
        await kernel.supervisor.start("stash_sync")
        yield kernel


def synced(status: DaemonStatus) -> bool:
    return status.message.startswith("Sync completed") and status.sleeping_until is not None


@dataclass(frozen=True)
class Fault:
    case: str  # for the reliability table
    shown: str  # the start of the problem the status line must show ({url} is Stash's)
    begin: Callable[[], Awaitable[None]]
    end: Callable[[], Awaitable[None]]
    tries: int = 3  # failed attempts to see before the fault ends (each one of a stall costs the timeout)


async def sync_through_faults(
    tmp_path: Path, double: StashDouble, url: str, faults: list[Fault], tally: TallyRecorder
) -> None:
    """One stash_sync run through each fault in turn: a scene is added in Stash, the fault begins,
    the daemon is woken and must show the problem and retry `fault.tries` times with growing delays,
    then the fault ends and the daemon must sync by itself with no scene missing."""
    async with syncing(tmp_path, url) as kernel:
        await watch(kernel, "stash_sync", synced)
        for number, fault in enumerate(faults):
            double.add_scene(f"/media/added-during-fault-{number}.mp4", title=fault.case)
            await fault.begin()
            kernel.supervisor.wake("stash_sync")
            shown = await watch(kernel, "stash_sync", retrying_in(DELAYS[fault.tries - 1]))
            shown = shown[1:]  # what came after the wake
            state = kernel.state("stash_sync")
            await fault.end()
            after = await watch(kernel, "stash_sync", synced)
            in_library = await library_of(tmp_path)
            wanted = expected(double)
            # scenes missing or stale, and scenes kept that Stash no longer has
            lost = sum(in_library.get(id_) != scene for id_, scene in wanted.items()) + len(in_library.keys() - wanted)
            announced = problems(shown)
            tally.record(
                "stash",
                fault.case,
                tries=len(announced),
                outcome="problem shown, retried with backoff, synced by itself once fixed",
                lost=lost,
            )
            assert announced[0].startswith(fault.shown.format(url=url)), announced
            assert retries(shown) == DELAYS[: fault.tries]
            assert not [message for message in shown if message.startswith(("No scenes changed", "Sync completed"))]
            assert state is DaemonState.RUNNING
            assert after[-1].startswith("Sync completed for ")
            assert in_library == wanted
            assert lost == 0


async def test_stash_down_stalled_refusing_the_key_or_failing_a_query_is_shown_and_ridden_out(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    async with StashDouble(api_key=KEY) as double:
        double.add_synthetic_scenes(20, seed=1)
        released = asyncio.Event()

        async def stall(root_field: str, variables: dict[str, Any]) -> None:
            if root_field == "findScenes":
                await released.wait()

        async def begin_stall() -> None:
            released.clear()
            double.before = stall

        async def end_stall() -> None:
            double.before = None
            released.set()

        async def wrong_key() -> None:
            double.api_key = "the-key-stash-now-wants"

        async def right_key() -> None:
            double.api_key = KEY

        async def failing() -> None:
            double.fail("findScenes", "sql: database disk image is malformed", times=None)

        async def healed() -> None:
            double.clear_failures()

        faults = [
            Fault("Stash down", "Cannot reach Stash at {url}: Connection refused", double.down, double.up),
            Fault(
                "Stash slower than stash.timeout",
                f"Stash at {{url}} did not answer within {TIMEOUT:g} s",
                begin_stall,
                end_stall,
                tries=1,
            ),
            Fault("Stash refuses the API key", "Stash at {url} refused the API key", wrong_key, right_key),
            Fault("Stash answers a GraphQL error", "Stash refused the request", failing, healed),
        ]
        await sync_through_faults(tmp_path, double, double.url, faults, tally)


Breakage = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


async def cut_off(request: web.Request, answer: bytes) -> web.StreamResponse:
    """Half the answer, then the connection closes (Content-Length promised all of it)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(answer)
    await response.prepare(request)
    await response.write(answer[: len(answer) // 2])
    assert request.transport is not None
    request.transport.close()
    return response


async def cut_json(request: web.Request, answer: bytes) -> web.StreamResponse:
    return web.Response(body=answer[: len(answer) // 2], content_type="application/json")


async def html_page(request: web.Request, answer: bytes) -> web.StreamResponse:
    return web.Response(text="<html><body><h1>Please log in</h1></body></html>", content_type="text/html")


async def null_data(request: web.Request, answer: bytes) -> web.StreamResponse:
    return web.json_response({"data": None})


class Breaker:
    """A proxy in front of the Stash double that breaks its answers to findScenes with `breakage`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.breakage: Breakage | None = None
        self.url = ""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Breaker]:
        app = web.Application()
        app.router.add_post("/graphql", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        async with aiohttp.ClientSession() as self._session:
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                yield self
            finally:
                await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: value for name, value in request.headers.items() if name in ("ApiKey", "Content-Type")}
        async with self._session.post(f"{self.upstream}/graphql", data=body, headers=headers) as reply:
            answer = await reply.read()
            status, content_type = reply.status, reply.content_type
        if self.breakage is not None and b"findScenes" in body:
            return await self.breakage(request, answer)
        return web.Response(body=answer, status=status, content_type=content_type)


CANNOT_READ = "Stash at {url} sent an answer Warden cannot read"


async def test_broken_answers_from_stash_are_shown_and_ridden_out(tmp_path: Path, tally: TallyRecorder) -> None:
    async with StashDouble(api_key=KEY) as double, Breaker(double.url).running() as breaker:
        double.add_synthetic_scenes(20, seed=2)

        def breaking(case: str, shown: str, breakage: Breakage) -> Fault:
            async def begin() -> None:
                breaker.breakage = breakage

            async def end() -> None:
                breaker.breakage = None

            return Fault(case, shown, begin, end)

        faults = [
            breaking("Stash's answer cut off (connection closed)", "Stash at {url} broke off its answer", cut_off),
            breaking(
                "Stash's JSON cut mid-way", f"{CANNOT_READ}: its JSON is cut short or malformed (HTTP 200)", cut_json
            ),
            breaking(
                "an HTML page instead of Stash's JSON",
                f"{CANNOT_READ}: text/html instead of JSON (HTTP 200)",
                html_page,
            ),
            breaking(
                'a 200 answer with {"data": null}', f"{CANNOT_READ}: an answer without data (HTTP 200)", null_data
            ),
        ]
        await sync_through_faults(tmp_path, double, breaker.url, faults, tally)


async def test_a_stash_job_that_never_ends_and_ignores_stop_is_waited_for_visibly_and_boundedly(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    name = StashGeneration.name
    async with StashDouble(api_key=GENERATION_KEY, step_delay=0.001) as double:
        double.jobs.hold("stop")  # Stash takes stopJob, and its job stays STOPPING
        config = {"stop_confirm_timeout": 1, "backoff_initial": 0.05, "backoff_max": 0.2, "stop_timeout": 5}
        async with held_generate_job(tmp_path, double, scenes=5, **config) as (kernel, job):
            running = kernel.supervisor.runner(name).status.snapshot()
            await scan_in_stash(double, ["/media/new"])
            await watch(kernel, name, lambda status: job.status is JobStatus.CANCELLING)
            waiting = kernel.supervisor.runner(name).status.snapshot()
            job_waiting = job.message
            stopped = await kernel.supervisor.stop(name)  # while the job waits for Stash to confirm
            await kernel.until(lambda: job.status is not JobStatus.CANCELLING, timeout=10)
            given_up = (job.status, job.message)
            await kernel.supervisor.start(name)
            busy = await watch(kernel, name, lambda status: status.message.startswith("Stash is busy"))
            double.jobs.release("stop")
            double.jobs.release("finish")
            done = await watch(kernel, name, lambda status: status.message.startswith("Generation completed"))
        lost = sum(scene.generated != frozenset(ASSETS) for scene in double.library.scenes.values())
        tally.record(
            "stash",
            "a Stash job that never ends, and ignores stopJob",
            tries=double.calls["stopJob"],
            outcome="job shown running; stop waited for visibly, given up after stop_confirm_timeout; "
            "daemon stopped at once; generation redone once Stash let go",
            lost=lost,
        )
    assert running.message.startswith("Generating covers, previews, sprites, phashes for 5 scenes")
    assert running.job_id == job.id and running.state is DaemonState.RUNNING
    assert waiting.message == "Stopping generation: 1 scan job(s) waiting in Stash" and waiting.job_id == job.id
    assert job_waiting == "stop requested; waiting for confirmation"
    assert stopped.state is DaemonState.STOPPED
    assert [event.kind for event in kernel.events if event.kind == "stop-timeout"] == []
    assert given_up == (JobStatus.FAILED, "did not stop within 1 s of the stop request")
    assert busy[-1].startswith("Stash is busy (Generating... stopping; Scanning... ready)")
    assert done[-1] == "Generation completed for 5 scenes"
    assert double.calls["stopJob"] == 1
    assert lost == 0


async def at_rest(state: World, infohash: str) -> None:
    """Wait until qBittorrent lists the torrent as completed again (after a start it checks its resume data first)."""
    client = state.client()
    try:
        await until_at_rest(client, infohash)
    finally:
        client.close()


async def test_qbittorrent_down_refusing_the_password_and_forgetting_the_session_is_ridden_out(
    tmp_path: Path, nox: QbittorrentNox, tally: TallyRecorder
) -> None:
    downloads = tmp_path / "downloads"
    async with world(tmp_path, nox) as state:
        first = await add(state, video(downloads / "Kilo.mp4", 1.0))
        await nox.stop()
        wrong = "not-the-password-5678"
        async with processing(state, state.settings(password=wrong, backoff_max=0.2)) as kernel:
            # Down: nothing answers at the URL.
            down = await watch(kernel, NAME, retrying_in("0.2"))
            # Up, but refusing the password Warden has.
            await nox.start()
            refused = await watch(kernel, NAME, lambda status: "refused the user name" in status.message)
            refused += await watch(kernel, NAME, retrying_in("0.2"))
            untouched = (await tags_of(state, first), state.placed())
            await at_rest(state, first)
            # The user puts the right password into Warden's settings: the daemon restarts with it.
            await kernel.supervisor.apply_settings(state.settings(backoff_max=0.2))
            after_fix = await watch(kernel, NAME, lambda status: status.message.startswith("Processed"))
            # qBittorrent restarts, so Warden's session cookie means nothing there any more.
            await nox.restart()
            second = await add(state, video(downloads / "Lima.mp4", 1.2))
            await at_rest(state, first)
            asleep_until = kernel.supervisor.runner(NAME).status.sleeping_until or 0
            kernel.supervisor.wake(NAME)
            renewed = (await watch(kernel, NAME, lambda status: (status.sleeping_until or 0) > asleep_until))[1:]
        tags = await tags_of(state, first, second)
        lost = sum(tag != frozenset({"synced"}) for tag in tags) + unmatched(["Kilo.mp4", "Lima.mp4"], state.placed())
        for case, shown, outcome in [
            ("qBittorrent down", down, "problem shown, retried with backoff"),
            (
                "qBittorrent refuses the password",
                refused,
                "problem shown (no password in it), retried; processed once the password was set",
            ),
            (
                "qBittorrent session expired (qBittorrent restarted)",
                renewed,
                "logged in again by itself, no problem shown",
            ),
        ]:
            tally.record("qbittorrent", case, tries=len(retries(shown)) or 1, outcome=outcome, lost=lost)
    unreachable = f"qBittorrent not reachable at {nox.url}"
    assert problems(down)[0].startswith(unreachable), down
    assert retries(down)[-3:] == DELAYS
    assert "qBittorrent at" in refused[-1] and "refused the user name or password" in refused[-1]
    assert all(wrong not in message for message in refused)
    assert untouched == ([frozenset()], [])
    assert after_fix[-1] == "Processed 1 download: 1 linked"
    assert problems(renewed) == []
    assert renewed[-1] == "Processed 1 download: 1 linked"
    assert tags == [frozenset({"synced"})] * 2
    assert state.placed() == ["Kilo.mp4", "Lima.mp4"]
    assert lost == 0


async def test_a_torrent_removed_between_listing_and_processing_is_passed_over(
    tmp_path: Path, nox: QbittorrentNox, tally: TallyRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads = tmp_path / "downloads"
    async with world(tmp_path, nox) as state:
        kept = await add(state, video(downloads / "Mike.mp4", 1.0))
        removed = await add(state, video(downloads / "November.mp4", 1.2))
        listed = QbittorrentClient.completed
        removals = 0

        async def then_removed(client: QbittorrentClient, category: str | None) -> list[Torrent]:
            nonlocal removals
            found = await listed(client, category)
            if not removals:  # as a person would in qBittorrent's own page, files and all
                removals += 1
                async with webui_session(nox) as session:
                    form = {"hashes": removed, "deleteFiles": "true"}
                    async with session.post("/api/v2/torrents/delete", data=form) as response:
                        assert response.status == 200, await response.text()
                    clip = downloads / "November.mp4"
                    await eventually(lambda: _gone(session, removed, clip), timeout=10, poll=0.05)
            return found

        monkeypatch.setattr(QbittorrentClient, "completed", then_removed)
        async with processing(state) as kernel:
            shown = await watch(kernel, NAME, lambda status: status.message.startswith("Processed"), timeout=60)
            jobs = [(job.status, job.error) for job in kernel.jobs.values() if job.type == "process_downloads"]
        tags = await tags_of(state, kept)
        lost = (tags != [frozenset({"synced"})]) + unmatched(["Mike.mp4"], state.placed())
        tally.record(
            "qbittorrent",
            "a torrent removed (files and all) between listing and processing",
            tries=removals,
            outcome="passed over and named in the summary, no problem shown; the other placed, scanned, tagged",
            lost=lost,
        )
    assert problems(shown) == []
    assert shown[-1] == "Processed 2 downloads: 1 linked; 1 removed from qBittorrent meanwhile (first: November.mp4)"
    assert jobs == [(JobStatus.COMPLETED, None)]
    assert state.placed() == ["Mike.mp4"], "nothing of the removed torrent is placed"
    assert state.scans == [[str(state.library / "Mike.mp4")]]
    assert lost == 0


async def _gone(session: aiohttp.ClientSession, infohash: str, files: Path) -> bool:
    return await torrent_info(session, infohash) is None and not await asyncio.to_thread(files.exists)


async def test_a_stash_scan_that_never_ends_is_shown_and_a_stop_ends_the_wait(
    tmp_path: Path, nox: QbittorrentNox, tally: TallyRecorder
) -> None:
    async with world(tmp_path, nox) as state:
        infohash = await add(state, video(tmp_path / "downloads" / "Oscar.mp4", 1.0))
        state.double.jobs.hold("finish")  # Stash's scan runs and never finishes
        async with processing(state) as kernel:
            await watch(kernel, NAME, lambda status: status.message.startswith("Waiting for Stash to scan"), timeout=60)
            waiting = kernel.supervisor.runner(NAME).status.snapshot()
            stopped = await kernel.supervisor.stop(NAME)
            assert waiting.job_id is not None
            scan = kernel.supervisor.jobs.get(waiting.job_id)
            assert scan is not None and scan.type == "stash_scan"
            await kernel.until(lambda: scan.status is JobStatus.CANCELLED, timeout=10)
            untagged = await tags_of(state, infohash)
            state.double.jobs.release("finish")
            await kernel.supervisor.start(NAME)
            done = await watch(kernel, NAME, lambda status: status.message.startswith("Processed"), timeout=60)
        tags = await tags_of(state, infohash)
        lost = (tags != [frozenset({"synced"})]) + unmatched(["Oscar.mp4"], state.placed())
        tally.record(
            "stash",
            "a Stash scan that never ends (download_processor waiting)",
            tries=len(state.scans),
            outcome="the wait shown with its job; stop ends it at once and stops the scan in Stash; "
            "the next run scans again and tags",
            lost=lost,
        )
    assert waiting.message == "Waiting for Stash to scan 1 new files" and waiting.job_id == scan.id
    assert stopped.state is DaemonState.STOPPED
    assert [event.kind for event in kernel.events if event.kind == "stop-timeout"] == []
    assert untagged == [frozenset()], "not tagged while its scan had not finished"
    assert done[-1] == "Processed 1 download: 1 present"
    assert state.scans == [[str(state.library / "Oscar.mp4")]] * 2
    assert lost == 0
