"""stash_sync: keeps Warden's local scene library in step with Stash.

Incremental runs fetch the scenes updated since the *start* of the last successful run
(minus an overlap, so an edit made while that run was paging is fetched again), sorted by
updated_at. Each request continues after the last updated_at seen instead of asking for
page N, so a scene edited mid-run (which moves to the end of the order) cannot shift an
unseen scene out of reach. A full pass every full_sync_interval also drops scenes deleted
in Stash.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from pydantic import Field

from daemons.stash.base import StashDaemon
from daemons.stash.client import StashClient
from daemons.stash.library import SCENE_FIELDS, SceneLibrary, SceneRecord, SyncMarks, utc_offset, utc_text
from supervisor import DaemonConfig, JobContext, JobFailed, JobStatus

_SECOND = timedelta(seconds=1)
_WIDEST_OFFSET = 14 * 3600  # UTC+14 (Kiribati) is the farthest any zone is from UTC


class StashSync(StashDaemon):
    name = "stash_sync"
    title = "Stash Sync"
    reloadable = True  # every cycle reads self.config afresh

    class Config(DaemonConfig):
        interval: float = Field(300, ge=1, le=86_400, description="Seconds between incremental syncs.")
        full_sync_interval: float = Field(
            86_400,
            ge=60,
            le=30 * 86_400,
            description="Seconds between full passes, which re-read every scene and drop those deleted in Stash.",
        )
        page_size: int = Field(500, ge=10, le=5000, description="Scenes fetched from Stash per request.")
        overlap: float = Field(
            3600,
            ge=1,
            le=86_400,
            description="Seconds before the previous run's start from which scenes are fetched again: covers "
            "clock skew between Warden and Stash, and daylight-saving changes (Stash compares its times as text).",
        )

    config: Config

    async def cycle(self) -> None:
        config = self.config
        started = self.context.clock.time()
        since = self._since(await self.library.marks(), started)
        await self.update_status("Checking for scenes to sync from Stash")
        total, _ = await self.stash.find_scenes(_changed_since(since), "id", per_page=1)
        full = since is None
        if since is None:
            await self.update_status(f"Full sync of {total:,} scenes from Stash")
        elif total:
            await self.update_status(f"Syncing {total:,} scenes changed since {utc_text(since)} from Stash")
        else:
            await self.library.save_sync(started, full=False, server=self.stash.url)
            await self.update_status(f"No scenes changed in Stash since {utc_text(since)}")
            await self.sleep(config.interval, "next sync")
            return
        sync = functools.partial(self._sync, started=started, since=since, expected=total, full=full)
        try:
            result = await self.run_job("stash_sync", "scenes", sync)
        except JobFailed as failed:
            if failed.job.status is not JobStatus.CANCELLED:
                raise
            await self.update_status("Sync cancelled; the next one starts on schedule")
            await self.sleep(config.interval, "next sync")
            return
        removed = f", {result['removed']:,} deleted in Stash removed" if full else ""
        await self.update_status(f"Sync completed for {result['synced']:,} scenes{removed}")
        self.log.info("sync completed", **result)
        await self.sleep(config.interval, "next sync")

    def _since(self, marks: SyncMarks, now: float) -> datetime | None:
        """Where an incremental run starts; None when a full pass is due (also for another server)."""
        if marks.last_started is None or marks.last_full is None or marks.server != self.stash.url:
            return None
        if now - marks.last_full >= self.config.full_sync_interval:
            return None
        since = marks.last_started - self.config.overlap
        if marks.stash_offset is None:
            # Stash's zone is unknown until a scene was read, and its filters compare text in that
            # zone: reach back as far as any zone could be off, and fetch a little more than needed.
            return datetime.fromtimestamp(int(since - _WIDEST_OFFSET), UTC)
        return datetime.fromtimestamp(int(since), timezone(timedelta(seconds=marks.stash_offset)))

    async def _sync(
        self, job: JobContext, *, started: float, since: datetime | None, expected: int, full: bool
    ) -> dict[str, Any]:
        async with self.own_resources() as (stash, library):
            synced: set[str] = set()
            total = expected
            stash_offset = None
            job.progress(done=0, total=total, message=f"Synced 0/{total:,} scenes")
            async for page in self._pages(stash, since):
                stash_offset = utc_offset(page[-1].stash_updated_at)
                await library.upsert(page, seen_at=started)
                synced.update(scene.id for scene in page)
                total = max(total, len(synced))  # scenes added while the run pages
                job.progress(done=len(synced), total=total, message=f"Synced {len(synced):,}/{total:,} scenes")
            removed = await self._remove_deleted(stash, library, started, len(synced)) if full else 0
            await library.save_sync(started, full=full, stash_offset=stash_offset, server=stash.url)
        return {"synced": len(synced), "removed": removed, "full": full}

    async def _remove_deleted(self, stash: StashClient, library: SceneLibrary, started: float, seen: int) -> int:
        """After a full pass: drop the scenes it did not see, unless it saw fewer than Stash has."""
        in_stash, _ = await stash.find_scenes({}, "id", per_page=1)
        if seen < in_stash:
            self.log.warning("full pass saw fewer scenes than Stash has; nothing removed", seen=seen, in_stash=in_stash)
            return 0
        return await library.remove_unseen(started)

    async def _pages(self, stash: StashClient, since: datetime | None) -> AsyncIterator[list[SceneRecord]]:
        """Every scene updated after `since`, oldest first, page by page.

        Always page 1 of "updated after the last second seen", never page N: a scene edited
        mid-run leaves its place in the order, which would shift an unseen one onto a page
        already read. Scenes of one second that overflow a page are read in id order instead.
        """
        scene_filter = _changed_since(since)
        boundary: set[str] = set()  # ids already read in the second the next request starts at
        while True:
            records, fresh = await self._page(stash, scene_filter, "updated_at", boundary)
            if fresh:
                yield fresh
            if len(records) < self.config.page_size:
                return
            last = _stash_time(records[-1])
            in_last = {record.id for record in records if _stash_time(record) == last}
            if len(in_last) == len(records):  # one second fills the page: read that second by id
                async for page in self._one_second(stash, last, boundary | in_last):
                    yield page
                scene_filter, boundary = _changed_since(last), set()
            else:
                # `> last - 1 s` is `>= last` at Stash's one-second precision.
                scene_filter, boundary = _changed_since(last - _SECOND), in_last

    async def _one_second(
        self, stash: StashClient, second: datetime, seen: set[str]
    ) -> AsyncIterator[list[SceneRecord]]:
        """The scenes updated within `second` not in `seen`, in id order (ids never move)."""
        after = 0
        while True:
            scene_filter = {
                **_changed_since(second - _SECOND),
                "AND": {
                    "updated_at": {"value": _as_stash_writes(second + _SECOND), "modifier": "LESS_THAN"},
                    "id": {"value": after, "modifier": "GREATER_THAN"},
                },
            }
            records, fresh = await self._page(stash, scene_filter, "id", seen)
            if fresh:
                yield fresh
            if len(records) < self.config.page_size:
                return
            after = max(int(record.id) for record in records)

    async def _page(
        self, stash: StashClient, scene_filter: dict[str, Any], sort: str, seen: set[str]
    ) -> tuple[list[SceneRecord], list[SceneRecord]]:
        """One request: every record it returned, and those not in `seen`."""
        _, scenes = await stash.find_scenes(scene_filter, SCENE_FIELDS, per_page=self.config.page_size, sort=sort)
        records = [SceneRecord.from_stash(scene) for scene in scenes]
        return records, [record for record in records if record.id not in seen]


def _stash_time(record: SceneRecord) -> datetime:
    """The record's updated_at in Stash's own zone."""
    return datetime.fromisoformat(record.stash_updated_at)


def _as_stash_writes(moment: datetime) -> str:
    """A time as Stash stores it (RFC 3339 in its own zone, Z for UTC): Stash compares a
    timestamp filter with the stored text, not as instants."""
    text = moment.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def _changed_since(since: datetime | None) -> dict[str, Any]:
    if since is None:
        return {}
    return {"updated_at": {"value": _as_stash_writes(since), "modifier": "GREATER_THAN"}}
