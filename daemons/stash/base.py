"""StashDaemon: what every daemon working on the Stash library shares.

It opens the Stash client and the local scene library for the run, calls the daemon's
`cycle()` forever, and turns a Stash failure (unreachable, refusing the key, answering
nonsense) into a visible problem and a retry with backoff: an outage never crashes the
daemon into `fatal`, and never looks like "nothing to do".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar

from daemons.stash.client import StashClient, StashError
from daemons.stash.library import LibraryError, SceneLibrary
from supervisor import Daemon
from supervisor.config import WardenSettings


def library_path(settings: WardenSettings) -> Path:
    return settings.paths.data_dir / "library.db"


class StashDaemon(Daemon):
    uses: ClassVar[frozenset[str]] = frozenset({"stash", "paths"})
    stash: StashClient
    library: SceneLibrary

    async def cycle(self) -> None:
        """One round of work, ending with the daemon's visible sleep until the next.

        Raise a StashError, or let a job's JobFailed through, to show the problem and retry with backoff.
        """
        raise NotImplementedError

    async def run(self) -> None:
        settings = self.settings.stash
        if settings.url is None:
            # Only when Warden is embedded without its demo Stash.
            await self.wait_for_setting("No Stash server configured: set stash.url in warden.yaml")
        self.stash = StashClient.from_settings(settings)
        try:
            path = library_path(self.settings)
            self.library = await self.keep_trying(lambda: SceneLibrary.open(path), (LibraryError,))
            try:
                await self.run_cycles(self.cycle, (StashError, LibraryError))
            finally:
                await self.library.close()
        finally:
            self.stash.close()

    @asynccontextmanager
    async def own_resources(self) -> AsyncIterator[tuple[StashClient, SceneLibrary]]:
        """A Stash client and a library handle for a job: a job may outlive the daemon run that
        launched it (a restart, or a stop with cancel_jobs_on_stop off), so it never borrows the run's."""
        stash = StashClient.from_settings(self.settings.stash)
        try:
            library = await SceneLibrary.open(library_path(self.settings))
            try:
                yield stash, library
            finally:
                await library.close()
        finally:
            stash.close()
