"""Load: a thousand live clients, connection churn and a storm of commands, against a real Warden.

Warden runs in the test's process (tests/webharness.py), as it runs in production: one event
loop for the daemons, the hub, the store writer and the web server. The WebSocket clients run
in another process (tests/load_clients.py), so that reading a thousand sockets costs the server
nothing but what it costs in real use. The server's memory is this process's RSS, sampled while
the load runs. It includes what pytest loaded before, which is constant, so "bounded" is judged
by growth: after a warm-up, the second half of the samples may not rise above the first half
(beyond allocator noise), not by a figure in MiB. Warden in this process also lets the churn test
count what a leak would leave behind exactly: hub subscribers, per-client objects and tasks.

`make test` runs the short variants; `make soak` (`--soak`) the full sizes: 60 s of updates to
1,000 clients, and 10,000 connections made and dropped.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web

from bench.fanout import shares
from bench.fanout_clients import Address, SilentClient, raise_open_files_limit
from bench.fanout_server import NAMES, Load, Step, bench_warden, sampling_memory, vm_rss_mib
from supervisor import Daemon
from supervisor.hub import Subscription
from supervisor.models import DaemonState
from tests import load_clients
from tests.daemons_for_tests import Census, Worker
from tests.tally import TallyRecorder, unmatched
from tests.webharness import (
    api_session,
    bearer,
    call,
    config_text,
    eventually,
    metrics,
    running_warden,
    saved,
    until,
)
from web.ws import Connection

READERS = 1000
#: Reading a message costs a client process more than sending it costs Warden: one process for
#: all the readers would fall behind.
CLIENT_PROCESSES = 2
FINALS_TIMEOUT = 60.0  # for every client to hold every final state once the load stops
NOISE = 0.05  # RSS may wander this share of itself (allocator arenas, the sampler's own list)


# -- 1. a thousand clients, five daemons as fast as they can, one client that never reads ----------


class Loader:
    """Drives the bench daemons as fast as the event loop lets them, in 1 s steps, until stopped;
    `last` is each daemon's latest status message once the current step ends."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.steps = 0
        self.seconds = 0.0  # of load so far
        self.updates = 0
        self.last: dict[str, str] = {}
        self.stepped = asyncio.Event()
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            started = time.perf_counter()
            runs = await self.load.run(Step(self.steps + 1, None, 1.0))
            self.seconds += time.perf_counter() - started
            self.last = {name: run.last_text for name, run in zip(NAMES, runs, strict=True)}
            self.updates += sum(len(run.calls) for run in runs)
            self.steps += 1
            self.stepped.set()

    async def after(self, seconds: float) -> None:
        """Wait until the load has run for `seconds` more (to the end of a step)."""
        target = self.seconds + seconds
        while self.seconds < target:
            self.stepped.clear()
            await self.stepped.wait()


@pytest.mark.soak
@pytest.mark.timeout(400)
async def test_every_client_gets_every_final_state_and_one_that_never_reads_is_dropped(
    tmp_path: Path, soak: bool, tally: TallyRecorder
) -> None:
    seconds = 60 if soak else 6
    raise_open_files_limit()  # a socket for each client
    loader = Loader(Load())
    async with bench_warden(tmp_path, loader.load) as warden, api_session(warden) as session:
        assert warden.url is not None
        address = Address(warden.url + "ws", bearer(), [])
        silent = await asyncio.to_thread(SilentClient, address)  # blocking: it must not hold up the server
        loading = asyncio.create_task(loader.run())
        try:
            # Warm-up, while few clients let the loop turn fast: the hub's history of changes (kept for
            # clients that resume) fills up and drops its oldest, and the silent client's buffers fill.
            await until(warden, lambda: warden.hub.since(0) is None, timeout=60)
            following = [(address, share) for share in shares(READERS, CLIENT_PROCESSES)]
            async with load_clients.client_processes(load_clients.followers, *following) as clients:
                silent_still_open = (await metrics(session))["warden_websocket_closed_slow_total"] == 0
                async with sampling_memory(time.perf_counter()) as memory:
                    await loader.after(seconds)
                    await eventually(lambda: silent_dropped(session), timeout=120, poll=0.5)
                loader.stopping = True
                await loading
                finals = loader.last
                assert {name: warden.hub.states[name].message for name in NAMES} == finals
                answers = await clients.ask(("finals", finals, FINALS_TIMEOUT), FINALS_TIMEOUT + 30)
                missing, closed = (sum(counts) for counts in zip(*answers, strict=True))
        finally:
            loader.stopping = True
            await asyncio.to_thread(silent.close)
            await loading
    first, second = halves(memory)
    growth = max(second) - max(first)
    when = "while" if silent_still_open else "as"
    tally.record(
        "load",
        f"{READERS:,} WebSocket clients while 5 daemons update as fast as they can ({loader.updates:,} updates "
        f"in {loader.seconds:.0f} s), one more client that never reads",
        tries=READERS * len(NAMES),
        outcome=f"every client got every daemon's final state; the silent client was closed (1013) and cut off "
        f"{when} the others connected, {closed} of them closed; RSS {max(first):.0f} MiB, {growth:+.1f} MiB "
        f"in the second half",
        lost=missing,
    )
    assert missing == 0, f"{missing} (client, daemon) pairs never got the final state"
    assert closed == 0, "no reading client is closed"
    assert growth <= NOISE * max(first), f"RSS kept growing after the warm-up: {memory}"


