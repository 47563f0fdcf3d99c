"""A clock whose time moves only when a test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class FakeTimer:
    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self, wall_start: float = 1_800_000_000.0) -> None:
        self._now = 0.0
        self._wall_start = wall_start
        self._timers: list[FakeTimer] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._wall_start + self._now

    def monotonic(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._now + max(delay, 0.0), next(self._order), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def pending(self) -> list[float]:
        """Delays (from now) of the timers still armed, soonest first."""
        return sorted(t.when - self._now for t in self._timers if not t.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in order and letting the loop react to each."""
        target = self._now + seconds
        # A delay read back from a wall-clock timestamp carries float rounding: allow for it.
        while self._timers and self._timers[0].when <= target + 1e-6:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            timer.callback()
            await settle()
        self._now = target
        await settle()


async def settle(turns: int = 50) -> None:
    """Let every ready callback and task step run (no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)
