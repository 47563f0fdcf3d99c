"""Warden's built-in analyser: technical tags read by ffprobe, and scene-cut markers found by ffmpeg.

Both tools run on this machine as child processes of the event loop, each within its time limit
(`timeout`, plus `timeout_per_minute` of video for the cut detection, which decodes the whole
file); a run that times out or is cancelled kills its child and waits until it is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from daemons.analysis.analyser import AnalysisFailed, FileMissing, Proposal, SceneToAnalyse

# Bump whenever the proposals for the same file could change (a new tag, other cut detection,
# other defaults): every scene analysed by an older version is then analysed again.
VERSION = "1"

BuiltinTag = Literal[
    "2160p",
    "1440p",
    "1080p",
    "720p",
    "SD",
    "Vertical",
    "High frame rate",
    "HEVC",
    "AV1",
    "VP9",
    "Short",
    "Long",
    "No audio",
]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=100)]

# Classes by the smaller side of the picture, so that a vertical 1080x1920 clip is 1080p.
_RESOLUTIONS: tuple[tuple[int, BuiltinTag], ...] = ((2160, "2160p"), (1440, "1440p"), (1080, "1080p"), (720, "720p"))
_CODECS: dict[str, BuiltinTag] = {"hevc": "HEVC", "av1": "AV1", "vp9": "VP9"}
_HIGH_FRAME_RATE = 48.0
_SHORT = 60.0  # seconds
_LONG = 1200.0

# One kept frame as metadata=print writes it: "frame:3 pts:30720 pts_time:3\nlavfi.scene_score=0.419184".
_CUT = re.compile(r"pts_time:(\d+(?:\.\d+)?)\s+lavfi\.scene_score=(\d+(?:\.\d+)?)")
_LOG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")


#: Seconds one run of ffprobe or ffmpeg may take at most, however long the video.
MAX_TIMEOUT = 86_400


class FfmpegSettings(BaseModel, extra="forbid", frozen=True, validate_default=True):
    tag_prefix: str = Field("", max_length=50, description="Put before every tag name proposed, e.g. 'ffmpeg: '.")
    tag_names: dict[BuiltinTag, TagName] = Field(
        default_factory=dict,
        description="Your names for built-in tags, e.g. {'1080p': 'Full HD'}; a tag not listed keeps its own name.",
    )
    scene_threshold: float = Field(
        0.4,
        ge=0.01,
        le=0.99,
        description="ffmpeg scene score (0..1, change from the previous frame) above which a frame starts a new "
        "scene. Lower finds softer cuts, and more false ones.",
    )
    min_cut_gap: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Seconds: of two cuts closer than this only the stronger is kept, and no cut is kept this "
        "close to the start or the end.",
    )
    max_markers: int = Field(20, ge=1, le=1000, description="Most cut markers per scene; the strongest cuts are kept.")
    marker_tag: TagName = Field("Scene cut", description="Primary tag of the cut markers (the tag prefix applies).")
    detect_cuts: bool = Field(
        True, description="Look for scene cuts. This decodes the whole video; without it only ffprobe runs."
    )
    timeout: float = Field(
        600, ge=1, le=MAX_TIMEOUT, description="Seconds one run of ffprobe or ffmpeg may take before the scene fails."
    )
    timeout_per_minute: float = Field(
        60,
        ge=0,
        le=3600,
        description="Seconds the cut detection may take per minute of video, on top of timeout: it decodes the "
        "whole file, so a long 4K film needs far longer than a clip.",
    )


@dataclass(frozen=True, slots=True)
class _Video:
    width: int  # as shown: swapped when the picture is stored turned by 90°; 0 if unknown
    height: int
    frame_rate: float
    codec: str
    duration: float  # seconds; 0 if unknown
    has_audio: bool


@dataclass(frozen=True, slots=True)
class _Cut:
    seconds: float
    score: float  # ffmpeg's scene score, 0..1


class FfmpegAnalyser:
    """Technical tags (resolution, orientation, frame rate, codec, length, audio) and scene-cut markers."""

    name = "ffmpeg"
    version = VERSION

    def __init__(self, settings: FfmpegSettings | None = None) -> None:
        self.settings = settings or FfmpegSettings()

    async def analyse(self, scene: SceneToAnalyse) -> list[Proposal]:
        await asyncio.to_thread(_check_readable, scene.path)  # a stalled network mount must not stall the loop
        video = await self._probe(scene.path)
        proposals = [Proposal("tags", "add", self._tag_name(tag), 1.0) for tag in _technical_tags(video)]
        if self.settings.detect_cuts:
            # Capped: a broken file may claim to last for years.
            timeout = min(self.settings.timeout + self.settings.timeout_per_minute * video.duration / 60, MAX_TIMEOUT)
            proposals += self._markers(await self._find_cuts(scene.path, timeout), video.duration)
        return proposals

    def _tag_name(self, tag: BuiltinTag) -> str:
        return self.settings.tag_prefix + self.settings.tag_names.get(tag, tag)

    async def _probe(self, path: str) -> _Video:
        command = ("-v", "error", "-print_format", "json", "-show_format", "-show_streams", _input(path))
        returncode, out, err = await self._run(self.settings.timeout, "ffprobe", *command)
        if returncode != 0:
            raise AnalysisFailed(f"ffprobe cannot read the file: {_first_line(err, returncode)}")
        try:
            video = _read_report(json.loads(out))
        except (ValueError, TypeError, AttributeError) as error:
            raise AnalysisFailed(f"ffprobe's report on {path} makes no sense: {error}") from None
        if video is None:
            raise AnalysisFailed(f"{path} has no video stream")
        return video

    async def _find_cuts(self, path: str, timeout: float) -> list[_Cut]:
        # select keeps the frames whose scene score (0..1) passes the threshold; metadata=print writes
        # each one's pts_time and lavfi.scene_score to stdout ('pipe\:1', escaped for the filter graph),
        # which leaves stderr to errors. showinfo prints the time but no score, and scdet scores on a
        # 0..100 scale of its own. Checked with Debian 12's ffmpeg 5.1: a cut's time is its frame's own.
        graph = f"select='gt(scene,{self.settings.scene_threshold})',metadata=print:file='pipe\\:1'"
        returncode, out, err = await self._run(
            timeout,
            "ffmpeg",
            *("-nostdin", "-hide_banner", "-nostats", "-v", "error", "-i", _input(path)),
            *("-map", "0:V:0", "-filter:v", graph, "-f", "null", "-"),  # 0:V: a video stream that is not cover art
        )
        if returncode != 0:
            raise AnalysisFailed(f"ffmpeg cannot decode the video: {_first_line(err, returncode)}")
        return [_Cut(float(seconds), float(score)) for seconds, score in _CUT.findall(out)]

    def _markers(self, cuts: list[_Cut], duration: float) -> list[Proposal]:
        settings = self.settings
        kept = _strongest_apart(cuts, duration, settings.min_cut_gap, settings.max_markers)
        tag = settings.tag_prefix + settings.marker_tag
        # A marker starts a scene and the video's start is scene 1, so the first cut starts scene 2.
        return [
            Proposal(
                "markers",
                "add",
                {"seconds": round(cut.seconds, 2), "title": f"Scene {number}", "primary_tag": tag},
                min(cut.score, 1.0),
            )
            for number, cut in enumerate(kept, start=2)
        ]

    async def _run(self, timeout: float, tool: str, *args: str) -> tuple[int, str, str]:
        """Run `tool` to its end, killed after `timeout` seconds: (exit status, stdout, stderr)."""
        executable = shutil.which(tool)
        if executable is None:
            raise AnalysisFailed(f"{tool} is not installed; install it with `apt-get install ffmpeg`")
        try:
            async with asyncio.timeout(timeout):
                process = await asyncio.create_subprocess_exec(
                    executable,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                try:
                    out, err = await process.communicate()
                finally:
                    await _reap(process)
        except TimeoutError:
            raise AnalysisFailed(f"{tool} did not finish within {timeout:g} s") from None
        except OSError as error:
            raise AnalysisFailed(f"{tool} could not be started: {error}") from None
        assert process.returncode is not None  # communicate() returns once the child has exited
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Kill `process` unless it has exited, and wait until it is reaped."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            process.kill()
        # Should a second cancellation cut this wait short, the loop's child watcher still reaps it.
        await process.wait()


def _check_readable(path: str) -> None:
    """FileMissing unless `path` exists and may be read. Blocking: run in a thread."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise FileMissing(f"{path} does not exist") from None
    except OSError as error:
        raise FileMissing(f"{path} cannot be read: {error.strerror}") from None
    if not os.access(path, os.R_OK):
        raise FileMissing(f"{path} cannot be read: permission denied")


