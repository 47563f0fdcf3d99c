"""download_processor: moves finished downloads into the Stash library and has Stash scan them.

Each cycle lists the completed torrents of a qBittorrent category that carry neither the
synced nor the error tag, hard-links their media files into `destination` (copying across
filesystems; the download itself is never moved or deleted), asks Stash to scan exactly the
files placed, tags the torrents synced, and follows Stash's scan to its end.

Torrents are tagged synced only once Stash has taken the scan request: a cycle cut short
(qBittorrent or Stash down, Warden stopped) leaves them untagged, and the next cycle finds
their files already in place and asks for the scan again. A torrent whose files cannot be
placed safely (a name escaping the destination, a link leading out of the download, a
different file in the way) gets the error tag, and the reason is logged and kept in the job.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from daemons.downloads.files import DestinationError, Placement, UnsafeFile, place, relative_name, select_media
from daemons.qbittorrent.client import QbittorrentClient, QbittorrentError, Torrent
from daemons.stash.client import StashClient, StashError
from daemons.stash.jobs import launch_stash_job
from daemons.stash.videos import VideoToolMissing, probe
from supervisor import Daemon, DaemonConfig
from supervisor.jobs import JobContext

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".avi", ".mov", ".wmv", ".webm", ".flv", ".mpg", ".mpeg", ".ts")
#: Seconds ffprobe gets to read one file's duration.
PROBE_TIMEOUT = 30
#: Seconds Stash gets to confirm a scan that was asked to stop (the job cancelled).
SCAN_STOP_TIMEOUT = 120


class DownloadProcessor(Daemon):
    name = "download_processor"
    title = "Download Processor"
    uses = frozenset({"qbittorrent", "stash", "paths"})
    reloadable = True  # every cycle reads self.config afresh

    class Config(DaemonConfig):
        interval: float = Field(300, ge=1, le=86_400, description="Seconds between checks for completed downloads.")
        category: str | None = Field(
            "stash", description="qBittorrent category whose downloads are processed. Empty: every category."
        )
        synced_tag: str = Field(
            "synced", min_length=1, max_length=100, description="Tag given to a torrent once its files are placed."
        )
        error_tag: str = Field(
            "error_syncing",
            min_length=1,
            max_length=100,
            description="Tag given to a torrent whose files could not be placed; remove it to try again.",
        )
        destination: Path | None = Field(
            None,
            description="Library folder the media files are linked into, keeping each torrent's folders "
            "(absolute, existing, writable; Stash must see it under the same path).",
        )
        extensions: list[str] = Field(
            default_factory=lambda: list(VIDEO_EXTENSIONS), description="File extensions that count as media."
        )
        min_size: int = Field(
            10_000_000, ge=0, description="Smallest media file placed, in bytes: samples and extras are smaller."
        )
        min_duration: float = Field(
            0, ge=0, le=86_400, description="Shortest video placed, in seconds (read with ffprobe). 0: no check."
        )
        scan_after: bool = Field(True, description="Ask Stash to scan the files placed, and follow the scan.")
        poll_interval: float = Field(5, ge=0.05, le=600, description="Seconds between looks at Stash's scan job.")

        @field_validator("category")
        @classmethod
        def _empty_is_every(cls, category: str | None) -> str | None:
            return category.strip() or None if category is not None else None

        @field_validator("synced_tag", "error_tag")
        @classmethod
        def _one_tag(cls, tag: str) -> str:
            tag = tag.strip()
            if not tag or "," in tag:
                raise ValueError("a tag must be non-empty and cannot contain a comma")
            return tag

        @field_validator("destination")
        @classmethod
        def _usable_folder(cls, destination: Path | None) -> Path | None:
            if destination is None:
                return None
            if not destination.is_absolute():
                raise ValueError(f"{destination} is not an absolute path")
            if not destination.is_dir():
                raise ValueError(f"{destination} does not exist or is not a folder")
            if not os.access(destination, os.W_OK | os.X_OK):
                raise ValueError(f"{destination} is not writable")
            return destination

        @field_validator("extensions")
        @classmethod
        def _dotted_lowercase(cls, extensions: list[str]) -> list[str]:
            cleaned = ["." + extension.strip().lower().lstrip(".") for extension in extensions]
            if any(extension == "." or "/" in extension for extension in cleaned):
                raise ValueError("an extension is a few letters, such as .mp4")
            return cleaned

        @model_validator(mode="after")
        def _distinct_tags(self) -> DownloadProcessor.Config:
            if self.synced_tag == self.error_tag:
                raise ValueError("synced_tag and error_tag must differ")
            return self

    config: Config
    qbittorrent: QbittorrentClient

    async def run(self) -> None:
        url = self.settings.qbittorrent.url
        if url is None:
            await self.wait_for_setting("No qBittorrent configured: set qbittorrent.url in warden.yaml")
        if self.config.scan_after and self.settings.stash.url is None:
            await self.wait_for_setting("No Stash server configured: set stash.url, or scan_after: false")
        self.qbittorrent = QbittorrentClient.from_settings(self.settings.qbittorrent)
        try:
            await self.run_cycles(self.cycle, (QbittorrentError, StashError, DestinationError, VideoToolMissing))
        finally:
            self.qbittorrent.close()

    async def cycle(self) -> None:
        config = self.config
        if config.destination is None:
            await self.update_status(
                "No destination set: set daemons.download_processor.destination to the library folder", problem=True
            )
            await self.sleep(config.interval, "waiting for a destination")
            return
        await self.update_status("Checking qBittorrent for new downloads")
        completed = await self.qbittorrent.completed(config.category)
        done = {config.synced_tag, config.error_tag}
        pending = [torrent for torrent in completed if not torrent.tags & done]
        if not pending:
            where = f"in category {config.category}" if config.category else "in any category"
            await self.update_status(f"No new downloads {where}")
            await self.sleep(config.interval, "next check for new downloads")
            return
        await self.update_status(f"Found {len(pending)} new downloads to process")
        result = await self.run_job(
            "process_downloads", "downloads", lambda job: self._process(job, pending, config), max_attempts=1
        )
        if result["scan_job"] is not None:
            scan = await launch_stash_job(
                self,
                "stash_scan",
                f"scan {result['scan_job']}",
                result["scan_job"],
                interval=config.poll_interval,
                stop_timeout=SCAN_STOP_TIMEOUT,
            )
            await self.update_status(
                f"Waiting for Stash to scan {len(result['placed'])} new files", job_id=scan.id, job_type=scan.type
            )
            await self.wait_for_job(scan)
        await self.update_status(_summary(result))
        await self.sleep(config.interval, "next check for new downloads")

    async def _process(self, job: JobContext, torrents: list[Torrent], config: Config) -> dict[str, Any]:
        """The job: place every torrent's media files, ask Stash to scan them, tag the torrents."""
        assert config.destination is not None
        # Clients of the job's own: a job may outlive the daemon run that launched it.
        qbittorrent = QbittorrentClient.from_settings(self.settings.qbittorrent)
        try:
            placed: dict[str, str] = {}  # path → how it got there
            synced: list[Torrent] = []
            failed: dict[str, str] = {}
            for number, torrent in enumerate(torrents, start=1):
                job.progress(
                    done=number - 1,
                    total=len(torrents),
                    message=f"Processing torrent {number}/{len(torrents)}: {torrent.name}",
                )
                try:
                    for path, placement in await self._place(qbittorrent, torrent, config, config.destination):
                        placed[str(path)] = placement
                except UnsafeFile as unsafe:
                    failed[torrent.name] = str(unsafe)
                    self.log.error("torrent not placed: tagged as an error", torrent=torrent.name, reason=str(unsafe))
                    await qbittorrent.add_tag([torrent.hash], config.error_tag)
                    continue
                synced.append(torrent)
            job.progress(done=len(torrents), message="Asking Stash to scan the new files" if placed else None)
            scan_job = await self._request_scan(list(placed)) if placed and config.scan_after else None
            await qbittorrent.add_tag([torrent.hash for torrent in synced], config.synced_tag)
            for torrent in synced:
                self.log.info("torrent placed and tagged", torrent=torrent.name, tag=config.synced_tag)
            return {
                "torrents": len(torrents),
                "synced": [torrent.name for torrent in synced],
                "failed": failed,
                "placed": placed,
                "scan_job": scan_job,
            }
        finally:
            qbittorrent.close()

    async def _place(
        self, qbittorrent: QbittorrentClient, torrent: Torrent, config: Config, destination: Path
    ) -> list[tuple[Path, Placement]]:
        media = select_media(await qbittorrent.files(torrent.hash), config.extensions, config.min_size)
        for file in media:
            relative_name(file.name)  # every name checked before any file is placed
        save_path = Path(torrent.save_path)
        placements = []
        for file in media:
            if config.min_duration and not await self._long_enough(save_path / file.name, config.min_duration):
                continue
            placements.append(await asyncio.to_thread(place, save_path, file.name, destination))
        return placements

    async def _long_enough(self, path: Path, min_duration: float) -> bool:
        info = await asyncio.to_thread(probe, path, timeout=PROBE_TIMEOUT)
        if info is None or info.duration < min_duration:
            reason = "not a readable video" if info is None else f"{info.duration:.1f} s long"
            self.log.info("file left out", file=str(path), reason=reason, min_duration=min_duration)
            return False
        return True

    async def _request_scan(self, paths: list[str]) -> str:
        stash = StashClient.from_settings(self.settings.stash)
        try:
            stash_job = await stash.metadata_scan(paths)
        finally:
            stash.close()
        self.log.info("Stash scan requested", files=len(paths), stash_job=stash_job)
        return stash_job


def _summary(result: dict[str, Any]) -> str:
    placed = list(result["placed"].values())
    counts = [f"{placed.count(kind)} {kind}" for kind in Placement if placed.count(kind)]
    files = ", ".join(counts) if counts else "no media files"
    failed = f"; {len(result['failed'])} failed (tagged as errors)" if result["failed"] else ""
    torrents = result["torrents"]
    return f"Processed {torrents} download{'s' if torrents != 1 else ''}: {files}{failed}"
