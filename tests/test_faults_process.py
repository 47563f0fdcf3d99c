"""Warden as a real process under faults: SIGKILL at random points of a busy run, SIGTERM under load.

The busy run: daemons updating their status, a daemon finishing short jobs with results, and
plan_applier applying plans to a Stash double that runs in the test process and so survives
every kill. Each kill comes at a random Stash request (a seeded random, so a failure replays):
Stash carries the request out, Warden never learns. After each kill the database is intact,
the next start reconciles every row the killed run left active, no finished job's result is
lost, and Stash holds each change recorded as applied, never twice.

SIGTERM under load: ten daemons updating as fast as they can and WebSocket clients connected;
Warden exits 0 within the stop timeouts, every client got every daemon's final state before
its socket closed cleanly, and the final states are on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemons.plan_applier import PlanApplier
from daemons.plans.store import Change, ChangeStatus, PlanStatus, PlanStore, ProposedChange
from daemons.stash.double import StashDouble
from supervisor.models import ACTIVE_STATES, DaemonState
from tests.tally import TallyRecorder
from tests.test_plan_applier import KEY, marker, markers_of, stored_plan, tag, tag_names
from tests.test_process import (
    LIFECYCLE,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    WardenProcess,
    assert_intact,
    daemon_events,
    install_plugin,
    interrupted,
    query,
    running_warden,
    states,
    states_if_readable,
    write_config,
)
from tests.webharness import eventually
from web.client import Client

SEED = 20_240_611
SCENES = 10
#: A kill comes at one of the first this many Stash requests after the start checks (a plan makes about 70).
KILL_WITHIN = 60
#: Rows in these states at a kill had a daemon task: the next start must record them interrupted.
LEFT_ACTIVE = {str(state) for state in ACTIVE_STATES | {DaemonState.BACKOFF}}
INTERRUPTED_JOB = "interrupted: Warden stopped unexpectedly"
BUSY = ("spin_a", "sleeper", "finisher")
LOAD = (*(f"spin_{i}" for i in range(1, 9)), "spin_a", "sleeper")
TOKEN = "process-faults-token-0123456789"
CLIENTS = 10


def marked(tmp_path: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Config sections for spinners and sleepers: each writes its marker file when its cleanup runs."""
    return {name: {"marker": str(tmp_path / f"{name}.cleaned"), "stop_timeout": STOP_TIMEOUT} for name in names}


def setting(config: Path, section: str, value: dict[str, Any]) -> Path:
    """Set one section of a config file written by write_config (JSON, which is YAML)."""
    settings = json.loads(config.read_text())
    settings[section] = value
    config.write_text(json.dumps(settings))
    return config


async def logged(warden: WardenProcess, event: str) -> dict[str, Any]:
    """The first log line with `event`, polled without blocking the loop (the Stash double answers on it)."""
    found: list[dict[str, Any]] = []

    async def written() -> bool:
        assert warden.process.poll() is None, f"Warden exited before {event!r}; log:\n{warden.tail()}"
        found[:] = [line for line in warden.log() if line.get("event") == event][:1]
        return bool(found)

    await eventually(written, timeout=STARTUP_TIMEOUT)
    return found[0]


@dataclass
class RandomKill:
    """The Stash double's hook: holds every request until `armed`, then SIGKILLs Warden at the `at`-th (None: never)."""

    pid: int
    at: int | None
    armed: asyncio.Event = field(default_factory=asyncio.Event)
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0

    async def __call__(self, root_field: str, variables: dict[str, Any]) -> None:
        await self.armed.wait()
        self.requests += 1
        if self.requests == self.at:
            os.kill(self.pid, signal.SIGKILL)  # Stash still carries this request out; Warden never learns it did
            self.killed.set()


def cycle_changes(cycle: int, scenes: list[str]) -> list[ProposedChange]:
    """The plan of one cycle: a tag of its own and two markers at times of its own on every scene."""
    return [
        change
        for scene in scenes
        for change in (tag(scene, f"Cycle {cycle}"), marker(scene, cycle * 10 + 2.0), marker(scene, cycle * 10 + 6.0))
    ]


