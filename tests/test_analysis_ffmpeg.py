"""The built-in ffmpeg analyser, run on real clips made by make_video: tags, cut markers, failures, cleanup."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemons.analysis.analyser import Analyser, AnalysisFailed, FileMissing, Proposal, SceneToAnalyse
from daemons.analysis.ffmpeg import FfmpegAnalyser, FfmpegSettings
from daemons.stash.videos import make_video

# make_video's cuts land exactly on a frame boundary, and ffmpeg reports that frame's own time.
CUT_TOLERANCE = 0.25


def true_cuts(duration: float, fps: int, cuts: int) -> list[float]:
    """Where make_video's hard cuts are: it splits round(duration * fps) frames into cuts + 1 runs of
    whole frames (the first runs a frame longer when they do not divide evenly), and each later run
    starts with a cut."""
    runs = cuts + 1
    frames, extra = divmod(round(duration * fps), runs)
    times, frame = [], 0
    for run in range(cuts):
        frame += frames + (run < extra)
        times.append(frame / fps)
    return times


async def analyse(path: Path | str, **settings: Any) -> list[Proposal]:
    analyser: Analyser = FfmpegAnalyser(FfmpegSettings(**settings))
    return await analyser.analyse(SceneToAnalyse(id="1", path=str(path)))


def tags(proposals: list[Proposal]) -> list[str]:
    assert all(p.action == "add" and p.confidence == 1.0 for p in proposals if p.field == "tags")
    return [p.value for p in proposals if p.field == "tags"]


def markers(proposals: list[Proposal]) -> list[Proposal]:
    return [p for p in proposals if p.field == "markers"]


def seconds(proposals: list[Proposal]) -> list[float]:
    return [p.value["seconds"] for p in markers(proposals)]


def processes_mentioning(path: Path) -> list[int]:
    """Like `pgrep -f path`: every process whose command line names `path`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # it exited while we looked
                continue
    return found


@dataclass
class Children:
    """The processes the analyser starts, by tool name, each with an Event set once it runs."""

    started: dict[str, list[asyncio.subprocess.Process]] = field(default_factory=lambda: defaultdict(list))
    running: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))

    def all(self) -> list[asyncio.subprocess.Process]:
        return [process for processes in self.started.values() for process in processes]


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> Iterator[Children]:
    tracked = Children()
    spawn = asyncio.create_subprocess_exec

    async def tracking_spawn(program: str, *args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await spawn(program, *args, **kwargs)
        tracked.started[Path(program).name].append(process)
        tracked.running[Path(program).name].set()
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", tracking_spawn)
    yield tracked
    for process in tracked.all():
        assert process.returncode is not None, f"child {process.pid} outlived the analysis"
        assert not Path(f"/proc/{process.pid}").exists(), f"child {process.pid} was not reaped"


def assert_killed(process: asyncio.subprocess.Process) -> None:
    assert process.returncode == -signal.SIGKILL
    assert not Path(f"/proc/{process.pid}").exists()  # reaped: no zombie


async def test_a_1080p_clip_with_two_hard_cuts(tmp_path, children):
    # 31 frames in runs of 11, 10 and 10: cuts at 2.2 s and 4.2 s.
    clip = make_video(tmp_path / "hd.mp4", width=1920, height=1080, duration=6.2, fps=5, cuts=2)
    proposals = await analyse(clip)
    assert tags(proposals) == ["1080p", "Short", "No audio"]
    found = markers(proposals)
    assert len(found) == 2
    for proposal, expected in zip(found, true_cuts(6.2, 5, 2), strict=True):
        assert proposal.value["seconds"] == pytest.approx(expected, abs=CUT_TOLERANCE)
        assert 0.4 < proposal.confidence <= 1
    assert [p.value["title"] for p in found] == ["Scene 2", "Scene 3"]  # scene 1 starts at 0
    assert {p.value["primary_tag"] for p in found} == {"Scene cut"}
    assert sorted(children.started) == ["ffmpeg", "ffprobe"]


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(720, 1280, ["720p", "Vertical"]), (360, 640, ["SD", "Vertical"]), (64, 36, ["SD"])],
)
async def test_resolution_class_goes_by_the_smaller_side(tmp_path, width, height, expected):
    clip = make_video(tmp_path / "clip.mp4", width=width, height=height, duration=1, fps=5)
    assert tags(await analyse(clip, detect_cuts=False))[:-2] == expected  # then "Short", "No audio"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args], check=True)


