"""Small daemons with controllable behaviour, used across the kernel tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from supervisor import Daemon, DaemonConfig, JobContext


@dataclass
class Census:
    """How many of something are alive now, and the most that ever were at once."""

    now: int = 0
    most: int = 0

    @contextmanager
    def one(self) -> Iterator[None]:
        """Counts one alive for the block."""
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            yield
        finally:
            self.now -= 1


class Worker(Daemon):
    """Reports a status, then sleeps visibly in a loop; counts runs and cleanups."""

    name = "worker"
    title = "Worker"
    runs: ClassVar[int] = 0
    cleanups: ClassVar[int] = 0

    class Config(DaemonConfig):
        interval: float = Field(30, ge=0.001, description="Seconds between rounds.")

    async def run(self) -> None:
        type(self).runs += 1
        try:
            round_number = 0
            while True:
                round_number += 1
                await self.update_status(f"Round {round_number}")
                await self.sleep(self.config.interval, "next round")
        finally:
            type(self).cleanups += 1


class Retrier(Daemon):
    """Tries its service every round: while it is down (`service_up`), a problem status; then a sleep.

    A run first waits for `gate` when one is set, so a test can look at a run that reported nothing yet.
    """

    name = "retrier"
    title = "Retrier"
    service_up: ClassVar[bool] = False
    gate: ClassVar[asyncio.Event | None] = None

    async def run(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        while True:
            if self.service_up:
                await self.update_status("Connected to Stash")
            else:
                await self.update_status("Cannot reach Stash: connection refused", problem=True)
            await self.sleep(3600, "next try")


class Crasher(Daemon):
    """Crashes as soon as it starts."""

    name = "crasher"
    title = "Crasher"

    async def run(self) -> None:
        await self.update_status("about to fail")
        raise RuntimeError("boom")


class Quitter(Daemon):
    """Finishes its work and returns."""

    name = "quitter"
    title = "Quitter"

    async def run(self) -> None:
        await self.update_status("done already")


class Hanger(Daemon):
    """Reports once, then waits forever without heartbeats (a hang)."""

    name = "hanger"
    title = "Hanger"

    async def run(self) -> None:
        await self.update_status("waiting on something that never comes")
        await asyncio.Event().wait()


class Flaky(Daemon):
    """Reports `steps` numbered statuses, `interval` seconds apart (on the supervisor's clock), then crashes."""

    name = "flaky"
    title = "Flaky"
    runs: ClassVar[int] = 0

    class Config(DaemonConfig):
        interval: float = Field(10, ge=0.001, description="Seconds of work after each status.")
        steps: int = Field(1, ge=1, description="Statuses reported before the crash.")

    async def run(self) -> None:
        type(self).runs += 1
        for step in range(1, self.config.steps + 1):
            await self.update_status(f"working, step {step} of {self.config.steps}")
            await self.sleep(self.config.interval, "pretending to work")
        raise RuntimeError("worn out")


class Unstartable(Daemon):
    """Raises before its first sign of life, every run (a start-up error)."""

    name = "unstartable"
    title = "Unstartable"
    runs: ClassVar[int] = 0

    async def run(self) -> None:
        type(self).runs += 1
        raise LookupError("library folder /media/missing not found")


class Blocker(Daemon):
    """Blocks the event loop with a synchronous call, once, then idles."""

    name = "blocker"
    title = "Blocker"

    class Config(DaemonConfig):
        block_for: float = Field(0.5, ge=0, description="Seconds of blocking (time.sleep) at start.")

    async def run(self) -> None:
        await self.update_status("about to block the loop")
        time.sleep(self.config.block_for)  # noqa: ASYNC251 -- the bug the loop-lag monitor must name
        await self.update_status("idle")
        await self.sleep(3600, "idle")


class Stubborn(Daemon):
    """Keeps working through cancellation: swallows the first `ignore_cancels` (the misbehaviour under
    test); `instances` counts its live instances."""

    name = "stubborn"
    title = "Stubborn"
    instances: ClassVar[Census] = Census()

    class Config(DaemonConfig):
        ignore_cancels: int = Field(1, ge=0, description="Cancellations swallowed before one is obeyed.")

    async def run(self) -> None:
        ignored = 0
        with self.instances.one():
            while True:
                try:
                    await self.update_status(f"working; ignored {ignored} cancellations")
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if ignored >= self.config.ignore_cancels:
                        raise
                    ignored += 1


class Leaky(Daemon):
    """Starts a background task with asyncio.create_task and never awaits it (the bug under test), then
    idles, or crashes with `crash`. `tasks` counts its background tasks still running. With
    `job_release` set it also launches a job that ends when the event is set."""

    name = "leaky"
    title = "Leaky"
    tasks: ClassVar[Census] = Census()
    job_release: ClassVar[asyncio.Event | None] = None

    class Config(DaemonConfig):
        crash: bool = Field(False, description="Crash right after starting the background task.")

    async def run(self) -> None:
        asyncio.create_task(self._background(), name="leaky-background")  # noqa: RUF006 -- the leak under test
        if self.job_release is not None:
            await self.launch_job("sync", "library", self._job)
        await self.update_status("started a background task")
        if self.config.crash:
            raise RuntimeError("crashed after starting a background task")
        await self.sleep(3600, "idle")

    async def _background(self) -> None:
        with self.tasks.one():
            try:
                await asyncio.sleep(365 * 86_400)  # a timer, not an Event: the loop keeps the task referenced
            finally:
                self.log.info("background task ended")

    async def _job(self, job: JobContext) -> str:
        assert self.job_release is not None
        await self.job_release.wait()
        return "synced"
