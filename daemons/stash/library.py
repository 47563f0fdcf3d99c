"""SceneLibrary: Warden's local copy of Stash's scene metadata (library.db in the data folder).

stash_sync fills it; the other Stash daemons read it instead of asking Stash for the whole
library. It is its own SQLite file (WAL), separate from Warden's database, so daemons never
touch the kernel's tables; several daemons may open it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from daemons.sqlite import prepare

#: Generated assets Warden tracks, as Stash's GenerateMetadataInput names them.
ASSETS = ("covers", "previews", "sprites", "phashes")

#: The scene fields a sync reads from Stash (a findScenes selection).
SCENE_FIELDS = (
    "id title updated_at "
    "files { path size duration width height video_codec frame_rate fingerprints { type value } } "
    "tags { id name } scene_markers { id }"
)

_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE scenes (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        path TEXT,
        files TEXT NOT NULL,
        tags TEXT NOT NULL,
        markers_count INTEGER NOT NULL,
        updated_at TEXT NOT NULL,   -- Stash's updated_at, in UTC
        oshash TEXT,                -- fingerprint of the first file: a new file resets what was derived from the old
        covers INTEGER NOT NULL DEFAULT 0,
        previews INTEGER NOT NULL DEFAULT 0,
        sprites INTEGER NOT NULL DEFAULT 0,
        phashes INTEGER NOT NULL DEFAULT 0,
        analyzed_version INTEGER,
        analysis_failures INTEGER NOT NULL DEFAULT 0,
        analysis_error TEXT,
        seen_at REAL NOT NULL       -- start of the sync that last saw the scene in Stash
    );
    CREATE INDEX scenes_by_seen ON scenes (seen_at);
    CREATE TABLE sync_marks (
        name TEXT PRIMARY KEY,
        value NOT NULL              -- seconds, or the server's URL
    );
    """,
)

_UPSERT = """
INSERT INTO scenes (id, title, path, files, tags, markers_count, updated_at, oshash, phashes, seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    title = excluded.title,
    path = excluded.path,
    files = excluded.files,
    tags = excluded.tags,
    markers_count = excluded.markers_count,
    updated_at = excluded.updated_at,
    covers = CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.covers ELSE 0 END,
    previews = CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.previews ELSE 0 END,
    sprites = CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.sprites ELSE 0 END,
    phashes = MAX(excluded.phashes, CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.phashes ELSE 0 END),
    analyzed_version = CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.analyzed_version END,
    analysis_failures = CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.analysis_failures ELSE 0 END,
    analysis_error = CASE WHEN scenes.oshash IS excluded.oshash THEN scenes.analysis_error END,
    oshash = excluded.oshash,
    seen_at = excluded.seen_at
"""
_COLUMNS = (
    "id, title, path, files, tags, markers_count, updated_at, oshash, covers, previews, sprites, phashes, "
    "analyzed_version, analysis_failures, analysis_error"
)


