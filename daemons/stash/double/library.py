"""The Stash double's library: scenes with their video files, tags and scene markers.

Plain objects in dicts keyed by id. Ids are strings of increasing integers, one sequence per
kind, as Stash's SQLite tables give them. Library timestamps are whole seconds (Stash stores
them so); `version` grows with every change so that cached query results know when to go.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Literal

from daemons.stash.double.records import Marker, Scene, Tag, VideoFile
from daemons.stash.videos import VideoInfo

BulkMode = Literal["SET", "ADD", "REMOVE"]

DEFAULT_VIDEO = VideoInfo(
    size=50_000_000,
    duration=600.0,
    width=1920,
    height=1080,
    video_codec="h264",
    audio_codec="aac",
    frame_rate=30.0,
    bit_rate=666_666,
    format="mp4",
)


class LibraryError(Exception):
    """A change Stash would refuse; the message is what Stash answers."""


_SCENE_CHANGES = frozenset({"title", "details", "organized", "tag_ids"})


class Library:
    def __init__(self, now: Callable[[], float], on_change: Callable[[], None] = lambda: None) -> None:
        self._now = now
        self._on_change = on_change
        self.version = 0
        self.scenes: dict[str, Scene] = {}
        self.tags: dict[str, Tag] = {}
        self.markers: dict[str, Marker] = {}
        self._last_ids = {"scene": 0, "file": 0, "folder": 0, "tag": 0, "marker": 0}
        self._folder_ids: dict[str, str] = {}
        self._folder_paths: dict[str, str] = {}
        self._scene_by_path: dict[str, str] = {}
        self._scenes_by_tag: dict[str, set[str]] = {}
        self._markers_by_scene: dict[str, list[str]] = {}

    def now(self) -> int:
        return math.floor(self._now())

    # Scenes

    def add_scene(
        self,
        path: str,
        video: VideoInfo = DEFAULT_VIDEO,
        *,
        title: str | None = None,
        details: str | None = None,
        organized: bool = False,
        tag_ids: Iterable[str] = (),
        generated: Iterable[str] = (),
        oshash: str | None = None,
        mod_time: int | None = None,
        created_at: int | None = None,
        updated_at: int | None = None,
    ) -> Scene:
        if path in self._scene_by_path:
            raise LibraryError(f"a scene already has the file {path}")
        tags = self._existing_tags(tag_ids)
        now = self.now()
        created = now if created_at is None else created_at
        file = self._new_file(path, video, oshash, mod_time if mod_time is not None else created, created)
        scene = Scene(
            id=self.next_id("scene"),
            title=title,
            details=details,
            organized=organized,
            created_at=created,
            updated_at=created if updated_at is None else updated_at,
            files=[file],
            tag_ids=tags,
        )
        self._index_scene(scene)
        if generated:
            self._apply_assets(scene, set(generated), overwrite=True)
        self._changed()
        return scene

    def update_scene(self, scene_id: str, **changes: object) -> Scene:
        """Apply title/details/organized/tag_ids changes and bump updated_at, as every Stash scene update does."""
        unknown = set(changes) - _SCENE_CHANGES
        if unknown:
            raise TypeError(f"the double cannot change {', '.join(sorted(unknown))} on a scene")
        scene = self.scene(scene_id)
        if "tag_ids" in changes:
            tag_ids = changes.pop("tag_ids")
            assert isinstance(tag_ids, Iterable)
            self._set_tags(scene, self._existing_tags(tag_ids))
        for name, value in changes.items():
            setattr(scene, name, value)
        scene.updated_at = self.now()
        self._changed()
        return scene

    def update_scenes_tags(self, scene_ids: Iterable[str], tag_ids: Iterable[str], mode: BulkMode) -> None:
        scenes = [self.scene(scene_id) for scene_id in scene_ids]
        given = self._existing_tags(tag_ids)
        for scene in scenes:
            if mode == "SET":
                wanted = given
            elif mode == "ADD":
                wanted = scene.tag_ids + tuple(t for t in given if t not in scene.tag_ids)
            else:
                wanted = tuple(t for t in scene.tag_ids if t not in given)
            self._set_tags(scene, wanted)
            scene.updated_at = self.now()
        self._changed()

    def replace_file(self, scene_id: str, video: VideoInfo, mod_time: int) -> Scene:
        """A rescan found the scene's file changed on disk: new probe figures, same file id."""
        scene = self.scene(scene_id)
        old = scene.files[0]
        now = self.now()
        scene.files[0] = replace(old, **asdict(video), mod_time=mod_time, updated_at=now)
        scene.updated_at = now
        self._changed()
        return scene

    def delete_scene(self, scene_id: str) -> None:
        scene = self.scene(scene_id)
        for marker_id in list(self._markers_by_scene.get(scene_id, ())):
            del self.markers[marker_id]
        self._markers_by_scene.pop(scene_id, None)
        self._set_tags(scene, ())
        for file in scene.files:
            self._scene_by_path.pop(file.path, None)
        del self.scenes[scene_id]
        self._changed()

    def mark_generated(self, scene_id: str, assets: set[str], *, overwrite: bool) -> set[str]:
        """Record generated assets (no updated_at bump, as in Stash); returns those newly made."""
        made = self._apply_assets(self.scene(scene_id), assets, overwrite=overwrite)
        if made:
            self._changed()
        return made

    def scene(self, scene_id: str) -> Scene:
        scene = self.scenes.get(str(scene_id))
        if scene is None:
            raise LibraryError(f"scene with id {scene_id} not found")
        return scene

    def scene_at(self, path: str) -> Scene | None:
        scene_id = self._scene_by_path.get(path)
        return None if scene_id is None else self.scenes[scene_id]

    def scene_ids_tagged(self, tag_id: str) -> set[str]:
        return self._scenes_by_tag.get(tag_id, set())

    def markers_of(self, scene_id: str) -> list[Marker]:
        return [self.markers[marker_id] for marker_id in self._markers_by_scene.get(scene_id, ())]

    def folder_path(self, folder_id: str) -> str:
        return self._folder_paths.get(folder_id, "")

    # Tags

    def add_tag(
        self,
        name: str,
        *,
        sort_name: str | None = None,
        description: str | None = None,
        aliases: Iterable[str] = (),
        ignore_auto_tag: bool = False,
        favorite: bool = False,
        parent_ids: Iterable[str] = (),
        child_ids: Iterable[str] = (),
    ) -> Tag:
        name = name.strip()
        if not name:
            raise LibraryError("tag name must not be blank")
        aliases = [alias.strip() for alias in aliases]
        for candidate in [name, *aliases]:
            self._ensure_name_free(candidate)
        parents, children = self._existing_tags(parent_ids), self._existing_tags(child_ids)
        now = self.now()
        tag = Tag(
            id=self.next_id("tag"),
            name=name,
            created_at=now,
            updated_at=now,
            sort_name=sort_name,
            description=description,
            aliases=aliases,
            ignore_auto_tag=ignore_auto_tag,
            favorite=favorite,
            parent_ids=parents,
            child_ids=children,
        )
        self.tags[tag.id] = tag
        for parent_id in parents:
            self.tags[parent_id].child_ids += (tag.id,)
        for child_id in children:
            self.tags[child_id].parent_ids += (tag.id,)
        self._changed()
        return tag

    def tag_descendants(self, tag_ids: Iterable[str], depth: int) -> set[str]:
        """The tags and their children down `depth` levels (-1: all), as hierarchical criteria expand them."""
        found = set(tag_ids)
        frontier = set(found)
        level = 0
        while frontier and (depth < 0 or level < depth):
            frontier = {child for tag_id in frontier if tag_id in self.tags for child in self.tags[tag_id].child_ids}
            frontier -= found
            found |= frontier
            level += 1
        return found

    # Markers

    def add_marker(
        self,
        scene_id: str,
        title: str,
        seconds: float,
        primary_tag_id: str,
        *,
        end_seconds: float | None = None,
        tag_ids: Iterable[str] = (),
    ) -> Marker:
        scene = self.scene(scene_id)
        (primary,) = self._existing_tags([primary_tag_id])
        if end_seconds is not None and end_seconds <= seconds:
            raise LibraryError("end_seconds must be greater than seconds")
        now = self.now()
        marker = Marker(
            id=self.next_id("marker"),
            scene_id=scene.id,
            title=title,
            seconds=seconds,
            end_seconds=end_seconds,
            primary_tag_id=primary,
            tag_ids=self._existing_tags(tag_ids),
            created_at=now,
            updated_at=now,
        )
        self.markers[marker.id] = marker
        self._markers_by_scene.setdefault(scene.id, []).append(marker.id)
        self._changed()
        return marker

    def delete_marker(self, marker_id: str) -> None:
        marker = self.markers.pop(str(marker_id), None)
        if marker is None:
            raise LibraryError(f"scene marker with id {marker_id} not found")
        self._markers_by_scene[marker.scene_id].remove(marker.id)
        self._changed()

    def insert_scenes(self, scenes: list[Scene]) -> None:
        """Add ready-made scenes (ids from `next_id`) in one change; for building large libraries fast."""
        for scene in scenes:
            self._index_scene(scene)
        self._changed()

    # Ids

    def next_id(self, kind: Literal["scene", "file", "folder", "tag", "marker"]) -> str:
        """The next id of its kind: each kind counts up from 1 on its own, like Stash's SQLite tables."""
        self._last_ids[kind] += 1
        return str(self._last_ids[kind])

    def folder_id(self, path: str) -> str:
        known = self._folder_ids.get(path)
        if known is None:
            known = self._folder_ids[path] = self.next_id("folder")
            self._folder_paths[known] = path
        return known

    # Internals

    def _changed(self) -> None:
        self.version += 1
        self._on_change()

    def _new_file(self, path: str, video: VideoInfo, oshash: str | None, mod_time: int, created: int) -> VideoFile:
        return VideoFile(
            id=self.next_id("file"),
            path=path,
            folder_id=self.folder_id(os.path.dirname(path)),
            **asdict(video),
            mod_time=mod_time,
            created_at=created,
            updated_at=created,
            oshash=oshash or hashlib.blake2b(path.encode(), digest_size=8).hexdigest(),
        )

    def _index_scene(self, scene: Scene) -> None:
        self.scenes[scene.id] = scene
        for file in scene.files:
            self._scene_by_path[file.path] = scene.id
        for tag_id in scene.tag_ids:
            self._scenes_by_tag.setdefault(tag_id, set()).add(scene.id)

    def _set_tags(self, scene: Scene, tag_ids: tuple[str, ...]) -> None:
        for tag_id in scene.tag_ids:
            self._scenes_by_tag[tag_id].discard(scene.id)
        scene.tag_ids = tag_ids
        for tag_id in tag_ids:
            self._scenes_by_tag.setdefault(tag_id, set()).add(scene.id)

    def _apply_assets(self, scene: Scene, assets: set[str], *, overwrite: bool) -> set[str]:
        made = set(assets) if overwrite else set(assets) - scene.generated
        if made:
            scene.generated = scene.generated | made
        if "phashes" in made:
            for file in scene.files:
                # A perceptual hash is 64 bits; Stash shows it as 16 hex digits.
                file.phash = hashlib.blake2b(file.oshash.encode(), digest_size=8).hexdigest()
        return made

    def _existing_tags(self, tag_ids: Iterable[object]) -> tuple[str, ...]:
        wanted = tuple(dict.fromkeys(str(tag_id) for tag_id in tag_ids))
        for tag_id in wanted:
            if tag_id not in self.tags:
                raise LibraryError(f"tag with id {tag_id} not found")
        return wanted

    def _ensure_name_free(self, name: str) -> None:
        folded = name.casefold()
        for tag in self.tags.values():
            if tag.name.casefold() == folded:
                raise LibraryError(f"tag with name '{name}' already exists")
            if any(alias.casefold() == folded for alias in tag.aliases):
                raise LibraryError(f"name '{name}' is used as alias for '{tag.name}'")
