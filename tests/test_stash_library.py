"""The local scene library: idempotent upserts, what a new file resets, deletions, sync marks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemons.stash.library import SceneLibrary, SceneRecord


def stash_scene(scene_id: str, *, oshash: str = "aa", phash: str | None = None, title: str = "") -> dict[str, object]:
    fingerprints = [{"type": "oshash", "value": oshash}] + ([{"type": "phash", "value": phash}] if phash else [])
    return {
        "id": scene_id,
        "title": title or f"scene {scene_id}",
        "updated_at": "2026-11-23T12:00:05+02:00",
        "files": [
            {
                "path": f"/library/{scene_id}.mp4",
                "size": 1000,
                "duration": 12.5,
                "width": 640,
                "height": 360,
                "video_codec": "h264",
                "frame_rate": 25,
                "fingerprints": fingerprints,
            }
        ],
        "tags": [{"id": 3, "name": "outdoor"}],
        "scene_markers": [{"id": "1"}, {"id": "2"}],
    }


async def test_a_scene_from_stash_is_stored_in_utc_with_its_files_tags_and_marker_count(tmp_path: Path) -> None:
    library = await SceneLibrary.open(tmp_path / "library.db")
    try:
        await library.upsert([SceneRecord.from_stash(stash_scene("7", phash="ffee"))], seen_at=1.0)
        scene = await library.scene("7")
    finally:
        await library.close()
    assert scene is not None
    assert scene.updated_at == "2026-11-23T10:00:05Z"  # +02:00 converted, never taken as UTC
    assert scene.path == "/library/7.mp4"
    assert scene.files[0]["height"] == 360 and "fingerprints" not in scene.files[0]
    assert scene.tags == [{"id": "3", "name": "outdoor"}]
    assert scene.markers_count == 2
    assert scene.generated == {"phashes"}


async def test_upserts_are_idempotent_and_keep_what_warden_learned_while_the_file_is_the_same(tmp_path: Path) -> None:
    library = await SceneLibrary.open(tmp_path / "library.db")
    try:
        await library.upsert([SceneRecord.from_stash(stash_scene("1")), SceneRecord.from_stash(stash_scene("2"))], 1.0)
        await library.mark_generated(["1", "2"], ["covers", "sprites"])
        await library.upsert([SceneRecord.from_stash(stash_scene("1", title="renamed"))], 2.0)
        await library.upsert([SceneRecord.from_stash(stash_scene("2", oshash="bb"))], 2.0)  # the file was replaced
        first, second = await library.scene("1"), await library.scene("2")
        assert await library.count() == 2
        assert await library.missing_assets(["covers"]) == ["2"]
        assert await library.missing_assets(["covers", "previews"]) == ["1", "2"]
    finally:
        await library.close()
    assert first is not None and first.title == "renamed" and first.generated == {"covers", "sprites"}
    assert second is not None and second.generated == frozenset()


async def test_a_full_pass_removes_what_it_did_not_see_and_marks_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "library.db"
    library = await SceneLibrary.open(path)
    try:
        await library.upsert([SceneRecord.from_stash(stash_scene(str(i))) for i in range(1, 6)], seen_at=10.0)
        await library.upsert([SceneRecord.from_stash(stash_scene(str(i))) for i in (1, 2, 4)], seen_at=20.0)
        assert await library.remove_unseen(20.0) == 2
        await library.save_sync(20.0, full=True, server="http://stash:9999")
        await library.save_sync(30.0, full=False, server="http://stash:9999")
    finally:
        await library.close()
    library = await SceneLibrary.open(path)
    try:
        assert [scene.id for scene in await library.scenes()] == ["1", "2", "4"]
        marks = await library.marks()
    finally:
        await library.close()
    assert (marks.last_started, marks.last_full, marks.server) == (30.0, 20.0, "http://stash:9999")


async def test_two_daemons_can_open_a_new_library_at_once(tmp_path: Path) -> None:
    for attempt in range(20):  # the race is in SQLite's switch to WAL: give it many chances
        path = tmp_path / f"library-{attempt}.db"
        first, second = await asyncio.gather(SceneLibrary.open(path), SceneLibrary.open(path))
        try:
            await first.upsert([SceneRecord.from_stash(stash_scene("1"))], 1.0)
            assert await second.count() == 1
        finally:
            await first.close()
            await second.close()
