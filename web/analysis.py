"""Scenes video analysis set aside: list them, and let a person ask for them to be analysed again.

A scene is set aside once its analysis failed `max_failures` times (video_analysis's setting, read
from the running configuration); video_analysis leaves it alone until a retry clears its failures.
The app holds one handle on the scene library, opened on first use (`scene_library`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemons.stash.base import library_path
from daemons.stash.library import LibraryError, SceneLibrary, SceneRecord
from daemons.video_analysis import VideoAnalysis
from supervisor.runner import DaemonRunner
from supervisor.supervisor import UnknownDaemon
from web.api import _json, _json_object, _supervisor, error
from web.handles import opened_on_first_use
from web.keys import LIBRARY

ANALYSIS = VideoAnalysis.name


#: cleanup_ctx: the app's handle on the scene library, opened on first use.
scene_library = opened_on_first_use(LIBRARY, library_path, SceneLibrary.open, (LibraryError,))


def add_routes(router: web.UrlDispatcher, base: str) -> None:
    router.add_get(f"{base}/api/analysis/set-aside", list_set_aside)
    router.add_post(f"{base}/api/analysis/retry", retry)


def scene_body(scene: SceneRecord) -> dict[str, Any]:
    return {
        "id": scene.id,
        "title": scene.title,
        "path": scene.path,
        "failures": scene.analysis_failures,
        "error": scene.analysis_error,
    }


def _analysis(request: web.Request) -> tuple[DaemonRunner, int]:
    """video_analysis's runner and its max_failures; 409 when it is not installed."""
    try:
        runner = _supervisor(request).runner(ANALYSIS)
    except UnknownDaemon:
        raise error(web.HTTPConflict, f"{ANALYSIS} is not installed, so no scene is set aside") from None
    config = runner.config
    if not isinstance(config, VideoAnalysis.Config):  # another plugin took the name
        raise error(web.HTTPConflict, f"{ANALYSIS} is not Warden's video analysis, so no scene is set aside")
    return runner, config.max_failures


async def list_set_aside(request: web.Request) -> web.Response:
    _, max_failures = _analysis(request)
    library = await request.app[LIBRARY].get()
    try:
        scenes = await library.set_aside(max_failures)
    except LibraryError as failure:
        raise error(web.HTTPServiceUnavailable, str(failure)) from None
    return _json({"max_failures": max_failures, "scenes": [scene_body(scene) for scene in scenes]})


async def retry(request: web.Request) -> web.Response:
    """Body: {"scene_ids": ["12", ...]}, or {} for every scene set aside. Clears their failures and
    wakes video_analysis; every id is checked before anything changes."""
    runner, max_failures = _analysis(request)
    body = await _json_object(request)
    unknown = set(body) - {"scene_ids"}
    if unknown:
        raise error(web.HTTPBadRequest, f"unknown fields: {', '.join(sorted(unknown))}")
    ids = body.get("scene_ids")
    if "scene_ids" in body and (
        not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i.isdigit() for i in ids)
    ):
        raise error(web.HTTPBadRequest, "scene_ids must be a non-empty list of scene ids (strings of digits)")
    library = await request.app[LIBRARY].get()
    try:
        if ids is not None:
            set_aside = {scene.id for scene in await library.set_aside(max_failures)}
            others = sorted(set(ids) - set_aside, key=int)
            if others:
                raise error(web.HTTPBadRequest, f"scenes not set aside: {', '.join(others)}")
        # Checked and cleared in one statement: only scenes still set aside are retried.
        retried = await library.retry_analysis(ids, max_failures)
    except LibraryError as failure:
        raise error(web.HTTPServiceUnavailable, str(failure)) from None
    # False when it is busy (it takes the scenes up at its next check) or not running (`state` says).
    woken = bool(retried) and runner.wake()
    return _json({"retried": retried, "woken": woken, "state": runner.status.state})
