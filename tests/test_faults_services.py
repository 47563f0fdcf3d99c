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
from aiohttp import web

from daemons.stash.double import StashDouble
from daemons.stash_sync import StashSync
from supervisor.models import DaemonState, DaemonStatus
from tests.harness import Kernel, make_settings, running_kernel
from tests.tally import TallyRecorder
from tests.test_stash_sync import expected, library_of

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


def retries(shown: list[str]) -> list[str]:
    """The retry delays announced, in order ("0.05", "0.1", ...)."""
    return [message.rsplit("Retrying in ", 1)[1].removesuffix(" s.") for message in shown if "Retrying in " in message]


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
    the daemon is woken and must show the problem and retry at least twice with growing delays,
    then the fault ends and the daemon must sync by itself with no scene missing."""
    async with syncing(tmp_path, url) as kernel:
        await watch(kernel, "stash_sync", synced)
        for number, fault in enumerate(faults):
            double.add_scene(f"/media/added-during-fault-{number}.mp4", title=fault.case)
            await fault.begin()
            kernel.supervisor.wake("stash_sync")
            last = f"Retrying in {DELAYS[fault.tries - 1]} s."
            shown = (await watch(kernel, "stash_sync", lambda status, last=last: last in status.message))[
                1:
            ]  # after the wake
            state = kernel.state("stash_sync")
            await fault.end()
            after = await watch(kernel, "stash_sync", synced)
            in_library = await library_of(tmp_path)
            lost = len(set(expected(double)) - set(in_library))
            problems = [message for message in shown if "Retrying in" in message]
            tally.record(
                "stash",
                fault.case,
                tries=len(problems),
                outcome="problem shown, retried with backoff, synced by itself once fixed",
                lost=lost,
            )
            assert problems[0].startswith(fault.shown.format(url=url)), problems
            assert retries(shown) == DELAYS[: fault.tries]
            assert not [message for message in shown if message.startswith(("No scenes changed", "Sync completed"))]
            assert state is DaemonState.RUNNING
            assert after[-1].startswith("Sync completed for ")
            assert in_library == expected(double)
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
