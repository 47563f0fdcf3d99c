"""Small real video files, made with ffmpeg and read back with ffprobe.

The Stash double's scan probes files with `probe`; tests and the demo library make their
clips with `make_video`. Both are synchronous: callers on an event loop run them in a thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# Sources different enough from one another that every join between two of them is a hard cut.
_CUT_SOURCES = (
    "testsrc2",
    "smptebars",
    "color=c=0xC02020",
    "rgbtestsrc",
    "color=c=0x2040C0",
    "color=c=0x20A040",
)

# Muxer per file suffix, for the temporary file whose own suffix says nothing.
_MUXERS = {".mkv": "matroska", ".m4v": "mp4", ".wmv": "asf", ".mpg": "mpeg", ".mpeg": "mpeg"}

# ffprobe format names that Stash reports under another name.
_CONTAINERS = {"asf": "wmv"}

_ENCODER_PRESETS = {"libx264", "libx265"}


class VideoToolMissing(RuntimeError):
    """ffmpeg or ffprobe is not installed."""


@dataclass(frozen=True, slots=True)
class VideoInfo:
    size: int
    duration: float
    width: int
    height: int
    video_codec: str
    audio_codec: str  # "" when the file has no audio stream, as Stash reports it
    frame_rate: float
    bit_rate: int
    format: str


def make_video(
    path: Path | str,
    *,
    width: int,
    height: int,
    duration: float,
    fps: int = 25,
    cuts: int = 0,
    codec: str = "libx264",
    audio: bool = False,
) -> Path:
    """Write a clip of `duration` seconds with `cuts` hard scene cuts spread evenly through it.

    The file appears under its final name only once complete, so a scan never sees half a file.
    """
    target = Path(path)
    segments = cuts + 1
    # Whole frames per segment, so the clip lasts `duration` and not a frame more per cut.
    frames, extra = divmod(max(round(duration * fps), segments), segments)
    graph = []
    for i in range(segments):
        source = _CUT_SOURCES[i % len(_CUT_SOURCES)]
        seconds = (frames + (i < extra)) / fps
        options = f"size={width}x{height}:rate={fps}:duration={seconds:.6f}"
        graph.append(f"{source}{':' if '=' in source else '='}{options},format=yuv420p[s{i}]")
    joined = "".join(f"[s{i}]" for i in range(segments))
    graph.append(f"{joined}concat=n={segments}:v=1:a=0[v]")
    if audio:
        graph.append(f"sine=frequency=440:duration={duration:.3f}[a]")
    command = [_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-filter_complex", ";".join(graph)]
    command += ["-map", "[v]", "-c:v", codec]
    if codec in _ENCODER_PRESETS:
        command += ["-preset", "ultrafast"]
    if audio:
        command += ["-map", "[a]", "-c:a", "aac"]
    partial = target.with_name(f".{target.name}.part")
    command += ["-f", _MUXERS.get(target.suffix.lower(), target.suffix.lower().lstrip(".")), str(partial)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not make {target}: {error.stderr.strip()}") from error
    partial.replace(target)
    return target


def probe(path: Path | str, timeout: float | None = None) -> VideoInfo | None:
    """What ffprobe reads from `path`; None when it is not a readable video (or not within `timeout` s)."""
    command = [_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if completed.returncode != 0:
        return None
    report = json.loads(completed.stdout or "{}")
    streams = report.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    container = report.get("format", {})
    if video is None or not container:
        return None
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return VideoInfo(
        size=int(container.get("size") or os.stat(path).st_size),
        duration=float(container.get("duration") or video.get("duration") or 0.0),
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        video_codec=str(video.get("codec_name", "")),
        audio_codec=str(audio.get("codec_name", "")) if audio else "",
        frame_rate=_frame_rate(video),
        bit_rate=int(container.get("bit_rate") or 0),
        format=_container_name(str(container.get("format_name", "")), Path(path)),
    )


def _frame_rate(stream: dict[str, str]) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        numerator, _, denominator = stream.get(key, "0/0").partition("/")
        if denominator and int(denominator) and int(numerator):
            return round(float(Fraction(int(numerator), int(denominator))), 2)
    return 0.0


def _container_name(format_name: str, path: Path) -> str:
    # Stash names containers its own way (mp4, m4v, mov, matroska, webm, wmv, avi, ...). One ffprobe
    # demuxer reads mp4/m4v/mov and another matroska/webm; the suffix tells them apart here.
    suffix = path.suffix.lower().lstrip(".")
    if format_name == "mov,mp4,m4a,3gp,3g2,mj2":
        return suffix if suffix in ("mov", "m4v") else "mp4"
    if format_name == "matroska,webm":
        return "webm" if suffix == "webm" else "matroska"
    return _CONTAINERS.get(format_name, format_name.split(",", maxsplit=1)[0])


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise VideoToolMissing(f"{name} is not installed (Debian package: ffmpeg)")
    return found