class LibraryError(Exception):
    """The library file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class SceneRecord:
    id: str
    title: str
    path: str | None
    files: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    markers_count: int
    updated_at: str  # UTC, e.g. 2026-11-23T10:00:00Z
    oshash: str | None
    generated: frozenset[str] = frozenset()
    analyzed_version: str | None = None  # the analyser and version that last analysed the scene, e.g. "ffmpeg 1"
    analysis_failures: int = 0
    analysis_error: str | None = None
    stash_updated_at: str = ""  # as Stash wrote it (its zone); not stored

    @classmethod
    def from_stash(cls, scene: Mapping[str, Any]) -> SceneRecord:
        """A scene as findScenes returns it with SCENE_FIELDS."""
        files = [dict(file) for file in scene.get("files") or ()]
        fingerprints = {item["type"]: item["value"] for item in (files[0].get("fingerprints") or ())} if files else {}
        for file in files:
            file.pop("fingerprints", None)
        return cls(
            id=str(scene["id"]),
            title=scene.get("title") or "",
            path=files[0]["path"] if files else None,
            files=files,
            tags=[{"id": str(tag["id"]), "name": tag["name"]} for tag in scene.get("tags") or ()],
            markers_count=len(scene.get("scene_markers") or ()),
            updated_at=utc_text(parse_time(scene["updated_at"])),
            stash_updated_at=scene["updated_at"],
            oshash=fingerprints.get("oshash"),
            generated=frozenset({"phashes"}) if fingerprints.get("phash") else frozenset(),
        )


@dataclass(frozen=True, slots=True)
class SyncMarks:
    """Starts (wall-clock seconds) of the last successful sync and of the last full pass, and
    the UTC offset (seconds) Stash writes its times in."""

    last_started: float | None = None
    last_full: float | None = None
    stash_offset: float | None = None  # unknown until a sync has read a scene
    server: str | None = None  # the Stash these marks are about


def parse_time(text: str) -> datetime:
    """A Stash time (RFC 3339, any offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"Stash time without an offset: {text!r}")
    return moment.astimezone(UTC)


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_offset(text: str) -> float:
    """The UTC offset, in seconds, of a time Stash wrote (its server's zone)."""
    offset = datetime.fromisoformat(text.replace("Z", "+00:00")).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


