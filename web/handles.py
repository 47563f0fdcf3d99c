"""A database handle the web app opens on first use and keeps until it stops.

Not at start: a file that cannot be opened yet (locked, unreadable, written by a newer Warden)
must not keep the page down. The daemons that own the file show that problem and ride it out;
a request that needs the file meanwhile gets a 503 saying why, and the next one tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from aiohttp import web

from supervisor.config import WardenSettings
from web.api import error
from web.keys import WARDEN


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


def opened_on_first_use(
    key: web.AppKey[LazyHandle[H]],
    path_of: Callable[[WardenSettings], Path],
    open_handle: Callable[[Path], Awaitable[H]],
    failures: tuple[type[Exception], ...],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that puts a LazyHandle on the app under `key`, and closes it when the app stops."""

    async def handle(app: web.Application) -> AsyncIterator[None]:
        path = path_of(app[WARDEN].settings)
        app[key] = LazyHandle(lambda: open_handle(path), failures)
        try:
            yield
        finally:
            await app[key].close()

    return handle
