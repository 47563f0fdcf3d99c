"""disk_space: watches the free space of the folders Warden and the library live on."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from pydantic import Field

from supervisor import Daemon, DaemonConfig


class DiskSpace(Daemon):
    name = "disk_space"
    title = "Disk Space"
    reloadable = True  # it reads self.config afresh on every check
    uses = frozenset({"paths"})

    class Config(DaemonConfig):
        paths: list[Path] = Field(
            default_factory=list, description="Folders to watch. Empty: Warden's data folder (paths.data_dir)."
        )
        min_free_percent: float = Field(5, ge=0, le=100, description="Warn when free space falls below this share.")
        interval: float = Field(60, ge=1, le=86_400, description="Seconds between checks.")

    async def run(self) -> None:
        low: set[Path] = set()
        while True:
            folders = self.config.paths or [self.settings.paths.data_dir]
            await self.update_status(f"Checking free space of {len(folders)} folder(s)")
            reports = []
            for folder in folders:
                try:
                    usage = await asyncio.to_thread(shutil.disk_usage, folder)
                except OSError as error:
                    reports.append(f"{folder}: unreadable ({error.strerror})")
                    self.log.error("cannot read disk usage", folder=str(folder), error=error.strerror)
                    continue
                percent = 100 * usage.free / usage.total if usage.total else 0.0
                reports.append(f"{folder}: {_size(usage.free)} free of {_size(usage.total)} ({percent:.1f}%)")
                if percent < self.config.min_free_percent and folder not in low:
                    low.add(folder)
                    self.log.warning("low disk space", folder=str(folder), free_percent=round(percent, 1))
                elif percent >= self.config.min_free_percent and folder in low:
                    low.discard(folder)
                    self.log.info("disk space back above the limit", folder=str(folder), free_percent=round(percent, 1))
            await self.update_status("; ".join(reports))
            await self.sleep(self.config.interval, "next disk space check")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
