"""The double's scan and generate jobs, step by step as Stash runs them.

Scan walks the given paths for video files (Stash's default extensions), probes each new or
changed file with ffprobe off the event loop, and adds an untitled scene for it, as Stash does. A file ffprobe cannot
read is logged and skipped; a path that does not exist is logged and the job still finishes.
Generate marks the requested assets on the requested scenes (all when none are named).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons.stash.double.jobs import JobBody, JobSteps
from daemons.stash.double.library import Library
from daemons.stash.videos import VideoInfo

# Stash's default video extensions (config key video_extensions).
VIDEO_EXTENSIONS = frozenset(
    {"m4v", "mp4", "mov", "wmv", "avi", "mpg", "mpeg", "rmvb", "rm", "flv", "asf", "mkv", "webm", "f4v"}
)

SCAN_ASSET_FLAGS = {
    "scanGenerateCovers": "covers",
    "scanGeneratePreviews": "previews",
    "scanGenerateImagePreviews": "imagePreviews",
    "scanGenerateSprites": "sprites",
    "scanGeneratePhashes": "phashes",
}
# Image-only flags: accepted, and nothing to do for a library of scenes.
SCAN_IMAGE_FLAGS = frozenset({"scanGenerateThumbnails", "scanGenerateClipPreviews"})

GENERATE_ASSETS = (
    "covers",
    "sprites",
    "previews",
    "imagePreviews",
    "markers",
    "markerImagePreviews",
    "markerScreenshots",
    "transcodes",
    "phashes",
    "interactiveHeatmapsSpeeds",
)
GENERATE_OPTIONS = frozenset({"previewOptions", "forceTranscodes", "imageThumbnails", "clipPreviews", "overwrite"})

_OSHASH_CHUNK = 64 * 1024

Probe = Callable[[Path], VideoInfo | None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class _Found:
    path: str
    info: VideoInfo | None
    oshash: str
    mod_time: int


def scan_job(
    library: Library,
    paths: Iterable[str],
    *,
    assets: frozenset[str],
    rescan: bool,
    min_mod_time: int | None,
    probe: Probe,
    log: Log,
) -> JobBody:
    roots = list(paths)

    async def scan(steps: JobSteps) -> None:
        files = await asyncio.to_thread(_video_files, roots, log)
        for done, path in enumerate(files):
            await steps.step(done, len(files), f"Scanning {path}")
            known = library.scene_at(path)
            stat = await asyncio.to_thread(_stat, path)
            if stat is None:
                log(f"warning: {path}: vanished before it was scanned")
                continue
            if min_mod_time is not None and stat.st_mtime < min_mod_time:
                continue
            unchanged = known is not None and _same_file(known.files[0].mod_time, known.files[0].size, stat)
            if known is not None and unchanged and not rescan:
                library.mark_generated(known.id, set(assets), overwrite=False)
                continue
            found = await asyncio.to_thread(_examine, path, probe)
            if found.info is None:
                log(f"error: {path}: not a video ffprobe can read; skipped")
            elif known is None:
                # Stash creates the scene without a title; clients show the file name instead.
                library.add_scene(path, found.info, oshash=found.oshash, mod_time=found.mod_time, generated=assets)
            else:
                library.replace_file(known.id, found.info, found.mod_time)
                library.mark_generated(known.id, set(assets), overwrite=False)

    return scan


def generate_job(library: Library, scene_ids: list[str] | None, assets: frozenset[str], *, overwrite: bool) -> JobBody:
    async def generate(steps: JobSteps) -> None:
        targets = list(library.scenes) if scene_ids is None else [i for i in scene_ids if i in library.scenes]
        for done, scene_id in enumerate(targets):
            scene = library.scenes.get(scene_id)
            if scene is None:  # deleted while the job ran
                continue
            await steps.step(done, len(targets), f"Generating {', '.join(sorted(assets))} for {scene.path}")
            if scene_id in library.scenes:
                library.mark_generated(scene_id, set(assets), overwrite=overwrite)

    return generate


def scan_assets(given: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(asset for flag, asset in SCAN_ASSET_FLAGS.items() if given.get(flag))


def generate_assets(given: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(asset for asset in GENERATE_ASSETS if given.get(asset))


def oshash(path: str, size: int) -> str:
    """Stash's oshash: the file size plus the 64-bit little-endian words of its first and last 64 KiB."""
    if size == 0:
        return ""
    chunk = min(_OSHASH_CHUNK, size)
    with open(path, "rb") as file:
        head = file.read(chunk)
        file.seek(size - chunk)
        tail = file.read(chunk)
    data = head + tail
    words = struct.unpack(f"<{len(data) // 8}Q", data[: len(data) // 8 * 8])
    return f"{(sum(words) + size) & 0xFFFFFFFFFFFFFFFF:016x}"


def _video_files(roots: list[str], log: Log) -> list[str]:
    found: list[str] = []
    for root in roots:
        if os.path.isfile(root):
            if _is_video(root):
                found.append(root)
        elif os.path.isdir(root):
            for folder, subfolders, names in os.walk(root):
                subfolders.sort()
                found += [os.path.join(folder, name) for name in sorted(names) if _is_video(name)]
        else:
            log(f"warning: {root}: no such file or directory")
    return found


def _is_video(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _same_file(mod_time: int, size: int, stat: os.stat_result) -> bool:
    return mod_time == int(stat.st_mtime) and size == stat.st_size


def _examine(path: str, probe: Probe) -> _Found:
    try:
        info = probe(Path(path))
        return _Found(path, info, oshash(path, info.size) if info else "", int(os.stat(path).st_mtime))
    except OSError:  # the file went away mid-scan
        return _Found(path, None, "", 0)
