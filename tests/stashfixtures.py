"""Helpers for tests that talk to the Stash double: a real stashapi client, raw GraphQL posts, tiny videos."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from graphql import GraphQLSchema
from stashapi.stashapp import StashInterface

from daemons.stash.double import StashDouble
from daemons.stash.double.records import Scene
from daemons.stash.double.schema import default_schema_dir, load_real_schema
from daemons.stash.library import SceneLibrary, SceneRecord
from daemons.stash.videos import make_video


def require_real_schema() -> GraphQLSchema:
    """Stash's real schema; without it the test fails, saying where it was looked for."""
    schema = load_real_schema()
    if schema is None:
        pytest.fail(f"Stash's real schema is not at {default_schema_dir()} (set STASH_SCHEMA_DIR to its folder)")
    return schema


class ManualClock:
    """A `now` for the double that moves only when told."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def connect(double: StashDouble, api_key: str | None = None) -> StashInterface:
    """A stashapi client for the double; synchronous and does network I/O, so call it in a thread."""
    connection: dict[str, Any] = {"scheme": "http", "host": "127.0.0.1", "port": double.port}
    connection["Logger"] = logging.getLogger("stashapi")
    key = double.api_key if api_key is None else api_key
    if key:
        connection["ApiKey"] = key
    stash = StashInterface(connection)
    stash.RAISE_GQL_ERRORS = True  # 0.1.5 only logs GraphQL errors unless told otherwise
    return stash


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]


async def post(
    double: StashDouble, query: str, variables: dict[str, Any] | None = None, *, api_key: str | None = None
) -> Response:
    """One GraphQL POST, answered as the double answers it (status and JSON body)."""
    key = double.api_key if api_key is None else api_key
    headers = {"ApiKey": key} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(double.graphql_url, json={"query": query, "variables": variables or {}}, headers=headers) as reply,
    ):
        body = await reply.json(content_type=None) if reply.content_length != 0 else {}
        return Response(reply.status, body or {})


@dataclass(frozen=True)
class TinyVideos:
    """A folder of small real clips, one of them in a subfolder, plus files a scan must pass over."""

    root: Path
    clips: dict[str, tuple[int, int, float]]  # relative path -> (width, height, duration)
    not_a_video: Path  # has a video extension, but ffprobe cannot read it
    not_video_named: Path  # a text file a scan must not even try


def make_tiny_videos(root: Path) -> TinyVideos:
    clips = {"first.mp4": (160, 120, 1.0), "second.mkv": (120, 160, 2.0), "nested/third.mp4": (160, 90, 3.0)}
    for name, (width, height, duration) in clips.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_video(root / name, width=width, height=height, duration=duration, fps=10, cuts=1)
    broken = root / "broken.mp4"
    broken.write_text("this is not a video")
    notes = root / "notes.txt"
    notes.write_text("a scan ignores this")
    return TinyVideos(root, clips, broken, notes)


async def as_synced(library_file: Path, scenes: Iterable[Scene]) -> None:
    """The double's scenes in the local library at `library_file`, as stash_sync leaves them."""
    library = await SceneLibrary.open(library_file)
    try:
        records = [
            SceneRecord(
                scene.id,
                scene.title or "",
                scene.path,
                [],
                [],
                0,
                "2027-01-15T08:00:00Z",
                scene.files[0].oshash if scene.files else None,
            )
            for scene in scenes
        ]
        await library.upsert(records, seen_at=1.0)
    finally:
        await library.close()
