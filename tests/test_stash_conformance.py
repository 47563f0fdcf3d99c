"""Every GraphQL document Warden sends to Stash is valid against Stash's real schema.

The documents are collected from the wire: each method of StashClient runs against the Stash
double, which records what it receives, and each one is validated against the real schema
(../shared/stash_schema, or STASH_SCHEMA_DIR). Without that schema the test fails in CI and
skips elsewhere, saying why.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

from graphql import parse, validate

from daemons.stash.client import StashClient
from daemons.stash.double import StashDouble
from daemons.stash.library import SCENE_FIELDS, SceneLibrary
from daemons.stash_sync import StashSync
from tests.harness import make_settings, running_kernel
from tests.stashfixtures import require_real_schema

KEY = "conformance-key-0123456"


def every_call(client: StashClient, scene: str, tag: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of each public method of StashClient, with the arguments the daemons use."""
    return {
        "version": client.version,
        "find_scenes": lambda: client.find_scenes(
            {"updated_at": {"value": "2026-01-01T00:00:00Z", "modifier": "GREATER_THAN"}}, SCENE_FIELDS
        ),
        "find_scene": lambda: client.find_scene(scene, SCENE_FIELDS),
        "find_tag": lambda: client.find_tag("Resolution: HD"),
        "create_tag": lambda: client.create_tag("Scene cut"),
        "scene_markers": lambda: client.scene_markers(scene),
        "create_marker": lambda: client.create_marker(scene, "Cut", 3.5, tag, end_seconds=4.0, tag_ids=[tag]),
        "update_scene_tags": lambda: client.update_scene_tags([scene], [tag]),
        "metadata_scan": lambda: client.metadata_scan(["/media/new"], generate=["covers", "phashes"]),
        "metadata_generate": lambda: client.metadata_generate([scene], ["covers", "previews", "sprites", "phashes"]),
        "job_queue": client.job_queue,
        "find_job": lambda: client.find_job("1"),
        "stop_job": lambda: client.stop_job("1"),
    }


async def test_every_document_warden_sends_is_valid_against_stashs_real_schema(tmp_path: Path) -> None:
    schema = require_real_schema()
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        scene = double.add_scene("/media/a.mp4").id
        tag = double.add_tag("Resolution: HD").id
        client = StashClient(double.url, KEY, timeout=10)
        try:
            calls = every_call(client, scene, tag)
            methods = {
                name
                for name, member in inspect.getmembers(StashClient, inspect.iscoroutinefunction)
                if not name.startswith("_") and name != "close"
            }
            assert set(calls) == methods  # a new client method needs a call here
            for call in calls.values():
                await call()
        finally:
            client.close()
        # stash_sync's own filters, including the one for a second that overflows a page.
        for index in range(12):
            double.add_scene(f"/media/same-second-{index}.mp4", updated_at=1_800_000_000)
        settings = make_settings(
            [StashSync], tmp_path, stash={"url": double.url, "api_key": KEY}, daemons={"stash_sync": {"page_size": 10}}
        )
        async with running_kernel([StashSync], tmp_path, settings=settings) as kernel:
            await kernel.supervisor.start("stash_sync")
            runner = kernel.supervisor.runner("stash_sync")
            await kernel.until(lambda: runner.status.message.startswith("Sync completed"), timeout=30)
        library = await SceneLibrary.open(tmp_path / "library.db")
        try:
            assert await library.count() == 13  # every scene, the twelve of one second included
        finally:
            await library.close()
        documents = sorted(double.documents)
    assert any("__schema" in document for document in documents)  # stashapi's introspection at connect
    assert len(documents) > len(calls)
    problems = {document: [error.message for error in validate(schema, parse(document))] for document in documents}
    assert {document: errors for document, errors in problems.items() if errors} == {}
    assert double.schema_source == "real"  # so the variables were coerced against the real types too