async def test_a_landscape_picture_stored_turned_is_vertical(tmp_path):
    # As phones store vertical video: a landscape picture, and a display matrix saying "turn by 90°".
    clip = make_video(tmp_path / "clip.mp4", width=64, height=36, duration=1, fps=5)
    ffmpeg("-i", str(clip), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(tmp_path / "turned.mp4"))
    assert tags(await analyse(tmp_path / "turned.mp4", detect_cuts=False))[:2] == ["SD", "Vertical"]


@pytest.mark.parametrize(("fps", "high"), [(60, True), (25, False)])
async def test_high_frame_rate(tmp_path, fps, high):
    clip = make_video(tmp_path / "clip.mp4", width=64, height=36, duration=1, fps=fps)
    assert ("High frame rate" in tags(await analyse(clip, detect_cuts=False))) is high


@pytest.mark.parametrize(("audio", "silent"), [(False, True), (True, False)])
async def test_no_audio(tmp_path, audio, silent):
    clip = make_video(tmp_path / "clip.mp4", width=64, height=36, duration=1, fps=10, audio=audio)
    assert ("No audio" in tags(await analyse(clip, detect_cuts=False))) is silent


@pytest.mark.parametrize(
    ("codec", "suffix", "expected"),
    [("libx265", ".mp4", "HEVC"), ("libvpx-vp9", ".webm", "VP9"), ("libx264", ".mp4", None)],
)
async def test_codec_tags(tmp_path, codec, suffix, expected):
    # make_video raises, naming ffmpeg's complaint, if Debian's ffmpeg lacks the encoder.
    clip = make_video(tmp_path / f"clip{suffix}", width=64, height=36, duration=1, fps=10, codec=codec)
    found = set(tags(await analyse(clip, detect_cuts=False))) & {"HEVC", "AV1", "VP9"}
    assert found == ({expected} if expected else set())


@pytest.mark.parametrize(("duration", "expected"), [(59, "Short"), (60, None), (1200, "Long")])
async def test_duration_classes(tmp_path, duration, expected):
    clip = make_video(tmp_path / "clip.mp4", width=32, height=18, duration=duration, fps=1)
    found = set(tags(await analyse(clip, detect_cuts=False))) & {"Short", "Long"}
    assert found == ({expected} if expected else set())


async def test_tag_names_then_the_prefix(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", width=64, height=36, duration=5, fps=10, cuts=1)
    proposals = await analyse(clip, tag_prefix="ffmpeg: ", tag_names={"SD": "Small", "No audio": "Silent"})
    assert tags(proposals) == ["ffmpeg: Small", "ffmpeg: Short", "ffmpeg: Silent"]
    assert [p.value["primary_tag"] for p in markers(proposals)] == ["ffmpeg: Scene cut"]


def test_settings_refuse_unknown_tags_and_fields():
    with pytest.raises(ValidationError, match="tag_names"):
        FfmpegSettings(tag_names={"1080P": "Full HD"})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="scene_treshold"):
        FfmpegSettings(scene_treshold=0.3)
    with pytest.raises(ValidationError, match="max_markers"):
        FfmpegSettings(max_markers=0)
    schema = FfmpegSettings.model_json_schema()["properties"]
    assert all(entry.get("description") for entry in schema.values())


