"""findScenes, findTags and findSceneMarkers over the double's library: filter, sort, page.

Ordering follows Stash's SQL: the requested sort, then COALESCE(title, id) in natural
case-insensitive order as the final tie-break (Stash appends it to every scene sort), then id.
Sorted orders and filtered results are cached until the library changes, so paging through
100,000 scenes does not sort them again for every page.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, TypeVar

from daemons.stash.double.criteria import (
    AllOf,
    Criterion,
    FilterField,
    IdSet,
    QueryError,
    Words,
    compile_filter,
    search_words,
)
from daemons.stash.double.library import Library
from daemons.stash.double.records import Marker, Scene, Tag, VideoFile
from daemons.stash.double.times import is_relative, parse_timestamp, text_position

T = TypeVar("T")

DEFAULT_PER_PAGE = 25
_CACHED_RESULTS = 32
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Page:
    """FindFilterType with Stash's defaults: page 1, 25 per page, a negative per_page means all."""

    q: str | None = None
    page: int = 1
    per_page: int | None = DEFAULT_PER_PAGE
    sort: str | None = None
    descending: bool = False

    @classmethod
    def from_input(cls, given: Mapping[str, Any] | None) -> Page:
        given = given or {}
        per_page = given.get("per_page")
        return cls(
            q=given.get("q") or None,
            page=max(given.get("page") or 1, 1),
            per_page=DEFAULT_PER_PAGE if per_page is None else (None if per_page < 0 else per_page),
            sort=given.get("sort") or None,
            descending=given.get("direction") == "DESC",
        )

    def take(self, items: Sequence[T]) -> list[T]:
        if self.per_page is None:
            return list(items)
        start = (self.page - 1) * self.per_page
        return list(items[start : start + self.per_page])


@dataclass(frozen=True)
class SceneResult:
    count: int
    duration: float
    filesize: float
    scenes: list[Scene]


@dataclass(frozen=True)
class _Matches:
    scenes: list[Scene]
    duration: float
    filesize: float


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Stash's NATURAL_CI collation: case-insensitive, runs of digits compared as numbers."""
    parts = _DIGITS.split(text.casefold())
    return tuple((0, int(part), "") if i % 2 else (1, 0, part) for i, part in enumerate(parts) if part)


