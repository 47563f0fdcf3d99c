"""update_status never waits: not for a locked database, not for a stalled subscriber.

The proof is causal, not timed: the calls complete while the database is still locked by
another connection, and the latest state reaches the disk once the lock is released.
Also: a status line marked as a problem, and how long the mark lasts.
"""

from __future__ import annotations

import asyncio
import sqlite3

from supervisor.daemon import Daemon
from supervisor.hub import StatusHub
from supervisor.models import DaemonState, DaemonStatus
from supervisor.persist import StoreWriter
from supervisor.store import Store
from tests.daemons_for_tests import Retrier, Worker
from tests.fakeclock import FakeClock
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


async def test_steady_updates_make_at_most_one_transaction_per_interval_and_the_last_is_saved_within_it(tmp_path):
    clock = FakeClock()
    hub = StatusHub()
    store = await Store.open(tmp_path / "warden.db")
    writer = StoreWriter(hub, store, clock, "boot", interval=0.05)
    writing = asyncio.create_task(writer.run())
    status = DaemonStatus("worker", "Worker", DaemonState.RUNNING)

    async def writer_at_rest() -> None:
        """Until everything is saved, or the writer waits for its next turn on the (fake) clock."""
        while writer.saved_seq < hub.seq and not clock.pending():  # noqa: ASYNC110 -- a thread finishes the write
            await asyncio.sleep(0)

    try:
        async with asyncio.timeout(30):
            for n in range(1000):  # 1,000 updates a second, evenly spaced, for one second
                status.message = f"step {n}"
                hub.set_status(status)
                hub.flush()
                await writer_at_rest()
                await clock.advance(0.001)
            assert writer.transactions <= 21, "at most one write per 50 ms"
            await clock.advance(0.05)
            await writer.wait_saved(hub.seq)
        assert (await store.states())["worker"].status.message == "step 999"
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        await store.close()


# -- a status line that reports a problem -------------------------------------------------------

REFUSED = "Cannot reach Stash: connection refused"


async def saved_status(kernel: Kernel, name: str) -> DaemonStatus:
    """The daemon's row, once every change published so far is on disk."""
    kernel.hub.flush()
    await kernel.writer.wait_saved(kernel.hub.seq)
    return (await kernel.store.states())[name].status


async def test_a_problem_stays_through_the_sleep_until_the_next_update_clears_it(tmp_path, monkeypatch):
    monkeypatch.setattr(Retrier, "service_up", False)
    async with running_kernel([Retrier], tmp_path) as kernel:
        await kernel.supervisor.start("retrier")
        status = kernel.supervisor.runner("retrier").status
        await kernel.until(lambda: status.sleeping_until is not None)
        assert (status.state, status.message, status.problem) == (DaemonState.RUNNING, REFUSED, True)
        assert status.sleep_reason == "next try", "the problem is shown while the daemon sleeps until its retry"
        assert kernel.hub.states["retrier"].problem is True
        on_disk = await saved_status(kernel, "retrier")
        assert (on_disk.message, on_disk.problem) == (REFUSED, True)

        monkeypatch.setattr(Retrier, "service_up", True)
        assert kernel.supervisor.wake("retrier")
        await kernel.until(lambda: status.message == "Connected to Stash")
        assert status.problem is False
        assert (await saved_status(kernel, "retrier")).problem is False


class GivesUp(Daemon):
    """Reports a problem, then crashes."""

    name = "gives_up"
    title = "Gives Up"

    async def run(self) -> None:
        await self.update_status("Stash refuses the API key", problem=True)
        raise RuntimeError("giving up")


async def test_a_problem_is_not_carried_into_a_stop_a_restart_or_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(Retrier, "service_up", False)
    config = {"gives_up": {"backoff_initial": 3600}}
    async with running_kernel([Retrier, GivesUp], tmp_path, daemons=config) as kernel:
        status = kernel.supervisor.runner("retrier").status
        await kernel.supervisor.start("retrier")
        await kernel.until(lambda: status.problem)
        await kernel.supervisor.stop("retrier")
        assert (status.state, status.message, status.problem) == (DaemonState.STOPPED, "", False)
        assert (await saved_status(kernel, "retrier")).problem is False

        await kernel.supervisor.start("retrier")
        await kernel.until(lambda: status.problem)
        # The next run waits before its first report: what the card shows then comes from the restart alone.
        gate = asyncio.Event()
        monkeypatch.setattr(Retrier, "gate", gate)
        restart = asyncio.create_task(kernel.supervisor.restart("retrier"))
        runner = kernel.supervisor.runner("retrier")
        await kernel.until(lambda: runner.runs == 3 and status.state is DaemonState.STARTING)
        assert (status.message, status.problem) == ("", False)
        gate.set()
        await restart
        await kernel.until(lambda: status.problem)

        crashed = kernel.supervisor.runner("gives_up").status
        await kernel.supervisor.start("gives_up")
        await kernel.until_state("gives_up", DaemonState.BACKOFF)
        assert (crashed.message, crashed.problem, crashed.last_error) == ("", False, "RuntimeError: giving up")


class Outage(Daemon):
    """Its service is down for three tries in a row, then back."""

    name = "outage"
    title = "Outage"

    async def run(self) -> None:
        for failures in (1, 2, 3):
            await self.wait_out("cannot reach the service: connection refused", failures)
        await self.update_status("service back")
        await self.sleep(3600, "next round")


async def test_wait_out_shows_the_problem_and_doubles_its_wait_up_to_backoff_max(tmp_path):
    clock = FakeClock()
    daemons = {"outage": {"backoff_initial": 2, "backoff_max": 5}}
    async with running_kernel([Outage], tmp_path, clock=clock, daemons=daemons) as kernel:
        await kernel.supervisor.start("outage")
        status = kernel.supervisor.runner("outage").status
        seen = []
        for wait in (2, 4, 5):
            await kernel.until(lambda: status.problem and status.sleeping_until is not None)
            seen.append((status.message, status.sleeping_until - clock.time()))
            await clock.advance(wait)
        await kernel.until(lambda: status.message == "service back")
        assert not status.problem and kernel.state("outage") is DaemonState.RUNNING
    assert seen == [
        ("Cannot reach the service: connection refused. Retrying in 2 s.", 2),
        ("Cannot reach the service: connection refused. Retrying in 4 s.", 4),
        ("Cannot reach the service: connection refused. Retrying in 5 s.", 5),
    ]
