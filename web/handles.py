"""A database handle the web app opens on first use and keeps until it stops.

Not at start: a file that cannot be opened yet (locked, unreadable, written by a newer Warden)
must not keep the page down. The daemons that own the file show that problem and ride it out;
a request that needs the file meanwhile gets a 503 saying why, and the next one tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from aiohttp import web

from web.api import error


class Closable(Protocol):
    async def close(self) -> None: ...


H = TypeVar("H", bound=Closable)


class LazyHandle(Generic[H]):
    def __init__(self, open_handle: Callable[[], Awaitable[H]], failures: tuple[type[Exception], ...]) -> None:
        self._open = open_handle
        self._failures = failures
        self._handle: H | None = None
        self._opening = asyncio.Lock()  # two first requests at once open one handle

    async def get(self) -> H:
        """The open handle; a 503 with the reason when it cannot be opened now."""
        async with self._opening:
            if self._handle is None:
                try:
                    self._handle = await self._open()
                except self._failures as failure:
                    raise error(web.HTTPServiceUnavailable, str(failure)) from None
            return self._handle

    async def close(self) -> None:
        async with self._opening:
            if self._handle is not None:
                await self._handle.close()
                self._handle = None
