"""Watchdog: a silent daemon is found hung, cancelled and restarted; a loop blocker is named."""

from __future__ import annotations

import asyncio

from supervisor.models import Actor, DaemonState
from tests.daemons_for_tests import Blocker, Hanger, Worker
from tests.fakeclock import FakeClock
from tests.harness import running_kernel

S = DaemonState


def watched(daemon_class, tmp_path, clock: FakeClock, **config):
    """A kernel on `clock` whose watchdog looks every second and allows 10 s of silence."""
    daemons = {daemon_class.name: {"watchdog_timeout": 10, **config}}
    return running_kernel([daemon_class], tmp_path, clock=clock, daemons=daemons, supervisor={"watchdog_interval": 1})


async def test_hung_daemon_is_detected_cancelled_and_restarted(tmp_path):
    clock = FakeClock()
    async with watched(Hanger, tmp_path, clock) as kernel:
        await kernel.supervisor.start("hanger")
        assert kernel.state("hanger") is S.RUNNING
        runner = kernel.supervisor.runner("hanger")
        await clock.advance(9)
        assert kernel.state("hanger") is S.RUNNING, "not hung before watchdog_timeout"
        assert runner.overdue(clock.monotonic()) is None
        await clock.advance(1.5)  # past the timeout, before the next watchdog tick: health says so already
        assert runner.overdue(clock.monotonic()) == 10.5
        await clock.advance(0.5)  # the tick at 11 s finds it silent; its restart is due at 12 s
        hung = await kernel.until_event(lambda e: e.kind == "hung")
        assert hung.daemon == "hanger" and hung.actor is Actor.WATCHDOG
        await kernel.until_state("hanger", S.BACKOFF)
        assert "no heartbeat" in (kernel.supervisor.runner("hanger").status.last_error or "")
        await clock.advance(1)
        await kernel.until_state("hanger", S.RUNNING)
        status = kernel.supervisor.runner("hanger").status
        assert status.restarts == 1
        backoff = [e for e in kernel.events if e.to_state is S.BACKOFF]
        assert backoff[0].actor is Actor.WATCHDOG


async def test_a_sleeping_daemon_is_not_hung(tmp_path):
    clock = FakeClock()
    async with watched(Worker, tmp_path, clock, interval=1000) as kernel:
        await kernel.supervisor.start("worker")
        await clock.advance(500)
        assert kernel.state("worker") is S.RUNNING
        assert not [e for e in kernel.events if e.kind == "hung"]


async def test_status_updates_are_heartbeats(tmp_path):
    clock = FakeClock()
    async with watched(Hanger, tmp_path, clock) as kernel:
        await kernel.supervisor.start("hanger")
        daemon = kernel.supervisor.runner("hanger").daemon
        assert daemon is not None
        for _ in range(5):
            await clock.advance(8)
            await daemon.update_status("still here")
        daemon.log.info("and a log line counts too")
        await clock.advance(8)
        assert kernel.state("hanger") is S.RUNNING
        assert not [e for e in kernel.events if e.kind == "hung"]


async def test_loop_blocking_daemon_is_named(tmp_path):
    async with running_kernel(
        [Blocker], tmp_path, daemons={"blocker": {"block_for": 0.4}}, supervisor={"loop_lag_threshold": 0.1}
    ) as kernel:
        await kernel.supervisor.start("blocker")
        event = await kernel.until_event(lambda e: e.kind == "loop-blocked")
        assert event.daemon == "blocker"
        assert "blocked the event loop" in event.message


class SlowToStop(Hanger):
    """A hanger whose cleanup takes until the test lets it finish."""

    name = "slow_to_stop"
    title = "Slow to stop"
    cleanup_may_finish: asyncio.Event

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await type(self).cleanup_may_finish.wait()


async def test_a_stop_during_the_watchdogs_cancel_ends_stopped_not_restarted(tmp_path):
    clock = FakeClock()
    SlowToStop.cleanup_may_finish = asyncio.Event()
    async with watched(SlowToStop, tmp_path, clock, stop_timeout=600) as kernel:
        await kernel.supervisor.start("slow_to_stop")
        await clock.advance(11)
        await kernel.until_state("slow_to_stop", S.STOPPING)
        stopping = asyncio.create_task(kernel.supervisor.stop("slow_to_stop"))
        SlowToStop.cleanup_may_finish.set()
        status = await stopping
        assert status.state is S.STOPPED
        assert "no heartbeat" in (status.last_error or "")
        await clock.advance(600)
        assert kernel.state("slow_to_stop") is S.STOPPED
        assert not [e for e in kernel.events if e.to_state is S.BACKOFF]


class Waiter(Hanger):
    """Waits, silent, for a job that takes long and reports nothing."""

    name = "waiter"
    title = "Waiter"
    release: asyncio.Event

    async def run(self) -> None:
        async def long_step(job) -> str:
            await type(self).release.wait()
            return "done"

        await self.run_job("import", "all", long_step)
        await self.update_status("imported")
        await self.sleep(3600, "idle")


async def test_a_daemon_waiting_for_its_job_is_not_hung(tmp_path):
    clock = FakeClock()
    Waiter.release = asyncio.Event()
    async with watched(Waiter, tmp_path, clock) as kernel:
        await kernel.supervisor.start("waiter")
        await kernel.until(lambda: kernel.supervisor.runner("waiter").status.job_type == "import")
        assert kernel.state("waiter") is S.RUNNING, "a job is a sign of life: running, not starting"
        await clock.advance(100)
        assert not [e for e in kernel.events if e.kind == "hung"]
        Waiter.release.set()
        await kernel.until(lambda: kernel.supervisor.runner("waiter").status.message == "imported")
