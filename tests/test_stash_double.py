"""The Stash double against the real stashapi client, raw GraphQL, real video files and Stash's real schema."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
import requests
from graphql import build_schema
from stashapi.classes import GQLException

from daemons.stash.double import StashDouble
from daemons.stash.double.schema import (
    SUBSET_SDL,
    load_real_schema,
    load_subset_schema,
    subset_mismatches,
)
from daemons.stash.double.search import natural_key
from daemons.stash.videos import VideoToolMissing, make_video, probe
from tests.stashfixtures import ManualClock, TinyVideos, connect, make_tiny_videos, post, require_real_schema

KEY = "double-key"
LEAN_SCENE = "id title updated_at files { path size duration width height video_codec frame_rate } tags { id name }"
FIND_SCENES = """query FindScenes($filter: FindFilterType, $scene_filter: SceneFilterType) {
  findScenes(filter: $filter, scene_filter: $scene_filter) { count scenes { id title updated_at } } }"""
JOB = "query FindJob($id: ID!) { findJob(input: {id: $id}) { id status progress startTime endTime addTime error } }"
REAL_SCHEMA_PRESENT = load_real_schema() is not None


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory: pytest.TempPathFactory) -> TinyVideos:
    return make_tiny_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture
async def double():
    async with StashDouble(api_key=KEY, step_delay=0.001) as running:
        yield running


def job_status(double: StashDouble, job_id: str) -> str | None:
    job = double.jobs.find(job_id)
    return None if job is None else job.status.value


# The client Warden uses, against the double


async def test_stashapi_connects_with_introspection_and_reads_the_version(double):
    stash = await asyncio.to_thread(connect, double)
    assert str(stash.version).startswith("v0.30.1")
    assert {"Scene", "Tag", "SceneMarker", "Job"} <= set(stash.fragments)  # built from introspection
    assert double.calls["__schema"] == 1 and double.calls["configuration"] == 1
    assert double.schema_source == ("real" if REAL_SCHEMA_PRESENT else "subset")


async def test_every_stashapi_method_warden_uses_works(double):
    alpha = double.add_tag("Alpha", aliases=["First letter"])
    clip = double.add_scene("/media/clips/one.mp4", title="One")
    double.add_scene("/media/clips/two.mp4", title="Two")

    def client_session() -> dict:
        stash = connect(double)
        seen = {"version": str(stash.stash_version())}
        seen["scenes"] = stash.find_scenes(
            f={"path": {"value": "clips", "modifier": "INCLUDES"}},
            filter={"page": 1, "per_page": 1, "sort": "title", "direction": "DESC"},
            fragment=LEAN_SCENE,
            get_count=True,
        )
        seen["scene"] = stash.find_scene(clip.id, fragment="id title files { basename fingerprints { type value } }")
        seen["tags_by_q"] = stash.find_tags(q="alp", fragment="id name")
        seen["tag_by_alias"] = stash.find_tag("first letter")
        beta = stash.create_tag({"name": "Beta"})
        seen["marker"] = stash.create_scene_marker(
            {"title": "Cut", "seconds": 12.5, "scene_id": clip.id, "primary_tag_id": beta["id"]}
        )
        seen["markers"] = stash.find_scene_markers(
            {"scenes": {"value": [clip.id], "modifier": "INCLUDES"}}, fragment="id seconds primary_tag { name }"
        )
        seen["bulk"] = stash.update_scenes(
            {"ids": [clip.id], "tag_ids": {"ids": [alpha.id, beta["id"]], "mode": "ADD"}}
        )
        seen["queue"] = stash.job_queue()
        return seen

    seen = await asyncio.to_thread(client_session)
    assert seen["version"].startswith("v0.30.1")
    count, scenes = seen["scenes"]
    assert count == 2 and [scene["title"] for scene in scenes] == ["Two"]
    assert scenes[0]["files"][0]["width"] == 1920 and scenes[0]["updated_at"].endswith("+02:00")
    assert seen["scene"]["files"][0]["basename"] == "one.mp4"
    assert [print_["type"] for print_ in seen["scene"]["files"][0]["fingerprints"]] == ["oshash"]
    assert seen["tags_by_q"] == [{"id": alpha.id, "name": "Alpha"}]
    assert seen["tag_by_alias"]["id"] == alpha.id and seen["tag_by_alias"]["aliases"] == ["First letter"]
    assert seen["marker"]["primary_tag"]["name"] == "Beta" and seen["marker"]["scene"] == {"id": clip.id}
    assert seen["markers"] == [{"id": seen["marker"]["id"], "seconds": 12.5, "primary_tag": {"name": "Beta"}}]
    assert seen["bulk"] == [{"id": clip.id}]
    assert [double.library.tags[t].name for t in double.library.scenes[clip.id].tag_ids] == ["Alpha", "Beta"]
    assert seen["queue"] is None  # Stash answers an empty job queue with null, not []


async def test_stashapis_default_scene_fragment_is_refused_as_stash_refuses_it(double):
    """stashapi 0.1.5 asks for Folder.basename, which Stash v0.30.1 does not have: pass a fragment."""
    scene = double.add_scene("/media/a.mp4")
    stash = await asyncio.to_thread(connect, double)
    with pytest.raises(GQLException, match="Cannot query field 'basename' on type 'Folder'"):
        await asyncio.to_thread(stash.find_scene, scene.id)
    tag = await asyncio.to_thread(stash.create_tag, {"name": "Whole fragment"})  # ...Tag itself is fine
    assert tag["scene_count"] == 0 and tag["parents"] == []


async def test_creating_a_tag_twice_is_refused_like_stash(double):
    double.add_tag("Outdoor", aliases=["Outside"])
    stash = await asyncio.to_thread(connect, double)
    with pytest.raises(GQLException, match="tag with name 'outdoor' already exists"):
        await asyncio.to_thread(stash.create_tag, {"name": "outdoor"})
    with pytest.raises(GQLException, match="name 'Outside' is used as alias for 'Outdoor'"):
        await asyncio.to_thread(stash.create_tag, {"name": "Outside"})


async def test_scene_updates_bump_updated_at_while_markers_and_generation_do_not():
    clock = ManualClock()
    async with StashDouble(now=clock, step_delay=0) as double:
        scene = double.add_scene("/media/a.mp4", title="A")
        tag = double.add_tag("T")
        clock.advance(10)
        double.add_marker(scene.id, "m", 1.0, tag.id)
        double.library.mark_generated(scene.id, {"covers"}, overwrite=False)
        assert scene.updated_at == scene.created_at
        reply = await post(double, 'mutation { sceneUpdate(input: {id: "1", title: "B"}) { title updated_at } }')
        assert reply.body["data"]["sceneUpdate"] == {"title": "B", "updated_at": "2023-11-15T00:13:30+02:00"}
        clock.advance(5)
        mutation = "mutation($i: BulkSceneUpdateInput!) { bulkSceneUpdate(input: $i) { id } }"
        await post(double, mutation, {"i": {"ids": ["1"], "tag_ids": {"ids": [tag.id], "mode": "SET"}}})
        assert scene.updated_at == clock.now and scene.tag_ids == (tag.id,)
        await post(double, mutation, {"i": {"ids": ["1"], "tag_ids": {"ids": [tag.id], "mode": "REMOVE"}}})
        assert scene.tag_ids == ()


# HTTP behaviour


async def test_invalid_documents_get_422_with_the_precise_message(double):
    bad_field = await post(double, "{ findScenes { scenes { nonexistent } } }")
    assert bad_field.status == 422 and bad_field.body["data"] is None
    assert bad_field.body["errors"][0]["message"] == "Cannot query field 'nonexistent' on type 'Scene'."
    assert bad_field.body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    bad_enum = await post(double, "{ findScenes(scene_filter: {id: {value: 1, modifier: GREATER}}) { count } }")
    assert bad_enum.status == 422 and "GREATER" in bad_enum.body["errors"][0]["message"]
    unparsable = await post(double, "{ findScenes { count ")
    assert unparsable.status == 422 and unparsable.body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    wrong_variable = await post(double, "query($id: ID!) { findScene(id: $id) { id } }", {})
    assert wrong_variable.status == 422 and "$id" in wrong_variable.body["errors"][0]["message"]


async def test_a_wrong_or_missing_api_key_gets_401(double):
    assert (await post(double, "{ version { version } }", api_key="wrong")).status == 401
    async with aiohttp.ClientSession() as session:
        async with session.post(double.graphql_url, json={"query": "{ version { version } }"}) as reply:
            assert reply.status == 401
        async with session.get(double.graphql_url, params={"query": "{ version { hash } }", "apikey": KEY}) as reply:
            assert reply.status == 200 and (await reply.json())["data"]["version"]["hash"]
    with pytest.raises(Exception, match="Authentication error"):
        await asyncio.to_thread(connect, double, "wrong")
    double.api_key = "rotated"
    assert (await post(double, "{ version { version } }", api_key=KEY)).status == 401


async def test_down_refuses_connections_and_up_serves_the_same_library(double):
    scene = double.add_scene("/media/kept.mp4", title="Kept")
    stash = await asyncio.to_thread(connect, double)
    port = double.port
    await double.down()
    with pytest.raises(requests.ConnectionError):
        await asyncio.to_thread(stash.find_scene, scene.id, "id")
    await double.up()
    assert double.port == port
    assert await asyncio.to_thread(stash.find_scene, scene.id, "id title") == {"id": scene.id, "title": "Kept"}


async def test_going_down_drops_a_request_in_flight(double):
    arrived = asyncio.Event()

    async def never_answer(root_field: str, variables: dict) -> None:
        arrived.set()
        await asyncio.Event().wait()

    stash = await asyncio.to_thread(connect, double)
    double.before = never_answer
    pending = asyncio.create_task(asyncio.to_thread(stash.find_scenes, {}, {"per_page": 1}, "", "id"))
    await arrived.wait()
    await double.down()
    with pytest.raises(requests.ConnectionError):
        await pending


async def test_injected_failures_answer_with_a_graphql_error_at_the_field_path(double):
    double.add_scene("/media/a.mp4")
    double.fail("findScenes", "database is locked", times=1)
    locked = await post(double, FIND_SCENES)
    assert locked.status == 200
    assert locked.body["errors"] == [
        {"message": "database is locked", "locations": [{"line": 2, "column": 3}], "path": ["findScenes"]}
    ]
    assert (await post(double, FIND_SCENES)).body["data"]["findScenes"]["count"] == 1
    double.fail("findScenes", "stuck", times=None)
    stash = await asyncio.to_thread(connect, double)
    for _ in range(2):
        with pytest.raises(GQLException, match="stuck"):
            await asyncio.to_thread(stash.find_scenes, {}, {"per_page": 1}, "", "id")
    double.clear_failures()
    assert await asyncio.to_thread(stash.find_scenes, {}, {"per_page": 1}, "", "id") == [{"id": "1"}]


async def test_latency_delays_every_answer(double):
    double.latency = 0.2
    started = time.monotonic()
    await post(double, "{ version { version } }")
    assert time.monotonic() - started >= 0.2


async def test_the_before_hook_interleaves_a_change_with_a_clients_paging():
    clock = ManualClock()
    async with StashDouble(now=clock) as double:
        for name in ("a", "b", "c", "d"):
            double.add_scene(f"/media/{name}.mp4", title=name.upper())
        seen_pages: list[int] = []

        async def before(root_field: str, variables: dict) -> None:
            seen_pages.append(variables["filter"]["page"])
            if variables["filter"]["page"] == 2:
                clock.advance(1)
                double.update_scene("1", title="A again")  # scene 1 moves to the end of updated_at order

        double.before = before
        page = {"per_page": 2, "sort": "updated_at", "direction": "ASC"}
        first = await post(double, FIND_SCENES, {"filter": {**page, "page": 1}})
        second = await post(double, FIND_SCENES, {"filter": {**page, "page": 2}})
        assert seen_pages == [1, 2]
        assert [s["id"] for s in first.body["data"]["findScenes"]["scenes"]] == ["1", "2"]
        # Scene 3 is skipped and scene 1 seen twice: the hazard an incremental sync must survive.
        assert [s["id"] for s in second.body["data"]["findScenes"]["scenes"]] == ["4", "1"]
        assert double.calls["findScenes"] == 2 and FIND_SCENES in double.documents


async def test_unsupported_criteria_and_sorts_are_errors_that_name_them(double):
    double.add_scene("/media/a.mp4")
    random_sort = await post(double, FIND_SCENES, {"filter": {"sort": "random"}})
    assert "sort 'random' is not supported by the Stash double" in random_sort.body["errors"][0]["message"]
    bad_missing = await post(double, FIND_SCENES, {"scene_filter": {"is_missing": "studio"}})
    assert "invalid is_missing field: studio" in bad_missing.body["errors"][0]["message"]
    performers = await post(
        double, FIND_SCENES, {"scene_filter": {"performers": {"value": ["1"], "modifier": "INCLUDES"}}}
    )
    if double.schema_source == "real":
        assert "scene_filter.performers is not supported" in performers.body["errors"][0]["message"]
    else:
        assert performers.status == 422


# Jobs


async def test_scan_finds_ffmpeg_made_videos_and_skips_what_it_cannot_read(double, tiny_videos):
    stash = await asyncio.to_thread(connect, double)
    job_id = await asyncio.to_thread(
        stash.metadata_scan, [str(tiny_videos.root)], {"scanGenerateCovers": True, "scanGeneratePhashes": True}
    )
    await double.until(lambda: job_status(double, job_id) == "FINISHED")
    by_path = {
        Path(scene.path).relative_to(tiny_videos.root).as_posix(): scene for scene in double.library.scenes.values()
    }
    assert set(by_path) == set(tiny_videos.clips)
    for name, (width, height, duration) in tiny_videos.clips.items():
        file = by_path[name].files[0]
        assert (file.width, file.height) == (width, height)
        assert file.duration == pytest.approx(duration, abs=0.05)
        assert by_path[name].title is None and by_path[name].generated == {"covers", "phashes"}
        assert file.phash is not None and len(file.oshash) == 16
    assert any(str(tiny_videos.not_a_video) in line for line in double.logged)
    assert not any(str(tiny_videos.not_video_named) in line for line in double.logged)

    again = await asyncio.to_thread(stash.metadata_scan, [str(tiny_videos.root), "/no/such/folder"], {"rescan": False})
    await double.until(lambda: job_status(double, again) == "FINISHED")
    assert len(double.library.scenes) == 3 and any("/no/such/folder" in line for line in double.logged)


async def test_generate_marks_exactly_the_requested_scenes(double):
    scenes = [double.add_scene(f"/media/{n}.mp4") for n in range(4)]
    stash = await asyncio.to_thread(connect, double)
    job_id = await asyncio.to_thread(
        stash.metadata_generate, {"previews": True, "phashes": True, "sceneIDs": [scenes[1].id, scenes[3].id]}
    )
    await double.until(lambda: job_status(double, job_id) == "FINISHED")
    assert [scene.generated for scene in scenes] == [set(), {"previews", "phashes"}, set(), {"previews", "phashes"}]
    prints = await asyncio.to_thread(stash.find_scene, scenes[3].id, "files { fingerprints { type value } }")
    phash = prints["files"][0]["fingerprints"][1]
    assert phash["type"] == "phash" and len(phash["value"]) == 16
    job = await asyncio.to_thread(stash.find_job, job_id)
    assert job["description"] == "Generating..." and job["progress"] == 1.0 and job["subTasks"] is None


async def test_stop_job_goes_stopping_then_cancelled_when_released(double):
    double.add_scene("/media/a.mp4")
    double.jobs.hold("finish")
    double.jobs.hold("stop")
    stash = await asyncio.to_thread(connect, double)
    job_id = await asyncio.to_thread(stash.metadata_generate, {"covers": True})
    await double.until(lambda: job_status(double, job_id) == "RUNNING")
    assert await asyncio.to_thread(stash.stop_job, job_id) is True
    stopping = await asyncio.to_thread(stash.find_job, job_id)
    assert stopping["status"] == "STOPPING" and stopping["endTime"] is None
    assert [job["id"] for job in await asyncio.to_thread(stash.job_queue)] == [job_id]
    double.jobs.release("stop")
    await double.until(lambda: job_status(double, job_id) == "CANCELLED")
    cancelled = await asyncio.to_thread(stash.find_job, job_id)
    assert cancelled["endTime"] is not None and await asyncio.to_thread(stash.job_queue) is None


async def test_a_job_made_to_fail_ends_failed_with_its_error(double):
    double.add_scene("/media/a.mp4")
    double.jobs.fail_next("ffmpeg exploded")
    stash = await asyncio.to_thread(connect, double)
    job_id = await asyncio.to_thread(stash.metadata_generate, {"sprites": True})
    await double.until(lambda: job_status(double, job_id) == "FAILED")
    failed = await asyncio.to_thread(stash.find_job, job_id)
    assert failed["error"] == "ffmpeg exploded" and failed["endTime"] is not None
    double.jobs.hold("start")
    waiting = (await post(double, "mutation { metadataGenerate(input: {covers: true}) }")).body["data"][
        "metadataGenerate"
    ]
    double.jobs.fail(waiting, "disk full")
    double.jobs.release("start")
    await double.until(lambda: job_status(double, waiting) == "FAILED")
    assert double.jobs.find(waiting).error == "disk full"
    assert double.library.scenes["1"].generated == frozenset()


async def test_jobs_run_one_at_a_time_and_a_waiting_job_is_cancelled_at_once(double, tmp_path):
    double.add_scene("/media/a.mp4")
    double.jobs.hold("finish")
    first = (await post(double, "mutation { metadataGenerate(input: {covers: true}) }")).body["data"][
        "metadataGenerate"
    ]
    await double.until(lambda: job_status(double, first) == "RUNNING")
    scan = f'mutation {{ metadataScan(input: {{paths: ["{tmp_path}"]}}) }}'
    second = (await post(double, scan)).body["data"]["metadataScan"]
    third = (await post(double, scan)).body["data"]["metadataScan"]
    queue = (await post(double, "{ jobQueue { id status description progress startTime } }")).body["data"]["jobQueue"]
    assert [(j["id"], j["status"], j["description"]) for j in queue] == [
        (first, "RUNNING", "Generating..."),
        (second, "READY", "Scanning..."),
        (third, "READY", "Scanning..."),
    ]
    assert queue[1]["progress"] is None and queue[1]["startTime"] is None
    await post(double, "mutation($id: ID!) { stopJob(job_id: $id) }", {"id": third})
    cancelled = (await post(double, JOB, {"id": third})).body["data"]["findJob"]
    assert cancelled["status"] == "CANCELLED" and cancelled["endTime"] is None  # never started, never ended
    double.jobs.release("finish")
    await double.until(lambda: job_status(double, second) == "FINISHED")
    ended = [(await post(double, JOB, {"id": job_id})).body["data"]["findJob"] for job_id in (first, second)]
    assert ended[0]["status"] == "FINISHED"
    assert datetime.fromisoformat(ended[0]["endTime"]) <= datetime.fromisoformat(ended[1]["startTime"])
    assert ended[1]["addTime"].endswith("+02:00") and "." in ended[1]["addTime"]  # job times keep their fraction


async def test_only_the_last_ended_jobs_stay_findable():
    async with StashDouble(step_delay=0, job_graveyard_size=2) as double:
        ids = [(await post(double, "mutation { metadataGenerate(input: {}) }")).body["data"]["metadataGenerate"]]
        await double.until(lambda: job_status(double, ids[0]) == "FINISHED")
        for _ in range(2):
            ids.append(
                (await post(double, "mutation { metadataGenerate(input: {}) }")).body["data"]["metadataGenerate"]
            )
        await double.until(lambda: all(job.ended for job in double.jobs.added))
        found = [(await post(double, JOB, {"id": job_id})).body["data"]["findJob"] for job_id in ids]
        assert found[0] is None and [job["id"] for job in found[1:]] == ids[1:]


# A large library


async def test_a_100k_library_pages_in_stash_order_with_second_precision_filters():
    clock = ManualClock()
    async with StashDouble(now=clock) as double:
        double.add_synthetic_scenes(100_000, seed=7)
        scenes = list(double.library.scenes.values())
        everything = await post(double, FIND_SCENES, {"filter": {"per_page": 0}})
        assert everything.body["data"]["findScenes"] == {"count": 100_000, "scenes": []}

        # A threshold on an existing scene's second, written as Stash stores it (its +02:00 zone):
        # GREATER_THAN excludes that second; a fraction after it changes nothing at second precision.
        pivot = sorted(scene.updated_at for scene in scenes)[-2500]
        expected = sorted(
            (scene for scene in scenes if scene.updated_at > pivot),
            key=lambda scene: (scene.updated_at, natural_key(scene.title or scene.id), int(scene.id)),
        )
        assert any(a.updated_at == b.updated_at for a, b in itertools.pairwise(expected))
        in_stash_zone = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(pivot + 2 * 3600))
        for spelling in (in_stash_zone + "+02:00", in_stash_zone + ".5+02:00"):
            paged = []
            for page in range(1, 4):
                variables = {
                    "filter": {"page": page, "per_page": 1000, "sort": "updated_at", "direction": "ASC"},
                    "scene_filter": {"updated_at": {"value": spelling, "modifier": "GREATER_THAN"}},
                }
                reply = (await post(double, FIND_SCENES, variables)).body["data"]["findScenes"]
                assert reply["count"] == len(expected)
                paged += [scene["id"] for scene in reply["scenes"]]
            assert paged == [scene.id for scene in expected]

        # Stash compares the text, not the instant: the same instant in UTC reads two hours earlier.
        utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pivot))
        variables = {
            "filter": {"per_page": 0},
            "scene_filter": {"updated_at": {"value": utc, "modifier": "GREATER_THAN"}},
        }
        as_text = (await post(double, FIND_SCENES, variables)).body["data"]["findScenes"]["count"]
        assert as_text == sum(1 for scene in scenes if scene.updated_at > pivot - 2 * 3600)

        descending = await post(
            double, FIND_SCENES, {"filter": {"per_page": 3, "sort": "updated_at", "direction": "DESC"}}
        )
        latest = sorted({scene.updated_at for scene in scenes})[-3:]
        candidates = [scene for scene in scenes if scene.updated_at >= latest[0]]
        newest = sorted(candidates, key=lambda s: (-s.updated_at, natural_key(s.title or s.id), int(s.id)))[:3]
        assert [s["id"] for s in descending.body["data"]["findScenes"]["scenes"]] == [s.id for s in newest]


# The schema


def test_the_subset_schema_is_a_faithful_subset_of_stashs_real_schema():
    real = require_real_schema()
    assert subset_mismatches(load_subset_schema(), real) == []
    drifted = SUBSET_SDL.read_text().replace("  seconds: Float!\n  end_seconds", "  seconds: Int!\n  end_seconds", 1)
    drifted = drifted.replace("  organized: Boolean!\n", "  organized: Boolean!\n  invented: String\n", 1)
    assert set(subset_mismatches(build_schema(drifted), real)) == {
        "field Scene.invented is not in the real schema",
        "field SceneMarker.seconds is Int! here but Float! in the real schema",
    }


async def test_the_real_schema_serves_fields_the_subset_lacks_and_an_empty_schema_dir_means_the_subset(
    tmp_path, monkeypatch
):
    require_real_schema()
    beyond_subset = "{ findScenes { scenes { id studio { id } performers { id } } } }"
    async with StashDouble() as double:
        double.add_scene("/media/a.mp4")
        reply = await post(double, beyond_subset)
        assert reply.body == {"data": {"findScenes": {"scenes": [{"id": "1", "studio": None, "performers": []}]}}}
        unimplemented = await post(double, "{ findStudios { count } }")
        assert unimplemented.body["errors"][0]["message"] == "findStudios is not implemented by the Stash double"
    monkeypatch.setenv("STASH_SCHEMA_DIR", str(tmp_path))
    async with StashDouble() as double:
        assert double.schema_source == "subset"
        assert (await post(double, beyond_subset)).status == 422


# Standalone and videos


def test_the_double_runs_standalone_and_stops_on_sigterm():
    command = [sys.executable, "-m", "daemons.stash.double", "--port", "0", "--scenes", "1000", "--api-key", KEY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        reply = requests.post(
            f"{url}/graphql", json={"query": "{ findScenes { count } }"}, headers={"ApiKey": KEY}, timeout=10
        )
        assert reply.json() == {"data": {"findScenes": {"count": 1000}}}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_make_video_writes_the_asked_shape_and_probe_reads_it(tmp_path):
    clip = make_video(tmp_path / "clip.mkv", width=96, height=64, duration=1.5, fps=12, cuts=2, audio=True)
    info = probe(clip)
    assert info is not None
    assert (info.width, info.height, info.frame_rate, info.format) == (96, 64, 12.0, "matroska")
    assert info.duration == pytest.approx(1.5, abs=0.05) and info.audio_codec == "aac" and info.video_codec == "h264"
    assert info.size == clip.stat().st_size and not list(tmp_path.glob(".*"))
    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 1000)
    assert probe(tmp_path / "fake.mp4") is None and probe(tmp_path / "missing.mp4") is None


def test_missing_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VideoToolMissing, match="ffprobe is not installed"):
        probe(tmp_path / "x.mp4")
