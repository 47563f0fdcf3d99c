"""Daemon lifecycle: states, transitions, concurrent commands."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.models import Actor, DaemonState
from supervisor.runner import DaemonDisabled
from tests.daemons_for_tests import Quitter, Worker
from tests.harness import running_kernel

S = DaemonState


@pytest.fixture(autouse=True)
def reset_counters() -> None:
    Worker.runs = Worker.cleanups = 0


def transitions(kernel, name):
    return [(e.from_state, e.to_state, e.actor) for e in kernel.events if e.daemon == name and e.kind == "transition"]


async def test_start_stop_records_every_transition_with_actor(tmp_path):
    async with running_kernel([Worker], tmp_path) as kernel:
        status = await kernel.supervisor.start("worker")
        assert status.state is S.RUNNING
        assert status.message == "Round 1"
        assert status.sleeping_until is not None and status.sleep_reason == "next round"
        status = await kernel.supervisor.stop("worker")
        assert status.state is S.STOPPED
        assert status.message == "" and status.sleeping_until is None, "a stopped daemon shows no stale activity"
        await kernel.until(lambda: len(transitions(kernel, "worker")) == 4)
        assert transitions(kernel, "worker") == [
            (S.STOPPED, S.STARTING, Actor.USER),
            (S.STARTING, S.RUNNING, Actor.USER),
            (S.RUNNING, S.STOPPING, Actor.USER),
            (S.STOPPING, S.STOPPED, Actor.USER),
        ]
        assert Worker.cleanups == 1, "the daemon's finally block ran"


async def test_clean_exit_is_stopped_under_on_failure(tmp_path):
    async with running_kernel([Quitter], tmp_path) as kernel:
        await kernel.supervisor.start("quitter")
        await kernel.until_state("quitter", S.STOPPED)
        assert kernel.supervisor.runner("quitter").status.restarts == 0


async def test_wake_cuts_a_sleep_short(tmp_path):
    async with running_kernel([Worker], tmp_path, daemons={"worker": {"interval": 3600}}) as kernel:
        await kernel.supervisor.start("worker")
        assert kernel.supervisor.wake("worker") is True
        await kernel.until(lambda: kernel.supervisor.runner("worker").status.message == "Round 2")


async def test_disabled_daemon_refuses_to_start(tmp_path):
    async with running_kernel([Worker], tmp_path, daemons={"worker": {"enabled": False}}) as kernel:
        assert kernel.state("worker") is S.DISABLED
        with pytest.raises(DaemonDisabled):
            await kernel.supervisor.start("worker")
        assert Worker.runs == 0


async def test_concurrent_command_storm_ends_consistent_with_one_instance(tmp_path):
    async with running_kernel([Worker], tmp_path) as kernel:
        supervisor = kernel.supervisor
        commands = [supervisor.start, supervisor.stop, supervisor.restart] * 20
        await asyncio.gather(*(command("worker") for command in commands))
        await supervisor.start("worker")
        await kernel.until_state("worker", S.RUNNING)
        assert Worker.runs - Worker.cleanups == 1, "exactly one live instance"
        await asyncio.gather(
            *(supervisor.stop("worker") for _ in range(10)), supervisor.start("worker"), supervisor.stop("worker")
        )
        await kernel.until_state("worker", S.STOPPED)
        assert Worker.runs == Worker.cleanups, "the last stop was not lost"


async def test_nothing_starts_once_shutdown_began(tmp_path):
    async with running_kernel([Worker], tmp_path) as kernel:
        await kernel.supervisor.start("worker")
        await kernel.supervisor.shutdown()
        with pytest.raises(DaemonDisabled, match="shutting down"):
            await kernel.supervisor.start("worker")
        with pytest.raises(DaemonDisabled, match="shutting down"):
            await kernel.supervisor.restart("worker")
        assert kernel.state("worker") is S.STOPPED and Worker.runs == Worker.cleanups == 1


async def test_a_disabled_daemon_cannot_be_restarted(tmp_path):
    async with running_kernel([Worker], tmp_path, daemons={"worker": {"enabled": False}}) as kernel:
        with pytest.raises(DaemonDisabled):
            await kernel.supervisor.restart("worker")
        assert Worker.runs == 0