async def silent_dropped(session: aiohttp.ClientSession) -> bool:
    """The client that never reads was closed for it, and its connection is gone; every reader's is served."""
    served = await metrics(session)
    return served["warden_websocket_closed_slow_total"] == 1 and served["warden_websocket_clients"] == READERS


def halves(samples: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    values = [rss for _, rss in samples]
    assert len(values) >= 4, f"too few memory samples: {samples}"
    middle = len(values) // 2
    return values[:middle], values[middle:]


# -- 2. connection churn ----------------------------------------------------------------------------

PER_CLIENT = (Connection, Subscription, web.WebSocketResponse)


def footprint() -> dict[str, int]:
    """What a client that left could leave behind: per-client objects and tasks. A subscription
    the hub still holds is alive, so it counts among the Subscription objects."""
    gc.collect()
    alive = Counter(type(thing).__name__ for thing in gc.get_objects() if isinstance(thing, PER_CLIENT))
    return {**{kind.__name__: alive[kind.__name__] for kind in PER_CLIENT}, "tasks": len(asyncio.all_tasks())}


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_connection_churn_returns_to_the_baseline(tmp_path: Path, soak: bool, tally: TallyRecorder) -> None:
    total = 10_000 if soak else 1_200
    warm_up = total // 2  # the same again after it: RSS may settle at a higher level once
    yaml = config_text("  worker:\n    interval: 0.05\n")  # a status every 50 ms: something to send as clients go
    async with running_warden(tmp_path, [Worker], yaml=yaml) as warden, api_session(warden) as session:
        assert warden.url is not None
        address = Address(warden.url + "ws", bearer(), [])
        async with load_clients.client_processes(load_clients.churn, (address,)) as churner:
            await metrics(session)  # the session's connection (and its server task) exists from here on
            baseline = footprint()
            [failed] = await churner.ask(("churn", warm_up), 600)
            await settled(session, baseline)
            rss_warm = vm_rss_mib()
            started = time.perf_counter()
            [failed_after] = await churner.ask(("churn", total - warm_up), 600)
            failed += failed_after
            seconds = time.perf_counter() - started
            await settled(session, baseline)
            rss_after = vm_rss_mib()
            after = footprint()
            accepted = (await metrics(session))["warden_websocket_connections_total"]
    left = {what: after[what] - baseline[what] for what in after if after[what] != baseline[what]}
    tally.record(
        "load",
        f"WebSocket connection churn: {total:,} connects; a third closed properly, a third dropped without a "
        "close, a third dropped as the server sends its snapshot",
        tries=total,
        outcome=f"{accepted:.0f} served ({total - warm_up:,} in {seconds:.0f} s); subscribers, per-client "
        f"objects and tasks back to the baseline; RSS {rss_warm:.0f} -> {rss_after:.0f} MiB",
        lost=failed + sum(abs(n) for n in left.values()),
    )
    assert failed == 0, f"{failed} connections failed"
    assert accepted == total
    assert not left, f"left behind after the churn: {left}"
    assert rss_after - rss_warm <= NOISE * rss_warm


async def settled(session: aiohttp.ClientSession, baseline: dict[str, int]) -> None:
    """Wait until no client is served and every per-client piece has gone; what is still there
    after 30 s is a leak, which the test reports."""

    async def back() -> bool:
        served = (await metrics(session))["warden_websocket_clients"]
        return served == 0 and footprint() == baseline

    with suppress(TimeoutError):
        await eventually(back, timeout=30, poll=0.2)


# -- 3. a storm of start/stop/restart requests ------------------------------------------------------


class Counted(Daemon):
    """Counts its live instances."""

    instances: ClassVar[Census]

    async def run(self) -> None:
        with self.instances.one():
            await self.update_status("working")
            await self.sleep(3600, "next round")


COUNTED: list[type[Counted]] = [
    type(f"Counted{i}", (Counted,), {"name": f"counted_{i}", "title": f"Counted {i}", "instances": Census()})
    for i in range(5)
]
ACTIONS = ("start", "stop", "restart")
SETTLED = {"start": DaemonState.RUNNING, "restart": DaemonState.RUNNING, "stop": DaemonState.STOPPED}


async def test_a_storm_of_commands_ends_in_one_recorded_consistent_state(tmp_path: Path, tally: TallyRecorder) -> None:
    raise_open_files_limit()  # the requests' sockets and the server's
    for cls in COUNTED:
        cls.instances = Census()
    rng = random.Random(7)
    # One in twenty is a start-all, stop-all or restart-all.
    targets = [cls.name for cls in COUNTED] * 4 + [None]
    storm = [(rng.choice(targets), rng.choice(ACTIONS)) for _ in range(1000)]
    last = {cls.name: rng.choice(ACTIONS) for cls in COUNTED}  # sent once the storm has been answered
    expected = {name: SETTLED[action] for name, action in last.items()}
    sections = "".join(f"  {cls.name}:\n    auto_start: false\n" for cls in COUNTED)
    async with (
        running_warden(tmp_path, list(COUNTED), yaml=config_text(sections)) as warden,
        api_session(warden) as session,
        session.ws_connect("ws") as live,
    ):
        assert warden.supervisor is not None
        broadcast: list[dict[str, Any]] = []
        listening = asyncio.create_task(listen(live, broadcast))
        connector = aiohttp.TCPConnector(limit=0)  # every request at once, each on its own connection
        async with aiohttp.ClientSession(base_url=warden.url, headers=bearer(), connector=connector) as requests:
            statuses = Counter(await asyncio.gather(*(post(requests, name, action) for name, action in storm)))
            statuses += Counter(await asyncio.gather(*(post(requests, name, action) for name, action in last.items())))
        await until(warden, lambda: all(warden.supervisor.runner(n).status.state is s for n, s in expected.items()))
        await saved(warden)
        on_disk = await all_events(session)
        listed = {d["name"]: d["state"] for d in (await call(session, "GET", "api/daemons"))["daemons"]}
        stored = {name: row.status.state for name, row in (await warden.store.states()).items()}

        async def all_broadcast() -> bool:
            return len(transitions(broadcast)) >= len(on_disk)

        await eventually(all_broadcast)
        instances = {cls.name: (cls.instances.now, cls.instances.most) for cls in COUNTED}
        listening.cancel()
    sent = transitions(broadcast)
    broken = [name for name in expected if not chained(on_disk, name, expected[name])]
    unrecorded = unmatched(sent, on_disk)
    shown_only = {name: shown_unrecorded(broadcast, on_disk, name) for name in expected}
    tally.record(
        "load",
        "1,000 concurrent start/stop/restart API calls across 5 daemons (one in 20 to all), then one known "
        "command each",
        tries=len(storm),
        outcome=f"answers {dict(statuses)}; states as last commanded in the API, memory and database; at most "
        f"one instance each; {len(on_disk)} transitions on disk, each broadcast, chained without a hole, "
        "every state shown on the way among them",
        lost=unrecorded + len(broken) + sum(shown_only.values()) + sum(n != 200 for n in statuses.elements()),
    )
    assert statuses == Counter({200: len(storm) + len(last)})
    assert listed == stored == {name: str(state) for name, state in expected.items()}
    assert instances == {name: (int(state is DaemonState.RUNNING), 1) for name, state in expected.items()}
    assert not any(m["type"] == "gap" for m in broadcast), "the listening client fell behind"
    assert sent == on_disk, "the transitions broadcast are the transitions on disk"
    assert not broken, f"transitions missing between recorded ones: {broken}"
    assert not any(shown_only.values()), f"states shown to clients that no recorded transition reached: {shown_only}"


async def post(session: aiohttp.ClientSession, name: str | None, action: str) -> int:
    """A command to one daemon, or to all of them (name None)."""
    async with session.post(f"api/{action}-all" if name is None else f"api/daemons/{name}/{action}") as response:
        await response.read()
        return response.status


async def listen(live: aiohttp.ClientWebSocketResponse, messages: list[dict[str, Any]]) -> None:
    async for message in live:
        messages.append(message.json())


Transition = tuple[str, str, str, str, str, float]


def transitions(messages: list[dict[str, Any]]) -> list[Transition]:
    return [key(m["event"]) for m in messages if m["type"] == "event" and m["event"]["kind"] == "transition"]


def key(event: dict[str, Any]) -> Transition:
    return (event["daemon"], event["actor"], event["from_state"], event["to_state"], event["message"], event["at"])


async def all_events(session: aiohttp.ClientSession) -> list[Transition]:
    """Every transition in the database, oldest first (the API pages back from the newest)."""
    events: list[dict[str, Any]] = []
    query = "api/events?limit=1000"
    while page := (await call(session, "GET", query))["events"]:
        events += page
        query = f"api/events?limit=1000&before={page[-1]['id']}"
    return [key(e) for e in reversed(events) if e["kind"] == "transition"]


def chained(events: list[Transition], name: str, final: DaemonState) -> bool:
    """The daemon's transitions start from stopped, each from where the previous one ended, and end at `final`."""
    state = str(DaemonState.STOPPED)
    for daemon, _, before, after, _, _ in events:
        if daemon == name:
            if before != state:
                return False
            state = after
    return state == str(final)


def shown_unrecorded(messages: list[dict[str, Any]], events: list[Transition], name: str) -> int:
    """How many states the clients were shown for the daemon (in `daemon` messages, which may skip
    states a client did not get in time) that its recorded transitions do not pass through, in order."""
    chain = [str(DaemonState.STOPPED)] + [after for daemon, _, _, after, _, _ in events if daemon == name]
    position, missing = 0, 0
    for message in messages:
        if message["type"] == "daemon" and message["daemon"]["name"] == name:
            try:
                position = chain.index(message["daemon"]["state"], position)
            except ValueError:
                missing += 1
    return missing
