"""Demo mode: Warden with a built-in Stash, so a newcomer sees every Stash daemon at work.

The demo Stash is the Stash double the tests use, run as a process of its own on 127.0.0.1
(as a user's Stash is), its log in <data_dir>/demo/stash.log. On the first run a small
library of real videos is made with ffmpeg under <data_dir>/demo/videos, a few at a time,
and the double is asked to scan each new batch, as a real Stash would after a download. The
daemons are pointed at the double with short intervals (a value set in the config file still
wins), and the page shows a "Demo library" banner. If the double stops while Warden runs, the
Stash daemons show Stash unreachable and the banner says why; if it cannot start, the same.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemons.children import free_port
from daemons.demo import announce
from daemons.stash.client import StashClient
from daemons.stash.double_process import DoubleFailed, StashDoubleProcess
from daemons.stash.videos import VideoToolMissing, make_video
from supervisor.configfile import Overlay

if TYPE_CHECKING:
    from supervisor.app import Warden

logger = structlog.get_logger("warden.demo")

#: Short intervals, so that something happens every few seconds. Under the file's values.
DEMO_DAEMON_SETTINGS = {
    "stash_sync": {"interval": 15, "full_sync_interval": 300, "overlap": 5, "backoff_initial": 1, "backoff_max": 10},
    "stash_generation": {"interval": 20, "batch_size": 8, "poll_interval": 1, "backoff_initial": 1, "backoff_max": 10},
    "video_analysis": {"interval": 15, "batch_size": 10, "backoff_initial": 1, "backoff_max": 10},
    # The demo's plans apply by themselves, so the whole chain runs: sync, analysis, plan, apply, generation.
    "plan_applier": {"interval": 10, "auto_approve_all": True, "backoff_initial": 1, "backoff_max": 10},
}
#: The demo Stash's log, under <data_dir>/demo.
STASH_LOG = "stash.log"
#: Seconds a step of a demo Stash job takes: slow enough to watch a job's progress.
DEMO_JOB_STEP = 0.4
#: Clips made per scan: the library grows in visible steps.
CLIPS_PER_SCAN = 6


@dataclass(frozen=True, slots=True)
class DemoClip:
    name: str
    width: int
    height: int
    duration: float
    fps: int
    cuts: int


def demo_clips() -> list[DemoClip]:
    """Thirty clips of different shapes, lengths, frame rates and numbers of scene cuts."""
    shapes = [(320, 180, "wide"), (480, 270, "wide"), (640, 360, "hd"), (360, 640, "portrait"), (240, 240, "square")]
    durations = [2, 4, 7, 12, 20, 30]
    rates = [24, 25, 30, 60]
    clips = []
    for index in range(30):
        width, height, shape = shapes[index % len(shapes)]
        duration = durations[(index * 7) % len(durations)]
        cuts = (index * 3) % 5 if duration > 4 else 0
        name = f"{index + 1:02d}-{shape}-{height}p-{duration}s-{cuts}cuts.mp4"
        clips.append(DemoClip(name, width, height, duration, rates[index % len(rates)], cuts))
    return clips


@asynccontextmanager
async def demo_stash(
    warden: Warden, clips: Sequence[DemoClip] | None = None, job_step: float = DEMO_JOB_STEP
) -> AsyncIterator[None]:
    """Run the demo Stash beside Warden; the daemons use it while this context is open."""
    demo = (warden.settings.paths.data_dir / "demo").resolve()
    folder = demo / "videos"
    api_key = secrets.token_urlsafe(18)
    # Only for the daemons this Warden has: a section for another would make the settings invalid.
    daemons = {name: values for name, values in DEMO_DAEMON_SETTINGS.items() if name in warden.registry.daemons}
    double = StashDoubleProcess(api_key=api_key, log_file=demo / STASH_LOG, step_delay=job_step, library_paths=[folder])
    announce(warden, "stash", "Demo library: the built-in Stash is starting.")
    try:
        await double.start()
    except (DoubleFailed, OSError) as error:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the Stash daemons show it plainly
        await warden.config.add_overlay(
            Overlay(defaults={"daemons": daemons}, overrides={"stash": {"url": url, "api_key": api_key}})
        )
        reason = str(error).splitlines()[0]
        announce(
            warden,
            "stash",
            f"Demo library: the built-in Stash did not start ({reason}; its log is {double.log_file}), "
            "so the Stash daemons have none to reach.",
            stash_url=url,
        )
        logger.error("demo mode without Stash: the built-in Stash did not start", error=str(error))
        yield
        return
    try:
        assert double.url is not None
        overlay = Overlay(defaults={"daemons": daemons}, overrides={"stash": {"url": double.url, "api_key": api_key}})
        await warden.config.add_overlay(overlay)
        sentence = (
            f"Demo library: a built-in Stash at {double.url} with generated videos in {folder}. "
            "To use your own Stash, set stash.url in config/warden.yaml and restart Warden."
        )
        problems: list[str] = []

        def failed(problem: str) -> None:
            problems.append(problem)
            announce(warden, "stash", " ".join([sentence, *problems]))

        announce(warden, "stash", sentence, stash_url=double.url)
        logger.info("demo mode: built-in Stash running", stash=double.url, videos=str(folder), pid=double.pid)
        async with asyncio.TaskGroup() as group:
            stash = StashClient(double.url, api_key, 30)
            filling = group.create_task(fill_library(stash, folder, clips or demo_clips(), failed), name="demo-library")
            watching = group.create_task(_watch(double, failed), name="demo-stash-watch")
            try:
                yield
            finally:
                filling.cancel()
                watching.cancel()
    finally:
        await double.stop()


async def _watch(double: StashDoubleProcess, failed: Callable[[str], None]) -> None:
    """Say so when the demo Stash ends while Warden runs (the Stash daemons see it unreachable meanwhile)."""
    status = await double.exited()
    logger.error("the built-in Stash stopped", status=status, log=str(double.log_file))
    failed(
        f"It stopped unexpectedly (exit status {status}; its log is {double.log_file}): the Stash daemons show "
        "Stash unreachable until Warden is restarted."
    )


async def fill_library(
    stash: StashClient, folder: Path, clips: Sequence[DemoClip], failed: Callable[[str], None]
) -> None:
    """Make the missing demo clips a batch at a time, asking Stash to scan after each batch.

    Never raises (the demo must not take Warden down with it): `failed` says what went wrong.
    """
    try:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        pending = [clip for clip in clips if not (folder / clip.name).exists()]
        for start in range(0, len(pending), CLIPS_PER_SCAN):
            for clip in pending[start : start + CLIPS_PER_SCAN]:
                await asyncio.to_thread(
                    make_video,
                    folder / clip.name,
                    width=clip.width,
                    height=clip.height,
                    duration=clip.duration,
                    fps=clip.fps,
                    cuts=clip.cuts,
                )
            await stash.metadata_scan([str(folder)], generate=["covers"])
        if not pending:
            await stash.metadata_scan([str(folder)], generate=["covers"])
        logger.info("demo library ready", videos=str(folder), made=len(pending))
    except VideoToolMissing as missing:
        logger.error("demo library not made: ffmpeg is missing (apt-get install ffmpeg)", error=str(missing))
        failed("Its videos could not be made: ffmpeg is not installed (apt-get install ffmpeg).")
    except Exception as error:  # anything at all: the demo is never worth stopping Warden for
        logger.error("demo library not made", error=f"{type(error).__name__}: {error}")
        failed(f"Its videos could not be made: {error}")
    finally:
        stash.close()
