"""What the double's library holds: scenes with their video files, tags and scene markers.

Field names follow Stash's GraphQL types, so the generic resolver can read them directly.
Timestamps are whole seconds since the epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(slots=True)
class VideoFile:
    id: str
    path: str
    folder_id: str
    size: int
    duration: float
    width: int
    height: int
    video_codec: str
    audio_codec: str
    frame_rate: float
    bit_rate: int
    format: str
    mod_time: int
    created_at: int
    updated_at: int
    oshash: str
    phash: str | None = None

    @property
    def basename(self) -> str:
        return os.path.basename(self.path)

    @property
    def fingerprints(self) -> list[dict[str, str]]:
        prints = [{"type": "oshash", "value": self.oshash}]
        if self.phash is not None:
            prints.append({"type": "phash", "value": self.phash})
        return prints

    def fingerprint(self, kind: str) -> str | None:
        return {"oshash": self.oshash, "phash": self.phash}.get(kind)


@dataclass(slots=True)
class Scene:
    id: str
    title: str | None
    details: str | None
    organized: bool
    created_at: int
    updated_at: int
    files: list[VideoFile]
    tag_ids: tuple[str, ...] = ()
    generated: frozenset[str] = frozenset()

    @property
    def path(self) -> str:
        return self.files[0].path if self.files else ""


@dataclass(slots=True)
class Tag:
    id: str
    name: str
    created_at: int
    updated_at: int
    sort_name: str | None = None
    description: str | None = None
    aliases: list[str] = field(default_factory=list)
    ignore_auto_tag: bool = False
    favorite: bool = False
    parent_ids: tuple[str, ...] = ()
    child_ids: tuple[str, ...] = ()


@dataclass(slots=True)
class Marker:
    id: str
    scene_id: str
    title: str
    seconds: float
    end_seconds: float | None
    primary_tag_id: str
    tag_ids: tuple[str, ...]
    created_at: int
    updated_at: int
