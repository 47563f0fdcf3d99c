"""Time, injectable: every timer in Warden goes through a Clock so tests can move time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (shown to people, stored)."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals (backoff, heartbeats)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the event loop after `delay` seconds unless cancelled first."""


class SystemClock:
    """The real clock, backed by the running event loop's timers."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)


async def sleep(clock: Clock, seconds: float, wake: asyncio.Future[bool] | None = None) -> bool:
    """Sleep `seconds` on `clock`. Returns True when `wake` was resolved first (cut short)."""
    done: asyncio.Future[bool] = wake if wake is not None else asyncio.get_running_loop().create_future()

    def timed_out() -> None:
        if not done.done():
            done.set_result(False)

    timer = clock.call_later(seconds, timed_out)
    try:
        return await done
    finally:
        timer.cancel()
