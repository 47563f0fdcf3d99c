"""Analysers as plugins (the `warden.analysers` entry points), the http analyser against a real
server on 127.0.0.1 speaking the AI video server's protocol, and video_analysis without the
settings its analyser needs."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemons.analysis import plugins
from daemons.analysis.analyser import AnalysisFailed, Proposal, SceneToAnalyse
from daemons.analysis.ffmpeg import FfmpegAnalyser
from daemons.analysis.http import HttpAnalyser, HttpAnalyserSettings
from daemons.analysis.plugins import AnalyserUnavailable, load_analyser
from daemons.stash.double import StashDouble
from daemons.video_analysis import VideoAnalysis
from tests.harness import make_settings, running_kernel

SCENE = SceneToAnalyse("7", "/media/videos/scene.mp4", "A scene")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A server answering POST /process_video/ with `handler`, at the URL yielded."""
    app = web.Application()
    app.router.add_post("/process_video/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def analyser(url: str, **settings: Any) -> HttpAnalyser:
    return HttpAnalyser(HttpAnalyserSettings(url=url, **settings))


def test_the_built_in_analysers_load_by_name_with_their_settings() -> None:
    ffmpeg = load_analyser("ffmpeg", {"tag_prefix": "ffmpeg: "})
    assert isinstance(ffmpeg, FfmpegAnalyser)
    assert ffmpeg.settings.tag_prefix == "ffmpeg: "
    http = load_analyser("http", {"url": "http://127.0.0.1:8084", "version": "model-2"})
    assert isinstance(http, HttpAnalyser)
    assert (http.name, http.version) == ("http", "model-2")


def test_an_unknown_analyser_or_refused_settings_are_named() -> None:
    with pytest.raises(AnalyserUnavailable, match=r"no analyser named 'onnx' \(known: .*ffmpeg, http"):
        load_analyser("onnx", {})
    with pytest.raises(AnalyserUnavailable, match=r"(?s)analyser 'http' .*could not be set up: .*url"):
        load_analyser("http", {})


class CountingAnalyser:
    """A third-party analyser registered as a class: it is called with its settings."""

    name = "counting"
    version = "3"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    async def analyse(self, scene: SceneToAnalyse) -> list[Proposal]:
        return []


def test_plugins_load_from_their_entry_points_and_a_broken_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = EntryPoints(
        [
            EntryPoint("counting", f"{__name__}:CountingAnalyser", plugins.ENTRY_POINT_GROUP),
            EntryPoint("broken", "no_such_package.analyser:make", plugins.ENTRY_POINT_GROUP),
        ]
    )
    monkeypatch.setattr(plugins, "entry_points", lambda group: installed if group == plugins.ENTRY_POINT_GROUP else [])
    counting = load_analyser("counting", {"step": 2})
    assert isinstance(counting, CountingAnalyser)
    assert counting.settings == {"step": 2}
    with pytest.raises(
        AnalyserUnavailable,
        match=r"analyser 'broken' \(entry point broken = no_such_package.analyser:make\) failed to load: "
        r"ModuleNotFoundError",
    ):
        load_analyser("broken", {})


@pytest.mark.parametrize("url", ["ftp://host:21", "http://user:secret@host:8084", "http://host/a?b=c", "host:8084"])
def test_the_server_url_is_http_without_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        HttpAnalyserSettings(url=url)


async def test_the_request_follows_the_protocol_and_the_answer_becomes_proposals() -> None:
    received: list[Any] = []
    found = {
        "tags": [{"name": "Outdoors", "confidence": 0.91}, {"name": "Kitchen", "confidence": 0.35}],
        "markers": [
            {"seconds": 12.5, "end_seconds": 20, "title": "Walk", "tags": ["Walking", "Park"], "confidence": 0.8}
        ],
    }

    async def process_video(request: web.Request) -> web.Response:
        received.append(await request.json())
        # The server nests its findings, JSON-encoded once more, under result.json_result.
        return web.json_response({"result": {"json_result": json.dumps(found)}})

    async with server(process_video) as url:
        proposals = await analyser(url + "/", tag_suffix="_AI", frame_interval=5, threshold=0.5, vr_video=True).analyse(
            SCENE
        )
    assert received == [
        {"path": SCENE.path, "frame_interval": 5, "threshold": 0.5, "return_confidence": True, "vr_video": True}
    ]
    assert proposals == [
        Proposal("tags", "add", "Outdoors_AI", 0.91),
        Proposal("tags", "add", "Kitchen_AI", 0.35),
        Proposal("markers", "add", {"seconds": 12.5, "title": "Walk", "primary_tag": "Walking_AI"}, 0.8),
    ]


async def test_an_answer_with_nothing_found_proposes_nothing() -> None:
    async def process_video(request: web.Request) -> web.Response:
        return web.json_response({"result": {"json_result": {"tags": [], "markers": []}}})

    async with server(process_video) as url:
        assert await analyser(url).analyse(SCENE) == []


async def test_a_server_error_fails_the_scene_with_the_servers_words() -> None:
    async def process_video(request: web.Request) -> web.Response:
        return web.Response(status=500, text="CUDA out of memory")

    async with server(process_video) as url:
        with pytest.raises(AnalysisFailed, match=r"analysis server at http://127\.0\.0\.1:\d+ answered 500: CUDA out"):
            await analyser(url).analyse(SCENE)


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        json.dumps({"tags": []}),  # not under result.json_result
        json.dumps({"result": {"json_result": "{truncated"}}),
        json.dumps({"result": {"json_result": {"tags": [{"name": "Outdoors", "confidence": 3}]}}}),
        json.dumps({"result": {"json_result": {"markers": [{"seconds": 1, "title": "x", "tags": []}]}}}),
    ],
)
async def test_an_answer_that_cannot_be_read_fails_the_scene(body: str) -> None:
    async def process_video(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    async with server(process_video) as url:
        with pytest.raises(AnalysisFailed, match="sent an answer that cannot be read"):
            await analyser(url).analyse(SCENE)


async def test_a_server_that_refuses_connections_fails_the_scene() -> None:
    # A port bound but not listening: connections to it are refused, and no other test can take it.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with pytest.raises(AnalysisFailed, match=f"analysis server at {url} not reachable"):
            await analyser(url).analyse(SCENE)


async def test_a_server_slower_than_the_timeout_fails_the_scene() -> None:
    release = asyncio.Event()

    async def process_video(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"result": {"json_result": {}}})

    async with server(process_video) as url:
        try:
            with pytest.raises(AnalysisFailed, match="took over 1 seconds"):
                await analyser(url, timeout=1).analyse(SCENE)
        finally:
            release.set()  # lets the handler end, so the server stops at once


async def test_video_analysis_shows_an_http_analyser_without_its_settings_as_a_problem(tmp_path: Path) -> None:
    async with StashDouble(api_key="analysis-test-key-0123") as double:
        settings = make_settings(
            [VideoAnalysis],
            tmp_path,
            stash={"url": double.url, "api_key": "analysis-test-key-0123"},
            daemons={VideoAnalysis.name: {"analyser": "http"}},
        )
        async with running_kernel([VideoAnalysis], tmp_path, settings=settings) as kernel:
            await kernel.supervisor.start(VideoAnalysis.name)
            runner = kernel.supervisor.runner(VideoAnalysis.name)
            await kernel.until(lambda: runner.status.message.startswith("No analyser"), 30)
            assert runner.status.message == (
                "No analyser: the http analyser needs its settings: set video_analysis.http.url"
            )
            assert runner.status.problem
