"""StashClient against the Stash double: every method, every failure type, reconnecting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import structlog
from aiohttp import web

from daemons.stash.client import (
    StashBadResponse,
    StashBusy,
    StashClient,
    StashGraphQLError,
    StashTimeout,
    StashUnauthorized,
    StashUnreachable,
)
from daemons.stash.double import StashDouble
from daemons.stash.library import SCENE_FIELDS
from supervisor import JobStatus, TransientError

KEY = "stash-api-key-0123456789"


@pytest.fixture
async def double() -> AsyncIterator[StashDouble]:
    async with StashDouble(api_key=KEY, step_delay=0.001) as running:
        yield running


@pytest.fixture
async def client(double: StashDouble) -> AsyncIterator[StashClient]:
    stash = StashClient(double.url, KEY, timeout=5)
    yield stash
    stash.close()


# A limit that covers connecting (schema introspection) on a loaded machine; stalled calls never
# answer on their own, so the limit is what ends them, however long it is.
LIMIT = 2.0


@pytest.fixture
async def stalled(double: StashDouble) -> AsyncIterator[Callable[[], AbstractContextManager[None]]]:
    """`with stalled():` requests reaching the double meanwhile hang until the test ends."""
    released = asyncio.Event()

    async def hang(root_field: str, variables: dict[str, Any]) -> None:
        await released.wait()

    @contextmanager
    def stalling() -> Iterator[None]:
        double.before = hang
        try:
            yield
        finally:
            double.before = None

    yield stalling
    released.set()


async def test_scenes_are_found_by_filter_sorted_and_paged(double: StashDouble, client: StashClient) -> None:
    for index in range(5):
        double.add_scene(f"/media/{index}.mp4", title=f"scene {index}", updated_at=1_800_000_000 + 10 * index)
    # In Stash's own zone (+02:00 here): Stash compares the text. 10:00:15+02:00 is 1_800_000_015.
    changed_after = {"updated_at": {"value": "2027-01-15T10:00:15+02:00", "modifier": "GREATER_THAN"}}

    count, first = await client.find_scenes(changed_after, SCENE_FIELDS, page=1, per_page=2)
    _, second = await client.find_scenes(changed_after, SCENE_FIELDS, page=2, per_page=2)
    _, newest = await client.find_scenes({}, "id title", per_page=1, direction="DESC")

    assert count == 3  # 1_800_000_020 and later
    assert [scene["title"] for scene in first + second] == ["scene 2", "scene 3", "scene 4"]
    assert first[0]["files"][0]["path"] == "/media/2.mp4"
    assert newest == [{"id": newest[0]["id"], "title": "scene 4"}]
    found = await client.find_scene(first[0]["id"], "id title")
    assert found == {"id": first[0]["id"], "title": "scene 2"}
    assert await client.find_scene("999999", "id") is None


async def test_tags_markers_and_bulk_tagging(double: StashDouble, client: StashClient) -> None:
    scenes = [double.add_scene(f"/media/{index}.mp4").id for index in range(3)]
    assert await client.find_tag("Resolution: 4K") is None
    created = await client.create_tag("Resolution: 4K")
    assert (await client.find_tag("resolution: 4k")) == {"id": created["id"], "name": "Resolution: 4K", "aliases": []}

    marker = await client.create_marker(scenes[0], "Scene cut", 12.5, created["id"], end_seconds=13.0)
    markers = await client.scene_markers(scenes[0])
    updated = await client.update_scene_tags(scenes[:2], [created["id"]])

    assert marker["seconds"] == 12.5 and marker["end_seconds"] == 13.0
    assert [(m["title"], m["primary_tag"]["name"]) for m in markers] == [("Scene cut", "Resolution: 4K")]
    assert await client.scene_markers(scenes[1]) == []
    assert sorted(updated) == sorted(scenes[:2])
    assert [double.library.scene(scene).tag_ids for scene in scenes] == [(created["id"],), (created["id"],), ()]
    with pytest.raises(StashGraphQLError, match="Resolution: 4K"):
        await client.create_tag("Resolution: 4K")  # Stash refuses a duplicate name


async def test_scan_generate_and_the_job_queue(double: StashDouble, client: StashClient) -> None:
    scenes = [double.add_scene(f"/media/{index}.mp4").id for index in range(3)]
    double.jobs.hold("start")
    generate = await client.metadata_generate(scenes[:2], ["covers", "phashes"])
    scan = await client.metadata_scan(["/nowhere"], generate=["covers"])

    queue = await client.job_queue()
    assert [(job.id, job.status, job.is_scan) for job in queue] == [(generate, "READY", False), (scan, "READY", True)]
    assert queue[0].external_state().status is JobStatus.RUNNING
    assert await client.stop_job(scan) is True
    double.jobs.release("start")
    await double.until(lambda: all(job.ended for job in double.jobs.added))

    finished, stopped = await client.find_job(generate), await client.find_job(scan)
    assert finished is not None and finished.external_state().status is JobStatus.COMPLETED
    assert stopped is not None and stopped.external_state().status is JobStatus.CANCELLED
    assert [double.library.scene(scene).generated for scene in scenes] == [
        {"covers", "phashes"},
        {"covers", "phashes"},
        frozenset(),
    ]
    assert await client.job_queue() == []
    assert await client.find_job("424242") is None
    assert await client.version() == "v0.30.1"


async def test_a_failed_stash_job_maps_to_failed_with_its_error(double: StashDouble, client: StashClient) -> None:
    scene = double.add_scene("/media/a.mp4").id
    double.jobs.fail_next("ffmpeg exited with status 1")
    job_id = await client.metadata_generate([scene], ["previews"])
    await double.until(lambda: double.jobs.find(job_id).ended)
    job = await client.find_job(job_id)
    assert job is not None
    state = job.external_state()
    assert (state.status, state.error) == (JobStatus.FAILED, "ffmpeg exited with status 1")


async def test_down_is_unreachable_and_the_client_reconnects_when_stash_is_back(
    double: StashDouble, client: StashClient
) -> None:
    assert await client.version() == "v0.30.1"
    await double.down()
    with pytest.raises(StashUnreachable, match="Connection refused") as refused:
        await client.version()
    assert isinstance(refused.value, TransientError)  # a job raising it is retried
    await double.up()
    connections = double.calls["__schema"]
    assert await client.version() == "v0.30.1"
    assert double.calls["__schema"] == connections + 1  # connected afresh (introspection again)


async def test_a_slow_stash_times_out_and_the_next_call_is_not_stuck_behind_it(
    double: StashDouble, stalled: Callable[[], AbstractContextManager[None]]
) -> None:
    client = StashClient(double.url, KEY, timeout=LIMIT)
    try:
        assert await client.version() == "v0.30.1"
        with stalled(), pytest.raises(StashTimeout, match=f"within {LIMIT:g} s"):
            await client.version()
        assert await client.version() == "v0.30.1"
    finally:
        client.close()


async def test_a_refused_key_is_unauthorized_and_never_logged(double: StashDouble) -> None:
    wrong = "wrong-key-never-to-be-logged"
    client = StashClient(double.url, wrong, timeout=5)
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(StashUnauthorized) as refused:
            await client.version()
    finally:
        client.close()
    assert "API key" in str(refused.value)
    assert wrong not in str(refused.value) and all(wrong not in repr(line) for line in logs)


async def test_graphql_errors_raise_and_a_locked_database_is_transient(
    double: StashDouble, client: StashClient
) -> None:
    double.fail("findScenes", "sql: no such column")
    with pytest.raises(StashGraphQLError, match="no such column"):
        await client.find_scenes({}, "id")
    double.fail("findScenes", "database is locked")
    with pytest.raises(StashBusy):
        await client.find_scenes({}, "id")
    with pytest.raises(StashGraphQLError, match="SceneFilterType"):
        await client.find_scenes({"no_such_criterion": True}, "id")  # refused by the schema (422)
    assert await client.find_scenes({}, "id") == (0, [])


async def test_an_answer_that_is_not_stash_is_a_bad_response(unused_tcp_port: int) -> None:
    async def not_stash(request: web.Request) -> web.Response:
        return web.Response(text="<html>a login page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/graphql", not_stash)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    client = StashClient(f"http://127.0.0.1:{unused_tcp_port}", None, timeout=5)
    try:
        with pytest.raises(StashBadResponse, match="cannot read: text/html instead of JSON"):
            await client.version()
    finally:
        client.close()
        await runner.cleanup()


async def test_a_timeout_never_cancels_the_other_calls_waiting_for_stash(
    double: StashDouble, stalled: Callable[[], AbstractContextManager[None]]
) -> None:
    client = StashClient(double.url, KEY, timeout=LIMIT)
    try:
        assert await client.version() == "v0.30.1"
        with stalled():
            outcomes = await asyncio.gather(client.version(), client.job_queue(), return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [StashTimeout, StashTimeout]
        assert await client.version() == "v0.30.1"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, StashUnauthorized), (403, StashUnauthorized), (502, StashUnreachable), (503, StashUnreachable)],
)
async def test_http_statuses_are_mapped_to_what_they_mean(
    unused_tcp_port: int, status: int, error: type[Exception]
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text="")

    app = web.Application()
    app.router.add_post("/graphql", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    client = StashClient(f"http://127.0.0.1:{unused_tcp_port}", "a-key", timeout=5)
    try:
        with pytest.raises(error):
            await client.version()
    finally:
        client.close()
        await runner.cleanup()
