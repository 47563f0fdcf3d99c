"""update_status never waits: not for a locked database, not for a stalled subscriber.

The proof is causal, not timed: the calls complete while the database is still locked by
another connection, and the latest state reaches the disk once the lock is released.
"""

from __future__ import annotations

import asyncio
import sqlite3

from supervisor.daemon import Daemon
from supervisor.models import DaemonState
from tests.daemons_for_tests import Worker
from tests.harness import Kernel, running_kernel

CALLS = 100_000


def daemon_of(kernel: Kernel, name: str) -> Daemon:
    daemon = kernel.supervisor.runner(name).daemon
    assert daemon is not None
    return daemon


async def stored_message(kernel: Kernel, name: str) -> str | None:
    stored = await kernel.store.states()
    return stored[name].status.message if name in stored else None


async def test_100k_updates_finish_while_the_database_is_locked_and_a_subscriber_stalls(tmp_path):
    config = {"worker": {"interval": 3600}}
    async with running_kernel([Worker], tmp_path, daemons=config, busy_timeout_ms=100) as kernel:
        await kernel.supervisor.start("worker")
        daemon = daemon_of(kernel, "worker")
        stalled = kernel.hub.subscribe(max_lines=100)  # never read
        # Lock from a thread: the writer may be mid-transaction and needs the loop to finish it.
        locker = sqlite3.connect(tmp_path / "warden.db", isolation_level=None, check_same_thread=False)
        try:
            await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
            for n in range(CALLS):
                await daemon.update_status(f"Processing item {n + 1} of {CALLS}", progress=100 * (n + 1) / CALLS)
            # Still locked here: none of those calls waited for the database.
            assert kernel.hub.states["worker"].message == f"Processing item {CALLS} of {CALLS}"
            await kernel.until(lambda: not kernel.hub.system["store"]["ok"])
            assert kernel.state("worker") is DaemonState.RUNNING, "the daemon keeps running"
            assert stalled.pending <= 2, "the stalled subscriber holds the latest state only"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await kernel.until(lambda: kernel.hub.system["store"]["ok"], timeout=30)
        kernel.hub.flush()
        await kernel.writer.wait_saved(kernel.hub.seq)
        assert await stored_message(kernel, "worker") == f"Processing item {CALLS} of {CALLS}"


async def test_a_burst_of_10k_updates_becomes_a_handful_of_transactions(tmp_path):
    async with running_kernel([Worker], tmp_path, daemons={"worker": {"interval": 3600}}) as kernel:
        await kernel.supervisor.start("worker")
        daemon = daemon_of(kernel, "worker")
        kernel.hub.flush()
        await kernel.writer.wait_saved(kernel.hub.seq)
        before = kernel.writer.transactions
        for n in range(10_000):
            await daemon.update_status(f"step {n}")
        kernel.hub.flush()
        await kernel.writer.wait_saved(kernel.hub.seq)
        assert await stored_message(kernel, "worker") == "step 9999"
        assert kernel.writer.transactions - before <= 3
