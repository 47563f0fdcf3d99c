"""Daemon faults, each followed through: what happens, what the page shows, what is on disk after.

A daemon that crashes at start, crashes after some status updates, keeps hanging, blocks the
event loop, swallows cancellation past its stop_timeout, or leaves a task it started running.
Each case checks the transitions (with cause and actor), the card's fields (state, last error,
restart count, backoff time), that no second instance or leftover task ever runs, and that
every event published is in the database afterwards. Backoff waits run on a FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.models import Actor, DaemonState, DaemonStatus, Event, LogLine
from supervisor.store import Store
from supervisor.tasks import RunTasks, detached, run_context, track_tasks
from tests.daemons_for_tests import Blocker, Census, Flaky, Hanger, Leaky, Stubborn, Unstartable, Worker
from tests.fakeclock import FakeClock
from tests.harness import Kernel, running_kernel
from tests.tally import TallyRecorder

S = DaemonState
#: A FakeClock is moved a second at a time; a run of steps ends long before this many.
MAX_STEPS = 200
#: Watchdog ticks are timers on the FakeClock: where no hang is under test, one a minute keeps long moves cheap.
QUIET_WATCHDOG = {"watchdog_interval": 60}
#: How long a command may wait for a daemon that holds out through several stop_timeouts of real time.
COMMAND_ROOM = 60.0


@pytest.fixture(autouse=True)
def reset_counters() -> None:
    Flaky.runs = Unstartable.runs = 0
    Stubborn.instances = Census()
    Leaky.tasks = Census()
    Leaky.job_release = None
    Worker.runs = Worker.cleanups = 0


async def on_disk(tmp_path: Path) -> tuple[dict[str, DaemonStatus], list[Event]]:
    """What a restarted Warden (and so the page) reads back: every daemon's row and every event, oldest first."""
    store = await Store.open(tmp_path / "warden.db")
    try:
        rows = {name: row.status for name, row in (await store.states()).items()}
        events = [stored.event for stored in reversed(await store.events(limit=1_000_000))]
    finally:
        await store.close()
    return rows, events


def missing(published: list[Event], stored: list[Event]) -> int:
    """Events published while the kernel ran that are not in the database."""
    return sum(1 for event in published if event not in stored)


def moves(events: list[Event], name: str) -> list[tuple[S | None, S | None, Actor]]:
    return [(e.from_state, e.to_state, e.actor) for e in events if e.daemon == name and e.kind == "transition"]


def status(kernel: Kernel, name: str) -> DaemonStatus:
    return kernel.supervisor.runner(name).status


class Received:
    """What a client of the hub has received: each daemon's newest state and every status message, in order."""

    def __init__(self, kernel: Kernel) -> None:
        self._subscription = kernel.hub.subscribe()
        self.states: dict[str, DaemonStatus] = {}
        self.messages: dict[str, list[str]] = {}

    def look(self) -> Received:
        for delta in self._subscription.take().deltas:
            if delta.kind == "daemon":
                self.states[delta.key] = delta.data
                if delta.data.message:
                    self.messages.setdefault(delta.key, []).append(delta.data.message)
        return self

    def shown(self, name: str) -> list[str]:
        """The messages `name`'s card went through (a message seen in several deltas in a row counts once)."""
        return [message for message, _ in itertools.groupby(self.look().messages.get(name, []))]

    def round_of(self, name: str) -> int:
        states = self.look().states
        message = states[name].message if name in states else ""
        return int(message.removeprefix("Round ")) if message.startswith("Round ") else 0


async def step_until(kernel: Kernel, clock: FakeClock, name: str, state: S) -> None:
    """Move the clock a second at a time until the daemon is in `state`."""
    for _ in range(MAX_STEPS):
        if kernel.state(name) is state:
            return
        await clock.advance(1)
    raise AssertionError(f"{name} never reached {state}; it is {kernel.state(name)}")


