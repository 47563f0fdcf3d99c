"""Restart policy: backoff that grows, jitter, the burst limit (fatal), policies, healthy reset.

Time is a FakeClock: the test moves it, nothing waits for real seconds.
"""

from __future__ import annotations

import random

from supervisor.models import Actor, DaemonState
from tests.daemons_for_tests import Crasher, Flaky, Quitter
from tests.fakeclock import FakeClock
from tests.harness import Kernel, running_kernel

S = DaemonState


def backoff_delay(kernel: Kernel, name: str) -> float:
    status = kernel.supervisor.runner(name).status
    assert status.state is S.BACKOFF and status.next_restart_at is not None
    return status.next_restart_at - kernel.clock.time()


async def crash_delays(kernel: Kernel, name: str, clock: FakeClock) -> list[float]:
    """Let the daemon crash-loop until it goes fatal; the backoff delays seen on the way."""
    delays = []
    await kernel.supervisor.start(name)
    while True:
        # The crash follows the start at once; wait for the policy's decision each round.
        await kernel.until(lambda: kernel.state(name) in (S.BACKOFF, S.FATAL))
        if kernel.state(name) is S.FATAL:
            return delays
        delays.append(backoff_delay(kernel, name))
        restarts = kernel.supervisor.runner(name).status.restarts
        await clock.advance(delays[-1])
        await kernel.until(lambda before=restarts: kernel.supervisor.runner(name).status.restarts > before)


async def test_backoff_doubles_then_burst_limit_makes_fatal(tmp_path):
    clock = FakeClock()
    config = {"crasher": {"backoff_initial": 1, "backoff_max": 300, "max_restarts": 5, "restart_window": 60}}
    async with running_kernel([Crasher], tmp_path, clock=clock, daemons=config) as kernel:
        delays = await crash_delays(kernel, "crasher", clock)
        assert delays == [1, 2, 4, 8, 16]
        status = kernel.supervisor.runner("crasher").status
        assert status.state is S.FATAL
        assert status.restarts == 5
        assert status.last_error == "RuntimeError: boom"
        fatal = [e for e in kernel.events if e.to_state is S.FATAL]
        assert len(fatal) == 1 and fatal[0].actor is Actor.CRASH and "5 restarts within 60 s" in fatal[0].message

        # Fatal stays until a person acts; no timer restarts it.
        await clock.advance(3600)
        assert kernel.state("crasher") is S.FATAL

        # A person's start clears the crash history: the next delay is the first one again.
        await kernel.supervisor.start("crasher")
        await kernel.until_state("crasher", S.BACKOFF)
        assert backoff_delay(kernel, "crasher") == 1


async def test_backoff_is_capped(tmp_path):
    clock = FakeClock()
    config = {"crasher": {"backoff_initial": 10, "backoff_max": 25, "max_restarts": 10, "restart_window": 10_000}}
    async with running_kernel([Crasher], tmp_path, clock=clock, daemons=config) as kernel:
        delays = await crash_delays(kernel, "crasher", clock)
        assert delays == [10, 20, 25, 25, 25, 25, 25, 25, 25, 25]


async def test_jitter_spreads_delays_within_bounds(tmp_path):
    clock = FakeClock()
    config = {"crasher": {"backoff_initial": 1, "max_restarts": 6, "restart_window": 1000}}
    async with running_kernel([Crasher], tmp_path, clock=clock, rng=random.Random(7), daemons=config) as kernel:
        delays = await crash_delays(kernel, "crasher", clock)
    exact = [1, 2, 4, 8, 16, 32]
    assert len(delays) == len(exact)
    assert all(0.8 * d <= got <= 1.2 * d for got, d in zip(delays, exact, strict=True))
    assert delays != exact, "jitter applied"


async def test_policy_never_goes_fatal_at_first_crash(tmp_path):
    clock = FakeClock()
    async with running_kernel([Crasher], tmp_path, clock=clock, daemons={"crasher": {"restart": "never"}}) as kernel:
        await kernel.supervisor.start("crasher")
        await kernel.until_state("crasher", S.FATAL)
        status = kernel.supervisor.runner("crasher").status
        assert status.restarts == 0 and status.last_error == "RuntimeError: boom"


async def test_policy_always_restarts_after_clean_exit(tmp_path):
    clock = FakeClock()
    async with running_kernel([Quitter], tmp_path, clock=clock, daemons={"quitter": {"restart": "always"}}) as kernel:
        await kernel.supervisor.start("quitter")
        await kernel.until_state("quitter", S.BACKOFF)
        assert backoff_delay(kernel, "quitter") == 1
        await clock.advance(1)
        await kernel.until(lambda: kernel.supervisor.runner("quitter").status.restarts == 1)


async def test_on_failure_does_not_restart_a_clean_exit(tmp_path):
    clock = FakeClock()
    async with running_kernel([Quitter], tmp_path, clock=clock) as kernel:
        await kernel.supervisor.start("quitter")
        await kernel.until_state("quitter", S.STOPPED)
        await clock.advance(600)
        assert kernel.state("quitter") is S.STOPPED and kernel.supervisor.runner("quitter").status.restarts == 0


async def test_a_healthy_run_resets_the_backoff(tmp_path):
    clock = FakeClock()
    healthy = {"flaky": {"interval": 120, "healthy_after": 60, "max_restarts": 3, "restart_window": 80_000}}
    async with running_kernel([Flaky], tmp_path, clock=clock, daemons=healthy) as kernel:
        await kernel.supervisor.start("flaky")
        for _ in range(6):  # more crashes than max_restarts: each follows a healthy run
            await clock.advance(120)
            await kernel.until(lambda: kernel.state("flaky") is S.BACKOFF)
            assert backoff_delay(kernel, "flaky") == 1
            await clock.advance(1)
            await kernel.until(lambda: kernel.state("flaky") is S.RUNNING)


async def test_short_runs_keep_growing_the_backoff(tmp_path):
    clock = FakeClock()
    short = {"flaky": {"interval": 5, "healthy_after": 60, "max_restarts": 10, "restart_window": 80_000}}
    async with running_kernel([Flaky], tmp_path, clock=clock, daemons=short) as kernel:
        await kernel.supervisor.start("flaky")
        delays = []
        for _ in range(3):
            await clock.advance(5)
            await kernel.until(lambda: kernel.state("flaky") is S.BACKOFF)
            delays.append(backoff_delay(kernel, "flaky"))
            await clock.advance(delays[-1])
            await kernel.until(lambda: kernel.state("flaky") is S.RUNNING)
        assert delays == [1, 2, 4]


async def test_stop_during_backoff_cancels_the_restart(tmp_path):
    clock = FakeClock()
    async with running_kernel([Crasher], tmp_path, clock=clock, daemons={"crasher": {"backoff_initial": 30}}) as kernel:
        await kernel.supervisor.start("crasher")
        await kernel.until_state("crasher", S.BACKOFF)
        status = await kernel.supervisor.stop("crasher")
        assert status.state is S.STOPPED and status.next_restart_at is None
        await clock.advance(600)
        assert kernel.state("crasher") is S.STOPPED
