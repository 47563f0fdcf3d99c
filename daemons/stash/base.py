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
from supervisor import Daemon, JobFailed
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
            # Only when Warden is embedded without its demo Stash; setting stash.url restarts the daemon.
            await self.update_status("No Stash server configured: set stash.url in warden.yaml", problem=True)
            while True:
                await self.sleep(86_400, "waiting for stash.url to be set")
        self.stash = self.new_client()
        try:
            self.library = await self._open_library()
            try:
                await self._cycles()
            finally:
                await self.library.close()
        finally:
            self.stash.close()

    def new_client(self) -> StashClient:
        settings = self.settings.stash
        assert settings.url is not None
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        return StashClient(settings.url, api_key, settings.timeout)

    @asynccontextmanager
    async def own_resources(self) -> AsyncIterator[tuple[StashClient, SceneLibrary]]:
        """A Stash client and a library handle for a job: a job may outlive the daemon run that
        launched it (a restart, or a stop with cancel_jobs_on_stop off), so it never borrows the run's."""
        stash = self.new_client()
        try:
            library = await SceneLibrary.open(library_path(self.settings))
            try:
                yield stash, library
            finally:
                await library.close()
        finally:
            stash.close()

    async def _cycles(self) -> None:
        failures = 0
        while True:
            try:
                await self.cycle()
            except (StashError, LibraryError) as error:
                failures += 1
                await self.wait_out(str(error), failures)
            except JobFailed as failed:  # a job that kept failing (its transient errors were retried already)
                failures += 1
                await self.wait_out(f"the {failed.job.type} job failed: {failed.job.error}", failures)
            else:
                failures = 0

    async def _open_library(self) -> SceneLibrary:
        failures = 0
        while True:
            try:
                return await SceneLibrary.open(library_path(self.settings))
            except LibraryError as error:
                failures += 1
                await self.wait_out(str(error), failures)
