"""Loop-lag monitor: notices when something blocks the event loop, and names the culprit.

A thread watches a timestamp that the loop refreshes; when the loop has not refreshed it
for longer than the threshold, the thread looks up which task is executing (a daemon's
task is named `daemon:<name>`) and, once the loop is free again, reports how long it was
blocked and by whom.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class LoopLagMonitor:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        report: Callable[[str | None, float], None],
        tick: float = 0.05,
    ) -> None:
        self._loop = loop
        self._threshold = threshold
        self._report = report  # called on the loop with (task name or None, seconds blocked)
        self._tick = min(tick, threshold / 2)
        self._last_beat = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="warden-loop-lag", daemon=True)
        self._beat_handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        self._thread.join()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._beat_handle = self._loop.call_later(self._tick, self._beat)

    def _watch(self) -> None:
        culprit: str | None = None
        blocked_since: float | None = None
        while not self._stopped.wait(self._tick):
            silent = time.monotonic() - self._last_beat
            if silent > self._threshold and blocked_since is None:
                blocked_since = self._last_beat
                task = asyncio.current_task(self._loop)  # read from this thread: the loop is stuck in it
                culprit = task.get_name() if task is not None else None
            elif silent <= self._threshold and blocked_since is not None:
                seconds = self._last_beat - blocked_since
                self._loop.call_soon_threadsafe(self._report, culprit, seconds)
                blocked_since = None
                culprit = None