class Search:
    def __init__(self, library: Library, zone: tzinfo, now: Callable[[], float]) -> None:
        self._library = library
        self._zone = zone
        self._now = now
        self._version = -1
        self._orders: dict[tuple[str, bool], list[Scene]] = {}
        self._results: OrderedDict[tuple[object, ...], _Matches] = OrderedDict()
        self._natural: dict[str, tuple[tuple[int, int, str], ...]] = {}
        self._scene_sorts = self._make_scene_sorts()
        self._scene_fields = self._make_scene_fields()
        self._tag_fields = self._make_tag_fields()
        self._marker_fields = self._make_marker_fields()

    # Scenes

    def find_scenes(
        self, scene_filter: Mapping[str, Any] | None, page: Page, ids: Iterable[object] | None = None
    ) -> SceneResult:
        criterion = self._compile(scene_filter, self._scene_fields, "scene_filter")
        if page.q:
            criterion = AllOf((criterion, Words(_scene_texts, search_words(page.q))))
        if ids is not None:
            criterion = AllOf((criterion, _only_ids(ids)))
        sort = page.sort or "id"
        if sort not in self._scene_sorts:
            known = ", ".join(self._scene_sorts)
            raise QueryError(f"sort '{sort}' is not supported by the Stash double (it knows {known})")
        matches = self._matching_scenes(criterion, sort, page.descending)
        return SceneResult(len(matches.scenes), matches.duration, matches.filesize, page.take(matches.scenes))

    def _matching_scenes(self, criterion: Criterion, sort: str, descending: bool) -> _Matches:
        self._forget_if_changed()
        key = (criterion, sort, descending)
        found = self._results.get(key)
        if found is None:
            scenes = [scene for scene in self._scene_order(sort, descending) if criterion.matches(scene)]
            files = [scene.files[0] for scene in scenes if scene.files]
            found = _Matches(scenes, sum(f.duration for f in files), float(sum(f.size for f in files)))
            self._results[key] = found
            if len(self._results) > _CACHED_RESULTS:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(key)
        return found

    def _scene_order(self, sort: str, descending: bool) -> list[Scene]:
        order = self._orders.get((sort, descending))
        if order is None:
            tie_broken = self._orders.get(("", False))
            if tie_broken is None:
                tie_broken = self._tie_broken_scenes()
                self._orders[("", False)] = tie_broken
            # Stable sorts, even reversed, keep the ascending tie-break among equal keys.
            order = sorted(tie_broken, key=self._scene_sorts[sort], reverse=descending)
            self._orders[(sort, descending)] = order
        return order

    def _tie_broken_scenes(self) -> list[Scene]:
        """Scenes in Stash's final order, COALESCE(title, id) natural case-insensitive, then by id."""
        scenes = list(self._library.scenes.values())
        names = [scene.title if scene.title is not None else scene.id for scene in scenes]
        # Rank the distinct names once, then sort plain integers: far faster than comparing tuples.
        rank = {name: i for i, name in enumerate(sorted(set(names), key=self._natural_key))}
        span = 1 + max((int(scene.id) for scene in scenes), default=0)
        keys = [rank[name] * span + int(scene.id) for name, scene in zip(names, scenes, strict=True)]
        return [scenes[i] for i in sorted(range(len(scenes)), key=keys.__getitem__)]

    def _natural_key(self, text: str) -> tuple[tuple[int, int, str], ...]:
        key = self._natural.get(text)
        if key is None:
            key = self._natural[text] = natural_key(text)
        return key

    def _forget_if_changed(self) -> None:
        if self._library.version != self._version:
            self._version = self._library.version
            self._orders.clear()
            self._results.clear()

    # Tags

    def find_tags(self, tag_filter: Mapping[str, Any] | None, page: Page, ids: Iterable[object] | None) -> list[Tag]:
        criterion = self._compile(tag_filter, self._tag_fields, "tag_filter")
        if page.q:
            criterion = AllOf((criterion, Words(lambda tag: (tag.name, *tag.aliases), search_words(page.q))))
        if ids is not None:
            criterion = AllOf((criterion, _only_ids(ids)))
        sorts: dict[str, Callable[[Tag], Any]] = {
            "name": lambda tag: self._natural_key(tag.name),
            "id": lambda tag: int(tag.id),
            "created_at": lambda tag: tag.created_at,
            "updated_at": lambda tag: tag.updated_at,
            "scenes_count": lambda tag: len(self._library.scene_ids_tagged(tag.id)),
        }
        return self._sorted([t for t in self._library.tags.values() if criterion.matches(t)], page, "name", sorts)

    # Markers

    def find_markers(
        self, marker_filter: Mapping[str, Any] | None, page: Page, ids: Iterable[object] | None
    ) -> list[Marker]:
        criterion = self._compile(marker_filter, self._marker_fields, "scene_marker_filter")
        if page.q:
            criterion = AllOf((criterion, Words(lambda marker: (marker.title,), search_words(page.q))))
        if ids is not None:
            criterion = AllOf((criterion, _only_ids(ids)))
        sorts: dict[str, Callable[[Marker], Any]] = {
            "id": lambda marker: int(marker.id),
            "title": lambda marker: self._natural_key(marker.title),
            "seconds": lambda marker: marker.seconds,
            "created_at": lambda marker: marker.created_at,
            "updated_at": lambda marker: marker.updated_at,
        }
        markers = [m for m in self._library.markers.values() if criterion.matches(m)]
        return self._sorted(markers, page, "id", sorts)

    # Shared

    def _sorted(self, items: list[T], page: Page, default: str, sorts: Mapping[str, Callable[[T], Any]]) -> list[T]:
        sort = page.sort or default
        if sort not in sorts:
            raise QueryError(f"sort '{sort}' is not supported by the Stash double (it knows {', '.join(sorts)})")
        items.sort(key=lambda item: int(getattr(item, "id")))  # noqa: B009 - tags and markers alike
        items.sort(key=sorts[sort], reverse=page.descending)
        return items

    def _compile(self, given: Mapping[str, Any] | None, fields: Mapping[str, FilterField], where: str) -> Criterion:
        return compile_filter(given, fields, where, self._parse_time, self._day_ahead)

    def _parse_time(self, text: str) -> float:
        if is_relative(text):
            return parse_timestamp(text, now=self._now(), zone=self._zone)
        return text_position(text, self._zone)

    def _day_ahead(self) -> int:
        # Stash's BETWEEN without value2 reaches to a day from now.
        return int(self._now()) + 86400

    def _make_scene_sorts(self) -> dict[str, Callable[[Scene], Any]]:
        natural, folder_path = self._natural_key, self._library.folder_path

        def title(scene: Scene) -> tuple[object, ...]:
            # Stash: COALESCE(title, basename), then the folder path.
            file = scene.files[0] if scene.files else None
            name = scene.title if scene.title is not None else (file.basename if file else "")
            return (natural(name), natural(folder_path(file.folder_id) if file else ""))

        def of_file(read: Callable[[VideoFile], Any]) -> Callable[[Scene], Any]:
            return lambda scene: read(scene.files[0]) if scene.files else 0

        return {
            "id": lambda scene: int(scene.id),
            "title": title,
            "path": lambda scene: natural(scene.path),
            "created_at": lambda scene: scene.created_at,
            "updated_at": lambda scene: scene.updated_at,
            "organized": lambda scene: scene.organized,
            "tag_count": lambda scene: len(scene.tag_ids),
            "duration": of_file(lambda file: file.duration),
            "filesize": of_file(lambda file: file.size),
            "bitrate": of_file(lambda file: file.bit_rate),
            "framerate": of_file(lambda file: file.frame_rate),
            "file_mod_time": of_file(lambda file: file.mod_time),
        }

    def _make_scene_fields(self) -> dict[str, FilterField]:
        library = self._library
        return {
            "id": FilterField("int", lambda scene: int(scene.id)),
            "title": FilterField("text", lambda scene: scene.title),
            "details": FilterField("text", lambda scene: scene.details),
            "path": FilterField("text", lambda scene: scene.path),
            "oshash": FilterField("text", lambda scene: scene.files[0].oshash if scene.files else None),
            "organized": FilterField("bool", lambda scene: scene.organized),
            "has_markers": FilterField("bool_text", lambda scene: bool(library.markers_of(scene.id))),
            "is_missing": FilterField(
                "missing",
                lambda scene: scene,
                choices={
                    "cover": lambda scene: "covers" not in scene.generated,
                    "phash": lambda scene: all(file.phash is None for file in scene.files),
                    "tags": lambda scene: not scene.tag_ids,
                    "title": lambda scene: not scene.title,
                    "details": lambda scene: not scene.details,
                },
            ),
            "tags": FilterField("ids", lambda scene: scene.tag_ids, expand=library.tag_descendants),
            "tag_count": FilterField("int", lambda scene: len(scene.tag_ids)),
            "created_at": FilterField("time", lambda scene: scene.created_at),
            "updated_at": FilterField("time", lambda scene: scene.updated_at),
        }

    def _make_tag_fields(self) -> dict[str, FilterField]:
        return {
            "name": FilterField("text", lambda tag: tag.name),
            "sort_name": FilterField("text", lambda tag: tag.sort_name),
            "description": FilterField("text", lambda tag: tag.description),
            "aliases": FilterField("text", lambda tag: tuple(tag.aliases)),
            "favorite": FilterField("bool", lambda tag: tag.favorite),
            "ignore_auto_tag": FilterField("bool", lambda tag: tag.ignore_auto_tag),
            "created_at": FilterField("time", lambda tag: tag.created_at),
            "updated_at": FilterField("time", lambda tag: tag.updated_at),
        }

    def _make_marker_fields(self) -> dict[str, FilterField]:
        return {
            # Stash matches a marker's primary tag as well as its other tags.
            "tags": FilterField("ids", lambda m: (m.primary_tag_id, *m.tag_ids), expand=self._library.tag_descendants),
            "scenes": FilterField("ids", lambda marker: (marker.scene_id,)),
            "created_at": FilterField("time", lambda marker: marker.created_at),
            "updated_at": FilterField("time", lambda marker: marker.updated_at),
        }


def _scene_texts(scene: Scene) -> tuple[str | None, ...]:
    file = scene.files[0] if scene.files else None
    return (scene.title, scene.details, scene.path, file.oshash if file else None)


def _only_ids(ids: Iterable[object]) -> IdSet:
    return IdSet(lambda item: (item.id,), "INCLUDES", (frozenset(str(i) for i in ids),), frozenset())