def _input(path: str) -> str:
    # The file: protocol, so that a name is never read as an option ("-x") or another protocol ("a:b").
    return f"file:{path}"


def _first_line(err: str, returncode: int) -> str:
    for line in err.splitlines():
        # Without the "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55fddb407180] " that names a demuxer by its address.
        message = _LOG_PREFIX.sub("", line).strip()
        if message:
            return message
    return f"exit status {returncode}"


def _read_report(report: dict[str, Any]) -> _Video | None:
    """What ffprobe's JSON says of the film; None if it has no video stream."""
    streams = report.get("streams", [])
    # Cover art is a video stream too; the film is the first video stream that is not one.
    video = next(
        (s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")),
        None,
    )
    if video is None:
        return None
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if _rotation(video) % 180 == 90:
        width, height = height, width
    return _Video(
        width=width,
        height=height,
        frame_rate=_frame_rate(video),
        codec=str(video.get("codec_name", "")),
        duration=float(report.get("format", {}).get("duration") or video.get("duration") or 0),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def _rotation(stream: dict[str, Any]) -> int:
    # Phones store vertical video as a landscape picture to be shown turned. ffprobe 5 and later
    # report the display matrix as side data; older ones as a "rotate" tag.
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return round(float(side_data["rotation"]))
    return round(float(stream.get("tags", {}).get("rotate", 0)))


def _frame_rate(stream: dict[str, Any]) -> float:
    # avg_frame_rate is "0/0" for some streams; the container's r_frame_rate is then the best guess.
    for key in ("avg_frame_rate", "r_frame_rate"):
        numerator, _, denominator = str(stream.get(key, "")).partition("/")
        if numerator.isdigit() and denominator.isdigit() and int(numerator) and int(denominator):
            return float(Fraction(int(numerator), int(denominator)))
    return 0.0


def _technical_tags(video: _Video) -> list[BuiltinTag]:
    tags: list[BuiltinTag] = []
    if video.width and video.height:
        smaller = min(video.width, video.height)
        tags.append(next((name for least, name in _RESOLUTIONS if smaller >= least), "SD"))
        if video.height > video.width:
            tags.append("Vertical")
    if video.frame_rate >= _HIGH_FRAME_RATE:
        tags.append("High frame rate")
    if video.codec in _CODECS:
        tags.append(_CODECS[video.codec])
    if 0 < video.duration < _SHORT:
        tags.append("Short")
    elif video.duration >= _LONG:
        tags.append("Long")
    if not video.has_audio:
        tags.append("No audio")
    return tags


def _strongest_apart(cuts: list[_Cut], duration: float, gap: float, limit: int) -> list[_Cut]:
    """At most `limit` of the strongest cuts, no two closer than `gap` and none closer than that to
    the start or (when known) the end, in time order.

    Taking the strongest first means that of two close cuts the stronger stays, and that a run of
    close cuts (a flash, a fast montage) keeps its strongest cut rather than whichever came first.
    """
    kept: list[_Cut] = []
    for cut in sorted(cuts, key=lambda cut: (-cut.score, cut.seconds)):
        if len(kept) == limit:
            break
        near_an_end = cut.seconds < gap or (duration > 0 and duration - cut.seconds < gap)
        if not near_an_end and all(abs(cut.seconds - other.seconds) >= gap for other in kept):
            kept.append(cut)
    return sorted(kept, key=lambda cut: cut.seconds)
