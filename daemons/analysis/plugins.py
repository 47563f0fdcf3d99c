"""Finding analysers: each is an entry point in the `warden.analysers` group, as daemons are in `warden.daemons`.

An entry point names a callable (a factory function, or a class) that takes the analyser's
settings as a mapping and returns an `Analyser`. The built-in ones are registered in
pyproject.toml and point at the factories below.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from daemons.analysis.analyser import Analyser
from daemons.analysis.ffmpeg import FfmpegAnalyser, FfmpegSettings
from daemons.analysis.http import HttpAnalyser, HttpAnalyserSettings

ENTRY_POINT_GROUP = "warden.analysers"


class AnalyserUnavailable(Exception):
    """The configured analyser cannot be had; the message is for a person."""


def load_analyser(name: str, settings: Mapping[str, Any]) -> Analyser:
    found = {entry_point.name: entry_point for entry_point in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise AnalyserUnavailable(f"no analyser named {name!r} (known: {known})")
    entry_point = found[name]
    source = f"entry point {name} = {entry_point.value}"
    try:
        factory = entry_point.load()
    except Exception as error:
        raise AnalyserUnavailable(f"analyser {name!r} ({source}) failed to load: {_describe(error)}") from error
    try:
        analyser = factory(settings)
    except Exception as error:  # settings refused, most often
        raise AnalyserUnavailable(f"analyser {name!r} ({source}) could not be set up: {_describe(error)}") from error
    if not (isinstance(getattr(analyser, "name", None), str) and isinstance(getattr(analyser, "version", None), str)):
        raise AnalyserUnavailable(f"analyser {name!r} ({source}) has no string `name` and `version`")
    return analyser  # type: ignore[no-any-return]


def ffmpeg(settings: Mapping[str, Any]) -> Analyser:
    return FfmpegAnalyser(FfmpegSettings.model_validate(settings))


def http(settings: Mapping[str, Any]) -> Analyser:
    return HttpAnalyser(HttpAnalyserSettings.model_validate(settings))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
