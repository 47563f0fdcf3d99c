"""download_processor: moves finished downloads into the Stash library and has Stash scan them.

Each cycle lists the completed torrents of a qBittorrent category that carry neither the
synced nor the error tag, hard-links their media files into `destination` (copying across
filesystems; the download itself is never moved or deleted), asks Stash to scan exactly the
files placed, follows that scan to its end, and only then tags the torrents synced.

A cycle cut short (qBittorrent or Stash down, a scan failed or stopped, Warden stopped)
leaves the torrents untagged, and the next cycle finds their files already in place and asks
for the scan again. A torrent whose files cannot be placed safely (a name escaping the
destination, a link leading out of the download, a different file in the way) gets the error
tag, and the reason is logged, shown and kept in the job; its names and sources are all
checked before any of its files is placed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from daemons.downloads.files import Placement, UnsafeFile, place, select_media, source_of
from daemons.qbittorrent.client import QbittorrentClient, QbittorrentError, QbittorrentNotFound, Torrent
from daemons.stash.client import StashClient
from daemons.stash.jobs import launch_stash_job
from daemons.stash.videos import probe
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
            if category is None or not category.strip():
                return None
            return category.strip()

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
            try:
                folder, writable = destination.is_dir(), os.access(destination, os.W_OK | os.X_OK)
            except OSError as error:  # e.g. a name longer than the filesystem allows
                raise ValueError(f"{destination} cannot be used: {error.strerror}") from None
            if not folder:
                raise ValueError(f"{destination} does not exist or is not a folder")
            if not writable:
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
        if self.settings.qbittorrent.url is None:
            await self.wait_for_setting("No qBittorrent configured: set qbittorrent.url in warden.yaml")
        if self.settings.stash.url is None:
            await self.wait_for_setting(
                "No Stash server configured: set stash.url, or scan_after: false",
                until=lambda: not self.config.scan_after,
            )
        self.qbittorrent = QbittorrentClient.from_settings(self.settings.qbittorrent)
        try:
            await self.run_cycles(self.cycle, (QbittorrentError,))
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
        # Settled torrents only: one being checked, moved or missing its files is looked at next time.
        pending = [torrent for torrent in completed if not torrent.tags & done and torrent.at_rest]
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
            await self.wait_for_job(scan)  # a scan that fails or is stopped leaves the torrents untagged
        await self.qbittorrent.add_tag(result["synced"], config.synced_tag)
        self.log.info("torrents placed and tagged", torrents=len(result["synced"]), tag=config.synced_tag)
        await self.update_status(_summary(result, config.error_tag))
        await self.sleep(config.interval, "next check for new downloads")

    async def _process(self, job: JobContext, torrents: list[Torrent], config: Config) -> dict[str, Any]:
        """The job: place every torrent's media files (error-tagging those that cannot be), ask Stash to scan them.

        The torrents placed are tagged synced by the daemon once Stash has scanned their files.
        """
        assert config.destination is not None
        # A client of the job's own: a job may outlive the daemon run that launched it.
        qbittorrent = QbittorrentClient.from_settings(self.settings.qbittorrent)
        try:
            placed: dict[str, str] = {}  # path → how it got there
            synced: list[str] = []
            failed: dict[str, str] = {}
            gone: list[str] = []
            for number, torrent in enumerate(torrents, start=1):
                message = f"Processing torrent {number}/{len(torrents)}: {torrent.name}"
                job.progress(done=number - 1, total=len(torrents), message=message)
                try:
                    for path, placement in await self._place(qbittorrent, torrent, config, config.destination):
                        placed[str(path)] = placement
                except UnsafeFile as unsafe:
                    failed[torrent.name] = str(unsafe)
                    self.log.error("torrent not placed: tagged as an error", torrent=torrent.name, reason=str(unsafe))
                    await qbittorrent.add_tag([torrent.hash], config.error_tag)
                    continue
                except QbittorrentNotFound:
                    # Removed in qBittorrent after the listing: nothing of it was placed; the others go on.
                    gone.append(torrent.name)
                    self.log.info("torrent removed from qBittorrent before it was processed", torrent=torrent.name)
                    continue
                synced.append(torrent.hash)
            job.progress(done=len(torrents), message="Asking Stash to scan the new files" if placed else None)
            scan_job = await self._request_scan(list(placed)) if placed and config.scan_after else None
            return {
                "torrents": len(torrents),
                "synced": synced,
                "failed": failed,
                "gone": gone,
                "placed": placed,
                "scan_job": scan_job,
            }
        finally:
            qbittorrent.close()

    async def _place(
        self, qbittorrent: QbittorrentClient, torrent: Torrent, config: Config, destination: Path
    ) -> list[tuple[Path, Placement]]:
        """Place the torrent's media files; every one is checked (and probed) before any is placed."""
        save_path = Path(torrent.save_path)
        media = select_media(await qbittorrent.files(torrent.hash), config.extensions, config.min_size)
        wanted = []
        for file in media:
            source, _ = await asyncio.to_thread(source_of, save_path, file.name)
            if not config.min_duration or await self._long_enough(source, file.name, config.min_duration):
                wanted.append(file.name)
        return [await asyncio.to_thread(place, save_path, name, destination) for name in wanted]

    async def _long_enough(self, source: Path, name: str, min_duration: float) -> bool:
        info = await asyncio.to_thread(probe, source, timeout=PROBE_TIMEOUT)
        if info is None:
            raise UnsafeFile(f"{name}: ffprobe cannot read it as a video (within {PROBE_TIMEOUT} s)")
        if info.duration < min_duration:
            self.log.info("file left out: too short", file=name, seconds=round(info.duration, 1))
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


def _summary(result: dict[str, Any], error_tag: str) -> str:
    placed = list(result["placed"].values())
    counts = [f"{placed.count(kind)} {kind}" for kind in Placement if placed.count(kind)]
    files = ", ".join(counts) if counts else "no media files"
    torrents = result["torrents"]
    summary = f"Processed {torrents} download{'s' if torrents != 1 else ''}: {files}"
    if result["failed"]:
        name, reason = next(iter(result["failed"].items()))
        summary += f"; {len(result['failed'])} failed, tagged {error_tag} (first: {name}: {reason})"
    if result["gone"]:
        summary += f"; {len(result['gone'])} removed from qBittorrent meanwhile (first: {result['gone'][0]})"
    return summary