async def test_a_daemon_crashing_at_start_backs_off_then_goes_fatal_and_every_crash_is_on_disk(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    clock = FakeClock()
    config = {"unstartable": {"backoff_initial": 1, "max_restarts": 3, "restart_window": 600}}
    async with running_kernel(
        [Unstartable], tmp_path, clock=clock, daemons=config, supervisor=QUIET_WATCHDOG
    ) as kernel:
        card = await kernel.supervisor.start("unstartable")
        # The start answers with the policy's decision at once, and the card says why and when it tries again.
        assert card.state is S.BACKOFF and card.message == "" and card.restarts == 0
        assert card.last_error == "LookupError: library folder /media/missing not found"
        assert card.next_restart_at == clock.time() + 1
        delays = []
        while kernel.state("unstartable") is S.BACKOFF:
            delays.append(status(kernel, "unstartable").next_restart_at - clock.time())
            await clock.advance(delays[-1])
            await kernel.until(lambda: kernel.state("unstartable") in (S.BACKOFF, S.FATAL))
        card = status(kernel, "unstartable")
        assert delays == [1, 2, 4] and card.state is S.FATAL and card.restarts == 3 and card.next_restart_at is None
        await clock.advance(3600)
        assert kernel.state("unstartable") is S.FATAL and Unstartable.runs == 4, "fatal waits for a person"
        await kernel.until(lambda: True)  # everything published so far is recorded
        published = list(kernel.events)
    rows, stored = await on_disk(tmp_path)
    crashes = [m for m in moves(stored, "unstartable") if m[0] is S.STARTING and m[1] in (S.BACKOFF, S.FATAL)]
    assert {actor for _, _, actor in crashes} == {Actor.CRASH}
    fatal = next(e for e in stored if e.to_state is S.FATAL)
    lost = Unstartable.runs - len(crashes) + missing(published, stored)
    tally.record(
        "daemon",
        "crashes at start, every run",
        tries=Unstartable.runs,
        outcome="backoff 1, 2, 4 s shown with the error, then fatal until a person acts; all on disk",
        lost=lost,
    )
    assert lost == 0
    assert "3 restarts within 600 s" in fatal.message
    assert rows["unstartable"].last_error == card.last_error and rows["unstartable"].restarts == 3


async def test_a_daemon_crashing_after_some_updates_shows_each_then_its_error_and_restarts_afresh(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    clock = FakeClock()
    config = {"flaky": {"steps": 3, "interval": 1, "healthy_after": 60, "max_restarts": 5}}
    async with running_kernel([Flaky], tmp_path, clock=clock, daemons=config, supervisor=QUIET_WATCHDOG) as kernel:
        received = Received(kernel)
        delays = []
        await kernel.supervisor.start("flaky")
        for run in range(1, 4):
            for _ in range(3):  # a second of work after each status: the client reads each one as it comes
                received.look()
                await clock.advance(1)
            await kernel.until_state("flaky", S.BACKOFF)
            card = status(kernel, "flaky")
            # No stale "step 3 of 3" stays on a crashed daemon's card: its error and its next start do.
            assert (card.message, card.last_error, card.restarts) == ("", "RuntimeError: worn out", run - 1)
            delays.append(card.next_restart_at - clock.time())
            await clock.advance(delays[-1])
            await kernel.until(lambda run=run: status(kernel, "flaky").restarts == run)
        await kernel.until(lambda: True)
        published = list(kernel.events)
        shown = received.shown("flaky")
    _, stored = await on_disk(tmp_path)
    sent = Counter(f"working, step {step} of 3" for _ in range(3) for step in (1, 2, 3))
    lost = sum((sent - Counter(shown)).values()) + missing(published, stored)
    tally.record(
        "daemon",
        "crashes after some status updates",
        tries=3,
        outcome="every update shown, then the error; restarted from step 1 after 1, 2, 4 s of backoff",
        lost=lost,
    )
    assert lost == 0
    assert delays == [1, 2, 4], "runs shorter than healthy_after keep growing the backoff"
    assert Flaky.runs == 4 and shown[-1] == "working, step 1 of 3", "the restart starts the work afresh"
    assert [m for m in moves(stored, "flaky") if m[1] is S.BACKOFF] == [(S.RUNNING, S.BACKOFF, Actor.CRASH)] * 3


async def test_a_daemon_that_keeps_hanging_is_restarted_by_the_watchdog_until_fatal(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    clock = FakeClock()
    config = {"hanger": {"watchdog_timeout": 10, "max_restarts": 2, "restart_window": 600}}
    async with running_kernel(
        [Hanger], tmp_path, clock=clock, daemons=config, supervisor={"watchdog_interval": 1}
    ) as kernel:
        await kernel.supervisor.start("hanger")
        cards = []
        for _ in range(2):
            await step_until(kernel, clock, "hanger", S.BACKOFF)
            cards.append(status(kernel, "hanger").snapshot())
            await step_until(kernel, clock, "hanger", S.RUNNING)
        await step_until(kernel, clock, "hanger", S.FATAL)
        final = status(kernel, "hanger").snapshot()
        await kernel.until(lambda: True)
        published = list(kernel.events)
    rows, stored = await on_disk(tmp_path)
    runs = sum(1 for move in moves(stored, "hanger") if move[1] is S.STARTING)
    hangs = [e for e in stored if e.kind == "hung"]
    lost = runs - len(hangs) + missing(published, stored)
    tally.record(
        "daemon",
        "hangs (no heartbeat), every run",
        tries=runs,
        outcome="watchdog records each hang, cancels and restarts it with backoff, then fatal; the card says why",
        lost=lost,
    )
    assert lost == 0
    assert all(e.actor is Actor.WATCHDOG and "no heartbeat for 11 s" in e.message for e in hangs)
    assert [card.restarts for card in cards] == [0, 1]
    assert all("no heartbeat" in (card.last_error or "") and card.next_restart_at is not None for card in cards)
    assert final.state is S.FATAL and final.restarts == 2 and final.last_error == rows["hanger"].last_error
    assert [m for m in moves(stored, "hanger") if m[0] is S.STOPPING] == [
        (S.STOPPING, S.BACKOFF, Actor.WATCHDOG),
        (S.STOPPING, S.BACKOFF, Actor.WATCHDOG),
        (S.STOPPING, S.FATAL, Actor.WATCHDOG),
    ]


async def test_a_daemon_blocking_the_loop_is_named_and_the_others_status_still_arrives(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    daemons = {"blocker": {"block_for": 1.5}, "worker": {"interval": 0.02}}
    async with running_kernel(
        [Blocker, Worker], tmp_path, daemons=daemons, supervisor={"loop_lag_threshold": 0.2}
    ) as kernel:
        await kernel.supervisor.start("worker")
        received = Received(kernel)
        await kernel.supervisor.start("blocker")  # its first status, then 1.5 s of time.sleep on the loop
        blocked = await kernel.until_event(lambda e: e.kind == "loop-blocked")
        rounds = received.round_of("worker")
        # The worker's updates reach a client again once the loop is free.
        await kernel.until(lambda: received.round_of("worker") > rounds + 3)
        assert kernel.state("blocker") is S.RUNNING and status(kernel, "blocker").message == "idle"
        final = (await kernel.supervisor.stop("worker")).snapshot()
        await kernel.until(lambda: received.look().states["worker"].state is S.STOPPED)
    lost = int(received.states["worker"].to_dict() != final.to_dict())
    tally.record(
        "daemon",
        "blocks the event loop for 1.5 s",
        tries=1,
        outcome="loop-lag monitor names the daemon and how long; the other daemon's updates flow on",
        lost=lost,
    )
    assert lost == 0
    assert blocked.daemon == "blocker" and blocked.actor is Actor.WATCHDOG
    # No upper bound: a loaded machine lengthens the block. time.sleep guarantees the lower one.
    assert float(blocked.message.removeprefix("blocked the event loop for ").removesuffix(" s")) >= 1.5


async def test_a_daemon_swallowing_cancellation_past_stop_timeout_is_cancelled_again_until_it_stops(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    # Three cancellations swallowed, stop_timeout (0.2 s of real time: the runner waits on the loop) apart:
    # the fourth ends it. The commands get ample room for a loaded machine and answer once it has ended.
    config = {"stubborn": {"ignore_cancels": 3, "stop_timeout": 0.2}}
    async with running_kernel([Stubborn], tmp_path, daemons=config) as kernel:
        runner = kernel.supervisor.runner("stubborn")
        await runner.start()
        stopped = (await runner.stop(timeout=COMMAND_ROOM)).snapshot()
        live_after_stops = Stubborn.instances.now
        await runner.start()
        restarted = await runner.restart(timeout=COMMAND_ROOM)
        assert restarted.state is S.RUNNING and runner.runs == 3
        await runner.stop(timeout=COMMAND_ROOM)
        live_after_stops += Stubborn.instances.now
        await kernel.until(lambda: True)
        published = list(kernel.events)
    _, stored = await on_disk(tmp_path)
    timeouts = [e for e in stored if e.kind == "stop-timeout"]
    lost = live_after_stops + abs(Stubborn.instances.most - 1) + missing(published, stored)
    tally.record(
        "daemon",
        "swallows cancellation past stop_timeout",
        tries=len(timeouts),
        outcome="cancelled again each stop_timeout until it ends; stopped, error on the card, one instance",
        lost=lost,
    )
    assert lost == 0
    assert stopped.state is S.STOPPED and stopped.last_error == "did not stop within 0.2 s of being cancelled"
    assert [e.actor for e in timeouts] == [Actor.USER] * 3, "the stop, the restart and the last stop"
    assert moves(stored, "stubborn")[2:4] == [(S.RUNNING, S.STOPPING, Actor.USER), (S.STOPPING, S.STOPPED, Actor.USER)]


async def test_a_start_while_the_old_instance_still_ignores_cancellation_never_makes_a_second(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    # Cancelled every 0.1 s, it holds out for 1.2 s: longer than the stop command waits (stop_timeout + 1 s).
    config = {"stubborn": {"ignore_cancels": 12, "stop_timeout": 0.1}}
    async with running_kernel([Stubborn], tmp_path, daemons=config) as kernel:
        await kernel.supervisor.start("stubborn")
        stopping = (await kernel.supervisor.stop("stubborn")).snapshot()
        assert Stubborn.instances.now == 1, "the old instance still runs"
        started = (await kernel.supervisor.start("stubborn")).snapshot()
        await kernel.until(lambda: True)
        published = list(kernel.events)
    _, stored = await on_disk(tmp_path)
    lost = abs(Stubborn.instances.most - 1) + missing(published, stored)
    tally.record(
        "daemon",
        "ignores cancellation longer than a stop waits, then started again",
        tries=1,
        outcome="stop answers in bounded time showing stopping and the error; the start waits for the old instance",
        lost=lost,
    )
    assert lost == 0
    # The stop answered while the daemon still ran, and said so; the start came once the old instance ended.
    assert stopping.state is S.STOPPING and stopping.last_error == "did not stop within 0.1 s of being cancelled"
    assert started.state is S.RUNNING
    assert moves(stored, "stubborn")[2:5] == [
        (S.RUNNING, S.STOPPING, Actor.USER),
        (S.STOPPING, S.STOPPED, Actor.USER),
        (S.STOPPED, S.STARTING, Actor.USER),
    ]


async def test_a_task_the_daemon_left_running_is_named_and_cancelled_when_its_run_ends_but_its_job_is_not(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    Leaky.job_release = release = asyncio.Event()
    async with running_kernel([Leaky], tmp_path) as kernel:
        await kernel.supervisor.start("leaky")
        (job,) = kernel.supervisor.jobs.active()
        alive = [Leaky.tasks.now]
        await kernel.supervisor.restart("leaky")
        alive.append(Leaky.tasks.now)
        assert kernel.supervisor.jobs.active() == [job], "a restart leaves the daemon's job running"
        release.set()
        await kernel.until(lambda: kernel.jobs[job.id].status == "completed")
        await kernel.supervisor.stop("leaky")
        alive.append(Leaky.tasks.now)
        await kernel.until(lambda: True)
        published = list(kernel.events)
    store = await Store.open(tmp_path / "warden.db")
    try:
        lines = await store.logs("leaky", text="left running")
        stored_job = await store.job(job.id)
    finally:
        await store.close()
    _, stored = await on_disk(tmp_path)
    leftovers = [e for e in stored if e.kind == "leftover-tasks"]
    lost = abs(Leaky.tasks.most - 1) + Leaky.tasks.now + missing(published, stored) + int(stored_job is None)
    tally.record(
        "daemon",
        "leaves a task it started running (restart, stop)",
        tries=2,
        outcome="the task is named in the daemon's log and events and cancelled; its job runs on to its result",
        lost=lost,
    )
    assert lost == 0
    assert alive == [1, 1, 0], "one background task per run, none once stopped"
    assert [(e.actor, e.message) for e in leftovers] == [
        (Actor.USER, "cancelled 1 task(s) left running: leaky-background")
    ] * 2
    assert [line.line.fields["tasks"] for line in lines] == [["leaky-background"]] * 2
    assert stored_job is not None and (stored_job["status"], stored_job["result"]) == ("completed", "synced")


async def test_a_stop_ends_the_tasks_the_daemon_left_running_before_the_card_says_stopped(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    async with running_kernel([Leaky], tmp_path) as kernel:
        feed = kernel.hub.subscribe(max_lines=10_000)
        await kernel.supervisor.start("leaky")
        await kernel.supervisor.stop("leaky")
        alive_when_stopped = Leaky.tasks.now
        kernel.hub.flush()
        # Events and log lines in the order they happened.
        lines = [delta.data for delta in feed.take().deltas if delta.kind in ("event", "log")]

    def first(found: Callable[[Event | LogLine], bool]) -> int:
        return next(index for index, line in enumerate(lines) if found(line))

    leftover = first(lambda line: isinstance(line, Event) and line.kind == "leftover-tasks")
    ended = first(lambda line: isinstance(line, LogLine) and line.message == "background task ended")
    stopped = first(lambda line: isinstance(line, Event) and line.to_state is S.STOPPED)
    lost = alive_when_stopped + int(ended > stopped)
    tally.record(
        "daemon",
        "leaves a task running, then stopped",
        tries=1,
        outcome="the task is recorded and ended before the card and the stop command say stopped",
        lost=lost,
    )
    assert lost == 0
    assert leftover < ended < stopped


async def test_a_task_left_running_by_a_crash_is_cancelled_before_the_restart(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    clock = FakeClock()
    config = {"leaky": {"crash": True, "backoff_initial": 1}}
    async with running_kernel([Leaky], tmp_path, clock=clock, daemons=config, supervisor=QUIET_WATCHDOG) as kernel:
        alive_in_backoff = []
        await kernel.supervisor.start("leaky")
        for run in range(1, 4):
            await kernel.until(
                lambda run=run: kernel.state("leaky") is S.BACKOFF and status(kernel, "leaky").restarts == run - 1
            )
            alive_in_backoff.append(Leaky.tasks.now)
            await clock.advance(status(kernel, "leaky").next_restart_at - clock.time())
        await kernel.until(lambda: True)
        published = list(kernel.events)
    _, stored = await on_disk(tmp_path)
    leftovers = [e for e in stored if e.kind == "leftover-tasks"]
    lost = sum(alive_in_backoff) + abs(Leaky.tasks.most - 1) + missing(published, stored)
    tally.record(
        "daemon",
        "crashes leaving a task it started running",
        tries=len(alive_in_backoff),
        outcome="the task is cancelled before the backoff, recorded with actor crash; never two at once",
        lost=lost,
    )
    assert lost == 0
    assert [e.actor for e in leftovers][:3] == [Actor.CRASH] * 3


async def test_the_task_factory_passes_on_the_keywords_newer_pythons_give_it() -> None:
    # From Python 3.13.3 loop.create_task hands the factory name= and context= as keywords (3.14 eager_start=).
    loop = asyncio.get_running_loop()
    track_tasks(loop)
    factory = loop.get_task_factory()
    assert factory is not None
    run_tasks = RunTasks()
    in_run = factory(loop, asyncio.sleep(0), name="in-a-run", context=run_context(run_tasks))
    outside = factory(loop, asyncio.sleep(0), name="detached", context=detached())
    await asyncio.gather(in_run, outside)
    assert isinstance(in_run, asyncio.Task) and isinstance(outside, asyncio.Task)
    assert (in_run.get_name(), outside.get_name()) == ("in-a-run", "detached")
    assert set(run_tasks) == {in_run}


async def test_a_task_left_running_still_ends_with_its_run_after_another_supervisor_on_the_loop_stopped(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    async with contextlib.AsyncExitStack() as first:
        await first.enter_async_context(running_kernel([Worker], tmp_path / "first"))
        async with running_kernel([Leaky], tmp_path / "second") as second:
            await first.aclose()  # the first kernel ends while the second runs on
            await second.supervisor.start("leaky")
            alive_while_running = Leaky.tasks.now
            await second.supervisor.stop("leaky")
            alive_after_stop = Leaky.tasks.now
    lost = abs(alive_while_running - 1) + alive_after_stop
    tally.record(
        "daemon",
        "leaves a task running, on a loop where another supervisor already stopped",
        tries=1,
        outcome="the task is still tracked and cancelled when the daemon stops",
        lost=lost,
    )
    assert lost == 0
