"""Database faults: Warden's SQLite file locked by another process, its disk full, the file deleted
or replaced while Warden runs. Daemons keep running, the store problem reaches the page's feed, the
API and the metrics, writing resumes by itself when it can, and every daemon's latest state ends on
disk with nothing already there corrupted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from supervisor.app import Warden
from supervisor.models import DaemonState, DaemonStatus
from supervisor.store import Store, StoredEvent, StoredState, StoreError
from tests.daemons_for_tests import Worker
from tests.fakeclock import FakeClock
from tests.harness import running_kernel
from tests.test_process import query
from tests.test_ws import Live, Message, live, opening, read_until
from tests.webharness import api_session, call, config_text, daemon_of, metrics, running_warden, saved, until

# Holds a write lock on the database from another process until its stdin closes, and for at
# least `hold` seconds in all (the fault's full length under --soak).
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
until = time.monotonic() + float(sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
time.sleep(max(0.0, until - time.monotonic()))
db.execute("ROLLBACK")
print("released", flush=True)
"""


@asynccontextmanager
async def locked_by_another_process(path: Path, hold: float = 0.0) -> AsyncIterator[None]:
    """The database is write-locked by a second process for the block (and at least `hold` seconds)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOCKER,
        str(path),
        str(hold),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert await process.stdout.readline() == b"locked\n"
        yield
        process.stdin.close()
        async with asyncio.timeout(hold + 10):
            assert await process.stdout.readline() == b"released\n"
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def lost_states(memory: Mapping[str, DaemonStatus], disk: Mapping[str, StoredState]) -> int:
    """Daemons whose latest state in memory is not the row on disk."""
    return sum(1 for name, status in memory.items() if name not in disk or disk[name].status != status)


def store_ok(system: Mapping[str, Any]) -> bool:
    return bool(system.get("store", {}).get("ok"))


# -- the writer retries by itself --------------------------------------------------------------

RETRY_CAP = 5.0  # StoreWriter's longest delay between two tries of a failed write


async def test_an_idle_warden_retries_a_failed_write_without_waiting_for_a_new_change(tmp_path, monkeypatch, tally):
    # The failed batch must reach the disk once the lock goes, even when no daemon reports
    # anything after the failure (the worker sleeps an hour on a clock that stands still).
    clock = FakeClock()
    async with running_kernel(
        [Worker], tmp_path, clock=clock, busy_timeout_ms=50, daemons={"worker": {"interval": 3600}}
    ) as kernel:
        kernel.hub.flush()
        await kernel.writer.wait_saved(kernel.hub.seq)
        failed = asyncio.Queue[StoreError]()
        write = kernel.store.write

        async def noted(*args: Any, **kwargs: Any) -> None:
            try:
                await write(*args, **kwargs)
            except StoreError as error:
                failed.put_nowait(error)
                raise

        monkeypatch.setattr(kernel.store, "write", noted)
        async with locked_by_another_process(kernel.store.path):
            await kernel.supervisor.start("worker")
            assert "locked" in str(await asyncio.wait_for(failed.get(), 5))
            await kernel.until(lambda: not store_ok(kernel.hub.system))
            await clock.advance(RETRY_CAP)
            assert "locked" in str(await asyncio.wait_for(failed.get(), 5))  # the second failure in a row
        tries = 2
        # Nothing happens in Warden from here on but the passing of the longest retry delay.
        await clock.advance(RETRY_CAP)
        with contextlib.suppress(TimeoutError):
            await kernel.until(lambda: store_ok(kernel.hub.system))
        lost = lost_states(kernel.hub.states, await kernel.store.states())
        tally.record(
            "database",
            "write fails twice (locked), lock goes, no further change",
            tries=tries,
            outcome="retried by itself after its backoff, store problem cleared",
            lost=lost,
        )
        assert store_ok(kernel.hub.system)
        assert lost == 0


# -- a whole Warden: the fault, what the page and API show, and what ends on disk ---------------


class Idle(Worker):
    """A daemon that reports once and then sleeps: its state changes before the fault only."""

    name = "idle"
    title = "Idle"


# The worker reports every 0.05 s; a short busy timeout keeps a locked write from waiting 5 s.
YAML = config_text("  worker:\n    interval: 0.05\n  idle:\n    interval: 3600\n") + "store:\n  busy_timeout: 0.2\n"


@asynccontextmanager
async def warden_with_client(tmp_path: Path) -> AsyncIterator[tuple[Warden, aiohttp.ClientSession, Live]]:
    """Warden with the worker and the idle daemon, an API session and a live client past its snapshot."""
    async with (
        running_warden(tmp_path, [Worker, Idle], yaml=YAML) as warden,
        api_session(warden) as session,
        live(session) as client,
    ):
        await opening(client)
        await saved(warden)
        yield warden, session, client


def store_message(ok: bool) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "system" and m["key"] == "store" and m["value"]["ok"] is ok


async def problem_shown(session: aiohttp.ClientSession, client: Live, cause: str, *, lasting: bool = True) -> str:
    """The store problem reaches the live page and, while it lasts, /api/health and /metrics; returns its text."""
    problem = (await read_until(client, store_message(False), timeout=10))[-1]["value"]["error"]
    assert cause in problem
    if not lasting:
        return str(problem)
    health = await call(session, "GET", "api/health", status=503)
    assert health["store"]["ok"] is False and cause in health["store"]["error"]
    assert (await metrics(session))["warden_store_ok"] == 0
    return str(problem)


def round_of(warden: Warden) -> int:
    return int(warden.hub.states["worker"].message.removeprefix("Round "))


async def keeps_reporting(warden: Warden, rounds: int) -> int:
    """Wait for `rounds` more status updates of the worker (it never waits for the database)."""
    first = round_of(warden)
    await until(warden, lambda: round_of(warden) >= first + rounds)
    assert warden.hub.states["worker"].state is DaemonState.RUNNING
    return round_of(warden) - first


async def writing_resumed(warden: Warden, session: aiohttp.ClientSession, client: Live) -> None:
    # Backoff is capped at 5 s: the next try after the fault ends comes within that.
    await read_until(client, store_message(True), timeout=15)
    await saved(warden)
    assert (await call(session, "GET", "api/health"))["store"]["ok"] is True
    assert (await metrics(session))["warden_store_ok"] == 1


@dataclass(frozen=True)
class OnDisk:
    integrity: list[tuple[Any, ...]]
    lost_states: int  # daemons whose final state in memory is not their row
    damaged_rows: int  # events saved before the fault that are gone or changed
    logs: list[str]  # the worker's log messages


async def read_back(warden: Warden, earlier: list[StoredEvent]) -> OnDisk:
    """What a stopped Warden left in its database."""
    assert warden.store is not None
    path = warden.store.path
    store = await Store.open(path)
    try:
        states, events = await store.states(), await store.events(limit=100_000)
        logs = [stored.line.message for stored in await store.logs("worker", limit=100_000)]
    finally:
        await store.close()
    now = {stored.id: stored for stored in events}
    damaged = sum(1 for stored in earlier if now.get(stored.id) != stored)
    return OnDisk(query(path, "PRAGMA integrity_check"), lost_states(warden.hub.states, states), damaged, logs)


@pytest.mark.soak
async def test_a_database_locked_by_another_process(tmp_path, tally, soak):
    hold = 30.0 if soak else 0.0  # make test: the lock goes as soon as everything below was seen
    async with warden_with_client(tmp_path) as (warden, session, client):
        assert warden.store is not None
        earlier = await warden.store.events(limit=100_000)
        async with locked_by_another_process(warden.store.path, hold):
            problem = await problem_shown(session, client, "locked")
            updates = await keeps_reporting(warden, 10)
        updates += await keeps_reporting(warden, 0)
        await writing_resumed(warden, session, client)
    disk = await read_back(warden, earlier)
    lost = disk.lost_states + disk.damaged_rows
    tally.record(
        "database",
        f"locked by another process for {hold:g} s" if soak else "locked by another process (short)",
        tries=1,
        outcome=f"daemons kept running ({updates} updates), '{problem}' shown, writing resumed, integrity ok",
        lost=lost,
    )
    assert disk.integrity == [("ok",)]
    assert lost == 0


async def test_a_full_disk(tmp_path, tally):
    lines = [f"line {n} " + "x" * 4000 for n in range(100)]
    async with warden_with_client(tmp_path) as (warden, session, client):
        assert warden.store is not None
        earlier = await warden.store.events(limit=100_000)
        # The connection's own limit stands for the disk: no room for a page more than it has now.
        connection = warden.store._db
        async with connection.execute("PRAGMA page_count") as cursor:
            (pages,) = await cursor.fetchone()
        await connection.execute(f"PRAGMA max_page_count = {pages}")
        worker = daemon_of(warden, "worker")
        for line in lines:
            worker.log.info(line)
        problem = await problem_shown(session, client, "full")
        updates = await keeps_reporting(warden, 10)
        await connection.execute("PRAGMA max_page_count = 1073741823")  # space again
        await writing_resumed(warden, session, client)
    disk = await read_back(warden, earlier)
    lost = disk.lost_states + disk.damaged_rows + len(set(lines) - set(disk.logs))
    tally.record(
        "database",
        "disk full (max_page_count)",
        tries=1,
        outcome=f"daemons kept running ({updates} updates), '{problem}' shown, writing resumed, integrity ok",
        lost=lost,
    )
    assert disk.integrity == [("ok",)]
    assert lost == 0


async def delete(path: Path) -> list[StoredEvent]:
    os.unlink(path)
    return []


async def delete_with_its_companions(path: Path) -> list[StoredEvent]:
    # `rm warden.db*`: its write-ahead log, shared memory and lock file go too.
    for file in path.parent.glob(path.name + "*"):
        file.unlink()
    return []


async def replace_with_a_backup(path: Path) -> list[StoredEvent]:
    """A consistent copy taken now, put back in its place: its rows must stay as they are."""
    backup = path.with_name("backup.db")
    with contextlib.closing(sqlite3.connect(path)) as source, contextlib.closing(sqlite3.connect(backup)) as copy:
        source.backup(copy)
    store = await Store.open(backup)
    try:
        earlier = await store.events(limit=100_000)
    finally:
        await store.close()
    os.replace(backup, path)
    return earlier


REPLACEMENTS = {
    "deleted": delete,
    "deleted with its -wal, -shm and lock": delete_with_its_companions,
    "replaced by a backup copy": replace_with_a_backup,
}


@pytest.mark.parametrize("replace", REPLACEMENTS.values(), ids=REPLACEMENTS.keys())
async def test_the_database_file_deleted_or_replaced_while_running(tmp_path, tally, replace):
    # What a person expects: Warden notices at its next write, says so, and writes the current state
    # of every daemon into the database now at the path (a new one when the file is gone).
    async with warden_with_client(tmp_path) as (warden, session, client):
        assert warden.store is not None
        path = warden.store.path
        earlier = await replace(path)
        await problem_shown(session, client, "deleted or replaced", lasting=False)
        updates = await keeps_reporting(warden, 10)
        await writing_resumed(warden, session, client)
    disk = await read_back(warden, earlier)
    lost = disk.lost_states + disk.damaged_rows
    ended = query(path, "SELECT stopped_at IS NOT NULL FROM boots WHERE id = ?", warden.boot_id)
    tally.record(
        "database",
        f"file {next(k for k, v in REPLACEMENTS.items() if v is replace)} while running",
        tries=1,
        outcome=f"noticed at the next write and shown, daemons kept running ({updates} updates), the current "
        "state written to the database now at the path, integrity ok",
        lost=lost,
    )
    assert disk.integrity == [("ok",)]
    assert ended == [(1,)], "the run is recorded in the new file, with its clean end"
    assert lost == 0


async def test_a_database_file_replaced_by_something_else_is_left_alone(tmp_path, tally):
    garbage = b"my notes, not a database\n" * 100
    async with warden_with_client(tmp_path) as (warden, session, client):
        assert warden.store is not None
        path = warden.store.path
        other = path.with_name("notes.txt")
        other.write_bytes(garbage)
        os.replace(other, path)
        await problem_shown(session, client, "cannot be opened as its database")
        # The page's views that read the database say why they cannot, instead of failing.
        assert "cannot be opened" in (await call(session, "GET", "api/events", status=503))["error"]
        updates = await keeps_reporting(warden, 10)
        untouched = path.read_bytes() == garbage
        path.unlink()  # the person moves their file away
        await writing_resumed(warden, session, client)
    disk = await read_back(warden, [])
    tally.record(
        "database",
        "file replaced by a file that is not a database, then removed",
        tries=1,
        outcome=f"file left untouched, problem shown, 503 on database views, daemons kept running ({updates} "
        "updates); recreated with the current state once removed",
        lost=disk.lost_states,
    )
    assert untouched
    assert disk.integrity == [("ok",)]
    assert disk.lost_states == 0


async def test_the_data_folder_replaced_by_a_file_while_running(tmp_path, tally):
    # The database path cannot even be looked at (NotADirectoryError, as root too): Warden stays up, shows
    # the problem, and writes on into its file once the person puts the folder back.
    async with warden_with_client(tmp_path) as (warden, session, client):
        assert warden.store is not None
        folder = warden.store.path.parent
        aside = folder.with_name("aside")
        earlier = await warden.store.events(limit=100_000)
        folder.rename(aside)
        try:
            folder.write_text("not a folder\n")
            problem = await problem_shown(session, client, "Not a directory")
            updates = await keeps_reporting(warden, 10)
        finally:
            folder.unlink(missing_ok=True)
            aside.rename(folder)
        await writing_resumed(warden, session, client)
    disk = await read_back(warden, earlier)
    lost = disk.lost_states + disk.damaged_rows
    tally.record(
        "database",
        "data folder replaced by a file while running, then put back",
        tries=1,
        outcome=f"daemons kept running ({updates} updates), '{problem}' shown, writing resumed into the same "
        "file, integrity ok",
        lost=lost,
    )
    assert disk.integrity == [("ok",)]
    assert lost == 0
