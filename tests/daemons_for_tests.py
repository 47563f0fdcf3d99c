"""Small daemons with controllable behaviour, used across the kernel tests."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from pydantic import Field

from supervisor import Daemon, DaemonConfig


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
    """Works for `interval` seconds (on the supervisor's clock), then crashes."""

    name = "flaky"
    title = "Flaky"

    class Config(DaemonConfig):
        interval: float = Field(10, ge=0.001, description="Seconds of work before the crash.")

    async def run(self) -> None:
        await self.update_status("working")
        await self.sleep(self.config.interval, "pretending to work")
        raise RuntimeError("worn out")


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