def times_in_stash(double: StashDouble, change: Change) -> int:
    """How often Stash holds the change: its tag on the scene (0 or 1), or the markers at its time."""
    if change.field == "tags":
        return int(change.value in tag_names(double, change.scene_id))
    return markers_of(double)[(change.scene_id, float(change.value["seconds"]), change.value["primary_tag"])]


async def all_changes(data: Path) -> list[Change]:
    store = await PlanStore.open(data / "plans.db")
    try:
        return [change for plan in await store.plans() for change in await store.changes(plan.id)]
    finally:
        await store.close()


async def stash_ledger(data: Path, double: StashDouble) -> tuple[int, int]:
    """(changes recorded applied that Stash lacks, changes or tags Stash holds more than once)."""
    changes = await all_changes(data)
    lacking = sum(1 for c in changes if c.status is ChangeStatus.APPLIED and times_in_stash(double, c) == 0)
    twice = sum(max(0, times_in_stash(double, c) - 1) for c in changes)
    twice += sum(n - 1 for n in Counter(found.name for found in double.library.tags.values()).values())
    return lacking, twice


def job_rows(db: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """Every job: id -> (status, result, error)."""
    return {row[0]: row[1:] for row in query(db, "SELECT id, status, result, error FROM jobs")}


def results_lost(db: Path, completed: dict[str, str | None]) -> int:
    """Jobs once completed that are no longer completed with the same result."""
    now = job_rows(db)
    return sum(1 for job, result in completed.items() if now.get(job, (None, None, None))[:2] != ("completed", result))


async def reconciled(warden: WardenProcess, db: Path, left: dict[str, tuple[str, str]]) -> None:
    """Wait until the start has recorded every row `left` active (daemon -> (state, boot)) as interrupted."""

    async def recorded() -> bool:
        assert warden.process.poll() is None, f"Warden exited before reconciling; log:\n{warden.tail()}"
        return all(
            interrupted(db, boot).get(name, ())[:2] == (state, "stopped") for name, (state, boot) in left.items()
        )

    await eventually(recorded, timeout=STARTUP_TIMEOUT, poll=0.05)


async def plans_finished(data: Path) -> bool:
    store = await PlanStore.open(data / "plans.db")
    try:
        return not await store.plans([PlanStatus.APPROVED, PlanStatus.APPLYING])
    finally:
        await store.close()


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_sigkill_at_random_points_of_a_busy_run_loses_no_result_and_applies_no_change_twice(
    tmp_path: Path, soak: bool, tally: TallyRecorder
) -> None:
    rng = random.Random(SEED)
    cycles = 50 if soak else 20
    data = tmp_path / "data"
    data.mkdir()
    install_plugin(tmp_path, BUSY)
    db = data / "warden.db"
    lost = 0
    left: dict[str, tuple[str, str]] = {}  # rows a kill left active: daemon -> (state, boot)
    open_jobs: set[str] = set()  # jobs a kill left pending or running
    completed: dict[str, str | None] = {}  # every job a killed run had completed: id -> result
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scenes = [double.add_scene(f"/media/{index:02d}.mp4").id for index in range(SCENES)]
        daemons = {
            **marked(tmp_path, ("spin_a", "sleeper")),
            "finisher": {"stop_timeout": STOP_TIMEOUT},
            PlanApplier.name: {"auto_start": True, "interval": 1},
        }
        config = setting(write_config(tmp_path, daemons), "stash", {"url": double.url, "api_key": KEY})
        for cycle in range(cycles + 1):
            last = cycle == cycles  # the last run is not killed: it finishes every plan and stops on SIGTERM
            if not last:
                await stored_plan(data, cycle_changes(cycle, scenes))
            kill_at = None if last else rng.randint(1, KILL_WITHIN)
            with running_warden(tmp_path, config, f"warden-{cycle}") as warden:
                double.before = kill = RandomKill(warden.process.pid, kill_at)
                await logged(warden, "Warden running")  # plan_applier is running, its first Stash request held
                await reconciled(warden, db, left)
                jobs = job_rows(db)
                lost += sum(1 for job in open_jobs if jobs[job][::2] != ("failed", INTERRUPTED_JOB))
                lost += results_lost(db, completed)
                kill.armed.set()
                if last:
                    await eventually(lambda: plans_finished(data), timeout=120, poll=0.1)
                    warden.send(signal.SIGTERM)
                    assert await asyncio.to_thread(warden.wait_exit, STOP_TIMEOUT + 10) == 0, warden.tail()
                else:
                    await asyncio.wait_for(kill.killed.wait(), 60)
                    assert await asyncio.to_thread(warden.wait_exit, 5) == -signal.SIGKILL
            assert_intact(db)
            rows = states(db)
            left = {name: (state, boot) for name, (state, _, boot) in rows.items() if state in LEFT_ACTIVE}
            jobs = job_rows(db)
            lost += results_lost(db, completed)
            completed |= {job: result for job, (status, result, _) in jobs.items() if status == "completed"}
            open_jobs = {job for job, (status, _, _) in jobs.items() if status in ("pending", "running")}
            lacking, twice = await stash_ledger(data, double)
            lost += lacking + twice
        double.before = None
        changes = await all_changes(data)
        unapplied = sum(1 for c in changes if c.status is not ChangeStatus.APPLIED or times_in_stash(double, c) != 1)
    tally.record(
        "process",
        "SIGKILL at random points of a busy run (status, jobs, plans applied to Stash)",
        tries=cycles,
        outcome="each restart reconciles, integrity ok, finished jobs kept, each change in Stash once",
        lost=lost + unapplied,
    )
    assert lost + unapplied == 0
    assert len(changes) == cycles * SCENES * 3 and len(completed) > cycles, "the run was busy"
    assert states(db)[PlanApplier.name][0] == "stopped" and not left


async def test_sigterm_under_load_exits_0_and_every_client_and_the_disk_have_the_final_states(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    install_plugin(tmp_path, LOAD)
    config = write_config(tmp_path, marked(tmp_path, LOAD))
    setting(config, "server", {"port": 0, "token": TOKEN})
    db = tmp_path / "data" / "warden.db"
    with running_warden(tmp_path, config, "warden") as warden:
        url = (await logged(warden, "page served"))["url"]
        boot = (await logged(warden, "Warden running"))["boot"]
        seen: list[dict[str, str]] = [{} for _ in range(CLIENTS)]

        async def follow(last_states: dict[str, str]) -> None:
            """A client of the page: each daemon's latest state, until Warden closes the socket (cleanly)."""
            async for message in Client(url, TOKEN).live():
                if message["type"] == "snapshot":
                    last_states.update({d["name"]: d["state"] for d in message["daemons"]})
                elif message["type"] == "daemon":
                    last_states[message["daemon"]["name"]] = message["daemon"]["state"]

        clients = [asyncio.create_task(follow(last_states)) for last_states in seen]
        try:

            async def busy() -> bool:
                rows = states_if_readable(db)
                spinning = all(rows.get(name, ("",))[0] == "running" for name in LOAD)
                return spinning and all(s.get(name) == "running" for s in seen for name in LOAD)

            await eventually(busy, timeout=STARTUP_TIMEOUT)
            warden.send(signal.SIGTERM)
            code = await asyncio.to_thread(warden.wait_exit, STOP_TIMEOUT + 10)
            await asyncio.wait_for(asyncio.gather(*clients), 10)
        finally:
            for client in clients:
                client.cancel()
    final = states(db)
    missed = sum(1 for last_states in seen for name in LOAD if last_states.get(name) != "stopped")
    lost = missed + sum(1 for name in LOAD if final[name][0] != "stopped")
    lost += sum(1 for name in LOAD if not (tmp_path / f"{name}.cleaned").exists())
    tally.record(
        "process",
        f"SIGTERM with {len(LOAD)} daemons updating flat out and {CLIENTS} WebSocket clients",
        tries=1,
        outcome="exit 0; each client saw every daemon stopped before a clean close; final states on disk",
        lost=lost,
    )
    assert lost == 0
    assert code == 0, warden.tail()
    assert all(daemon_events(db, name) == LIFECYCLE for name in LOAD)
    assert query(db, "SELECT stopped_at IS NOT NULL FROM boots WHERE id = ?", boot) == [(1,)]
    assert_intact(db)