class SceneLibrary:
    def __init__(self, path: Path, connection: aiosqlite.Connection) -> None:
        self.path = path
        self._db = connection
        # One statement sequence at a time on the one connection: several tasks may share a handle (the web
        # app's requests), and a statement from one must never land inside another's transaction.
        self._turn = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SceneLibrary:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise LibraryError(f"cannot open the scene library {path}: {error}") from error
        library = cls(path, connection)
        try:
            await prepare(connection, _MIGRATIONS)
        except sqlite3.Error as error:
            await connection.close()
            raise LibraryError(f"cannot prepare the scene library {path}: {error}") from error
        return library

    async def close(self) -> None:
        await self._db.close()

    # -- written by the sync -----------------------------------------------------------

    async def upsert(self, scenes: Iterable[SceneRecord], seen_at: float) -> None:
        """Save scenes as Stash has them now (one transaction); idempotent."""
        rows = [
            (
                int(scene.id),
                scene.title,
                scene.path,
                json.dumps(scene.files),
                json.dumps(scene.tags),
                scene.markers_count,
                scene.updated_at,
                scene.oshash,
                int("phashes" in scene.generated),
                seen_at,
            )
            for scene in scenes
        ]
        await self._transaction(_UPSERT, rows)

    async def remove_unseen(self, since: float) -> int:
        """Delete scenes no sync has seen since `since` (a full pass saw every scene Stash has)."""
        async with self._using("write") as db, db.execute("DELETE FROM scenes WHERE seen_at < ?", (since,)) as cursor:
            return cursor.rowcount

    async def marks(self) -> SyncMarks:
        values: dict[str, Any] = {name: value for name, value in await self._rows("SELECT name, value FROM sync_marks")}
        return SyncMarks(
            values.get("last_started"), values.get("last_full"), values.get("stash_offset"), values.get("server")
        )

    async def save_sync(self, started: float, *, full: bool, server: str, stash_offset: float | None = None) -> None:
        rows: list[tuple[str, float | str]] = [("last_started", started), ("server", server)]
        if full:
            rows.append(("last_full", started))
        if stash_offset is not None:
            rows.append(("stash_offset", stash_offset))
        await self._transaction("INSERT OR REPLACE INTO sync_marks (name, value) VALUES (?, ?)", rows)

    # -- read and marked by the other daemons ------------------------------------------

    async def count(self) -> int:
        (row,) = await self._rows("SELECT COUNT(*) FROM scenes")
        return int(row[0])

    async def missing_assets(self, assets: Iterable[str]) -> list[str]:
        """Ids of scenes lacking any of these generated assets, oldest first."""
        missing = " OR ".join(f"{_asset_column(asset)} = 0" for asset in assets)
        if not missing:
            return []
        return [str(row[0]) for row in await self._rows(f"SELECT id FROM scenes WHERE {missing} ORDER BY id")]

    async def mark_generated(self, scene_ids: Iterable[str], assets: Iterable[str]) -> None:
        columns = ", ".join(f"{_asset_column(asset)} = 1" for asset in assets)
        rows = [(int(scene_id),) for scene_id in scene_ids]
        if columns and rows:
            await self._transaction(f"UPDATE scenes SET {columns} WHERE id = ?", rows)

    async def to_analyse(self, source: str, max_failures: int, limit: int) -> list[SceneRecord]:
        """Scenes never analysed, or analysed by another analyser or version (`source`), that are
        not set aside (fewer than `max_failures` failures); least recently updated first."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM scenes WHERE (analyzed_version IS NULL OR analyzed_version != ?) "
            "AND analysis_failures < ? ORDER BY updated_at, id LIMIT ?",
            (source, max_failures, limit),
        )
        return [_record(row) for row in rows]

    async def mark_analysed(self, scene_ids: Iterable[str], source: str) -> None:
        rows = [(source, int(scene_id)) for scene_id in scene_ids]
        if rows:
            sql = "UPDATE scenes SET analyzed_version = ?, analysis_failures = 0, analysis_error = NULL WHERE id = ?"
            await self._transaction(sql, rows)

    async def analysis_failed(self, scene_id: str, error: str) -> None:
        sql = "UPDATE scenes SET analysis_failures = analysis_failures + 1, analysis_error = ? WHERE id = ?"
        await self._transaction(sql, [(error, int(scene_id))])

    async def set_aside(self, max_failures: int) -> list[SceneRecord]:
        """Scenes whose analysis failed `max_failures` times: `to_analyse` leaves them out."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM scenes WHERE analysis_failures >= ? ORDER BY id", (max_failures,)
        )
        return [_record(row) for row in rows]

    async def retry_analysis(self, scene_ids: Iterable[str] | None, max_failures: int) -> list[str]:
        """Forget the failures of these scenes (None: all) among those set aside: a person asked for them to
        be analysed again. Returns the ids cleared."""
        wanted = None if scene_ids is None else json.dumps([int(scene_id) for scene_id in scene_ids])
        sql = (
            "UPDATE scenes SET analysis_failures = 0, analysis_error = NULL WHERE analysis_failures >= ? "
            "AND (? IS NULL OR id IN (SELECT value FROM json_each(?))) RETURNING id"
        )
        async with self._using("write") as db, db.execute(sql, (max_failures, wanted, wanted)) as cursor:
            return sorted([str(row[0]) async for row in cursor], key=int)

    async def scene(self, scene_id: str) -> SceneRecord | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM scenes WHERE id = ?", (int(scene_id),))
        return _record(rows[0]) if rows else None

    async def scenes(self) -> list[SceneRecord]:
        return [_record(row) for row in await self._rows(f"SELECT {_COLUMNS} FROM scenes ORDER BY id")]

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._using("read") as db, db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _transaction(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._using("write") as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.executemany(sql, rows)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # COMMIT may have gone through before a cancel
                    await db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def _using(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for one statement sequence at a time; SQLite's errors become LibraryError."""
        async with self._turn:
            try:
                yield self._db
            except sqlite3.Error as error:
                raise LibraryError(f"cannot {doing} the scene library {self.path}: {error}") from error


def _asset_column(asset: str) -> str:
    if asset not in ASSETS:
        raise ValueError(f"unknown asset {asset!r}; known: {', '.join(ASSETS)}")
    return asset


def _record(row: Sequence[Any]) -> SceneRecord:
    generated = frozenset(asset for asset, flag in zip(ASSETS, row[8:12], strict=True) if flag)
    return SceneRecord(
        id=str(row[0]),
        title=row[1],
        path=row[2],
        files=json.loads(row[3]),
        tags=json.loads(row[4]),
        markers_count=row[5],
        updated_at=row[6],
        oshash=row[7],
        generated=generated,
        analyzed_version=None if row[12] is None else str(row[12]),
        analysis_failures=row[13],
        analysis_error=row[14],
    )