async def test_cuts_closer_than_the_gap_keep_the_stronger(tmp_path):
    # Cuts every second; the default threshold misses some colour-to-colour cuts at this size.
    clip = make_video(tmp_path / "cuts.mp4", width=64, height=36, duration=8, fps=10, cuts=7)
    every = markers(await analyse(clip, scene_threshold=0.3, min_cut_gap=0))
    assert seconds(every) == pytest.approx(true_cuts(8, 10, 7), abs=CUT_TOLERANCE)
    strength = {p.value["seconds"]: p.confidence for p in every}

    kept = markers(await analyse(clip, scene_threshold=0.3, min_cut_gap=2))
    times = [p.value["seconds"] for p in kept]
    assert times and set(times) <= set(strength)
    assert all(later - earlier >= 2 for earlier, later in itertools.pairwise(times))
    assert all(2 <= t <= 8 - 2 for t in times)
    for t, score in strength.items():
        if t not in times and 2 <= t <= 6:  # dropped for a stronger cut nearby, not for being near an end
            assert any(abs(t - k) < 2 and strength[k] >= score for k in times), t
    assert [p.value["title"] for p in kept] == [f"Scene {n}" for n in range(2, len(kept) + 2)]

    strongest = markers(await analyse(clip, scene_threshold=0.3, min_cut_gap=0, max_markers=2))
    assert sorted(p.confidence for p in strongest) == sorted(strength.values())[-2:]
    assert seconds(strongest) == sorted(seconds(strongest))
    assert [p.value["title"] for p in strongest] == ["Scene 2", "Scene 3"]


async def test_no_cut_detection_runs_only_ffprobe(tmp_path, children):
    clip = make_video(tmp_path / "clip.mp4", width=64, height=36, duration=3, fps=10, cuts=1)
    assert markers(await analyse(clip, detect_cuts=False)) == []
    assert list(children.started) == ["ffprobe"]


async def test_a_missing_file(tmp_path, children):
    with pytest.raises(FileMissing, match="does not exist"):
        await analyse(tmp_path / "gone.mp4")
    assert children.all() == []


async def test_a_text_file_named_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n" * 100)
    with pytest.raises(AnalysisFailed) as failure:
        await analyse(fake)
    assert str(failure.value) == "ffprobe cannot read the file: moov atom not found"
    assert not isinstance(failure.value, FileMissing)


async def test_a_file_without_video(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(tmp_path / "sound.m4a"))
    with pytest.raises(AnalysisFailed, match=r"sound\.m4a has no video stream"):
        await analyse(tmp_path / "sound.m4a")


async def test_missing_tools_say_what_to_install(tmp_path, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", width=32, height=18, duration=1, fps=5)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnalysisFailed, match="ffprobe is not installed; install it with `apt-get install ffmpeg`"):
        await analyse(clip)


async def test_a_run_past_the_timeout_is_killed(tmp_path, children):
    fifo = tmp_path / "blocks.mp4"
    os.mkfifo(fifo)  # ffprobe waits forever for a writer
    with pytest.raises(AnalysisFailed, match="ffprobe did not finish within 1 s"):
        await analyse(fifo, timeout=1)
    [process] = children.started["ffprobe"]
    assert_killed(process)
    assert processes_mentioning(fifo) == []


async def test_cut_detection_has_more_time_per_minute_of_video(tmp_path, children, monkeypatch):
    clip = make_video(tmp_path / "half-minute.mp4", width=32, height=18, duration=30, fps=5)
    tools = tmp_path / "bin"  # the real ffprobe, and an ffmpeg that hangs
    tools.mkdir()
    (tools / "ffprobe").symlink_to(shutil.which("ffprobe"))
    (tools / "ffmpeg").write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 600\n")
    (tools / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    # 1 s, plus 4 s per minute for half a minute of video.
    with pytest.raises(AnalysisFailed, match=r"^ffmpeg did not finish within 3(\.\d+)? s$"):
        await analyse(clip, timeout=1, timeout_per_minute=4)
    assert_killed(children.started["ffmpeg"][0])


async def cancel_while(tool: str, path: Path, children: Any) -> None:
    """Cancel an analysis of `path` once `tool` runs; the tool's process must be killed with it."""
    task = asyncio.create_task(analyse(path))
    await children.running[tool].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_killed(children.started[tool][0])
    assert processes_mentioning(path) == []


async def test_cancelling_kills_a_blocked_ffprobe(tmp_path, children):
    fifo = tmp_path / "blocks.mp4"
    os.mkfifo(fifo)
    await cancel_while("ffprobe", fifo, children)


async def test_cancelling_kills_ffmpeg_mid_decode(tmp_path, children):
    # Five minutes of tiny frames: ffmpeg needs a good half second, so the cancel lands mid-run.
    clip = make_video(tmp_path / "long.mkv", width=32, height=18, duration=300, fps=25)
    await cancel_while("ffmpeg", clip, children)
