"""What an analyser is: it reads one scene's video file and proposes changes to the scene.

Analysers are pluggable. The video_analysis daemon hands each one a `SceneToAnalyse` and puts
the `Proposal`s it returns into a plan; an analyser never changes Stash itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SceneToAnalyse:
    id: str
    path: str  # the video file, as Stash knows it
    title: str = ""


@dataclass(frozen=True, slots=True)
class Proposal:
    """One change to one scene. `value` is JSON-able, so plans can be stored and shown as they are."""

    field: str  # "tags" or "markers" (room for more)
    action: str  # "add" or "remove"
    value: Any  # tags: the tag name; markers: {"seconds": float, "title": str, "primary_tag": str}
    confidence: float  # 0..1


class AnalysisFailed(Exception):
    """The scene could not be analysed (unreadable file, tool error, timeout); the message is for a person."""


class FileMissing(AnalysisFailed):
    """The scene's file does not exist or cannot be read."""


class Analyser(Protocol):
    name: str  # e.g. "ffmpeg"
    # Bumped whenever the proposals for the same file could differ: scenes analysed by an
    # older version are analysed again.
    version: str

    async def analyse(self, scene: SceneToAnalyse) -> list[Proposal]:
        """The changes proposed for `scene` (none is a valid answer); AnalysisFailed if it cannot tell."""
        ...
