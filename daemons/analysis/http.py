"""An analyser that asks a remote AI video server, speaking the protocol of stashhog's video server.

It sends `POST {url}/process_video/` with `{path, frame_interval, threshold, return_confidence,
vr_video}` and reads `{"result": {"json_result": {...}}}`, where `json_result` (an object, or
that object as a JSON string) holds `tags` (`{name, confidence}`) and `markers` (`{seconds,
end_seconds?, title, tags, confidence}`).
"""

from __future__ import annotations

import json

import aiohttp
from pydantic import BaseModel, Field

from daemons.analysis.analyser import AnalysisFailed, Proposal, SceneToAnalyse


class HttpAnalyserSettings(BaseModel, extra="forbid", frozen=True):
    url: str = Field(
        pattern=r"^https?://[^/?#@\s]+(/[^?#@\s]*)?$",  # no user:password@: the URL is shown in messages
        description="The analysis server, e.g. http://127.0.0.1:8084; requests go to {url}/process_video/.",
    )
    timeout: float = Field(3700, ge=1, le=86_400, description="Seconds the server may take over one scene.")
    frame_interval: float = Field(2, gt=0, le=3600, description="Seconds between the frames the server looks at.")
    threshold: float = Field(0.3, ge=0, le=1, description="Confidence below which the server reports nothing.")
    vr_video: bool = Field(False, description="Tell the server the videos are VR.")
    tag_suffix: str = Field("", max_length=50, description="Put after every tag name proposed, e.g. '_AI'.")
    version: str = Field(
        "1",
        min_length=1,
        max_length=50,
        description="Change it when the server's model changes: scenes analysed under another version are "
        "analysed again.",
    )


class _Tag(BaseModel):
    name: str = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)


class _Marker(BaseModel):
    seconds: float = Field(ge=0)
    title: str
    tags: list[str] = Field(min_length=1)  # the first is the marker's primary tag
    confidence: float = Field(ge=0, le=1)


class _Answer(BaseModel):
    tags: list[_Tag] = []
    markers: list[_Marker] = []


class HttpAnalyser:
    """Tags and markers proposed by a remote AI video server."""

    name = "http"

    def __init__(self, settings: HttpAnalyserSettings) -> None:
        self.settings = settings
        self.version = settings.version

    async def analyse(self, scene: SceneToAnalyse) -> list[Proposal]:
        # The file is not checked here: the server opens it, and may see it under another mount.
        settings = self.settings
        body = {
            "path": scene.path,
            "frame_interval": settings.frame_interval,
            "threshold": settings.threshold,
            "return_confidence": True,
            "vr_video": settings.vr_video,
        }
        endpoint = f"{settings.url.rstrip('/')}/process_video/"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.timeout)) as session,
                session.post(endpoint, json=body) as response,
            ):
                text = await response.text()
                if response.status != 200:
                    raise AnalysisFailed(f"analysis server at {settings.url} answered {response.status}: {text[:200]}")
        except TimeoutError:
            raise AnalysisFailed(f"analysis server at {settings.url} took over {settings.timeout:g} seconds") from None
        except aiohttp.ClientError as error:
            raise AnalysisFailed(f"analysis server at {settings.url} not reachable: {error}") from error
        return self._proposals(_parse(text, settings.url))

    def _proposals(self, answer: _Answer) -> list[Proposal]:
        suffix = self.settings.tag_suffix
        proposals = [Proposal("tags", "add", tag.name + suffix, tag.confidence) for tag in answer.tags]
        proposals += [
            Proposal(
                "markers",
                "add",
                {"seconds": marker.seconds, "title": marker.title, "primary_tag": marker.tags[0] + suffix},
                marker.confidence,
            )
            for marker in answer.markers
        ]
        return proposals


def _parse(text: str, url: str) -> _Answer:
    try:
        result = json.loads(text)["result"]["json_result"]
        if isinstance(result, str):  # some server versions send the object JSON-encoded once more
            result = json.loads(result)
        return _Answer.model_validate(result)
    except (ValueError, KeyError, TypeError) as error:  # ValidationError is a ValueError
        raise AnalysisFailed(f"analysis server at {url} sent an answer that cannot be read: {error}") from None
