"""Database faults: Warden's SQLite file locked by another process, its disk full, the file deleted
or replaced while Warden runs. Daemons keep running, the store problem reaches the page's feed, the
API and the metrics, writing resumes by itself when it can, and every daemon's latest state ends on
disk with nothing already there corrupted."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from supervisor.models import DaemonStatus
from supervisor.store import StoredState, StoreError
from tests.daemons_for_tests import Worker
from tests.fakeclock import FakeClock
from tests.harness import running_kernel

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
            assert "locked" in str(await failed.get())
            await kernel.until(lambda: not store_ok(kernel.hub.system))
            retry = clock.pending()[0]
            await clock.advance(retry)
            assert "locked" in str(await failed.get())  # the second failure in a row
        tries = 2
        # Nothing happens in Warden from here on but the passing of the retry delays.
        with contextlib.suppress(TimeoutError):
            for _ in range(5):
                await clock.advance(clock.pending()[0])
                await kernel.until(lambda: store_ok(kernel.hub.system), timeout=1)
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
