"""A wake-up for everyone waiting on the double's state: jobs, the library, requests served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Changes:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every waiter to look again; synchronous, so plain library code can call it."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, condition: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once `condition()` holds; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not condition():
                await self._event.wait()
