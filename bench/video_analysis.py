"""video_analysis on the demo library's clips: scenes analysed per minute, by max_parallel.

The clips are made once (not timed); then, for each max_parallel, a fresh data folder, the
scenes as stash_sync leaves them, and the real daemon with the built-in ffmpeg analyser
against the Stash double, from start until every scene is analysed and its plan stored; then
the same clips through the analyser alone, as many at once, for the daemon's own share.
"CPU per scene" is ffprobe's and ffmpeg's (this process's children). Prints a table and
writes bench/results/video_analysis.json (video_analysis.tiny.json with --tiny).

    python -m bench.video_analysis [--clips 30] [--parallel 1 2 4] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import write_results
from daemons.analysis.analyser import SceneToAnalyse
from daemons.analysis.ffmpeg import FfmpegAnalyser
from daemons.plans.store import PlanStore
from daemons.stash.client import StashClient
from daemons.stash.demo import demo_clips
from daemons.stash.double import StashDouble
from daemons.stash.double.records import Scene
from daemons.stash.videos import make_video
from daemons.video_analysis import VideoAnalysis
from tests.harness import make_settings, running_kernel
from tests.stashfixtures import as_synced

KEY = "bench-analysis-api-key-0123"
NAME = VideoAnalysis.name


@dataclass(frozen=True)
class Run:
    max_parallel: int
    scenes: int
    seconds: float
    analyser_alone_seconds: float  # the same clips through FfmpegAnalyser directly, as many at once
    tool_cpu_seconds_per_scene: float
    changes_proposed: int
    message: str

    @property
    def scenes_per_minute(self) -> float:
        return round(self.scenes / self.seconds * 60, 1)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def analyse_all(double: StashDouble, scenes: list[Scene], parallel: int, folder: Path) -> Run:
    await as_synced(folder / "library.db", scenes)
    config = {"interval": 86_400, "batch_size": len(scenes), "max_parallel": parallel}
    settings = make_settings([VideoAnalysis], folder, stash={"url": double.url, "api_key": KEY}, daemons={NAME: config})
    async with running_kernel([VideoAnalysis], folder, settings=settings) as kernel:
        status = kernel.supervisor.runner(NAME).status
        started, cpu = time.perf_counter(), children_cpu()
        await kernel.supervisor.start(NAME)
        await kernel.until(lambda: status.message.startswith("Analysed "), timeout=3600)
        seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
        message = status.message
    store = await PlanStore.open(folder / "plans.db")
    try:
        changes = sum(sum(plan.counts.values()) for plan in await store.plans())
    finally:
        await store.close()
    alone = await analyser_alone(scenes, parallel)
    return Run(parallel, len(scenes), round(seconds, 2), round(alone, 2), round(cpu / len(scenes), 3), changes, message)


async def analyser_alone(scenes: list[Scene], parallel: int) -> float:
    """Seconds the analyser takes on its own: the daemon's overhead (Stash, plan, library) is the rest."""
    analyser, limit = FfmpegAnalyser(), asyncio.Semaphore(parallel)

    async def one(scene: Scene) -> None:
        async with limit:
            await analyser.analyse(SceneToAnalyse(scene.id, str(scene.path)))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for scene in scenes:
            group.create_task(one(scene))
    return time.perf_counter() - started


async def measure(clip_count: int, parallels: list[int]) -> list[Run]:
    with tempfile.TemporaryDirectory() as folder:
        media = Path(folder) / "media"
        media.mkdir()
        clips = [
            make_video(media / c.name, width=c.width, height=c.height, duration=c.duration, fps=c.fps, cuts=c.cuts)
            for c in demo_clips()[:clip_count]
        ]
        async with StashDouble(api_key=KEY) as double:
            scenes = [double.add_scene(str(clip)) for clip in clips]
            # The double's first answer builds its schema (most of a second, on this event loop): not Warden's time.
            warm_up = StashClient(double.url, KEY, 30)
            try:
                await warm_up.find_scene(scenes[0].id, "id")
            finally:
                warm_up.close()
            return [
                await analyse_all(double, scenes, parallel, Path(folder) / f"data-{parallel}") for parallel in parallels
            ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    clips = len(demo_clips())
    parser.add_argument("--clips", type=int, default=clips, choices=range(1, clips + 1), metavar=f"1..{clips}")
    cores = os.cpu_count() or 1
    parser.add_argument("--parallel", type=int, nargs="+", default=sorted({1, 2, cores}))
    parser.add_argument("--tiny", action="store_true", help="2 clips, one at a time, to video_analysis.tiny.json")
    options = parser.parse_args()
    if options.tiny:
        options.clips, options.parallel = 2, [1]
    results = asyncio.run(measure(options.clips, options.parallel))
    print("max_parallel  scenes  seconds  scenes/min  analyser alone s  tool CPU s/scene  changes")
    for run in results:
        print(
            f"{run.max_parallel:>12}  {run.scenes:>6}  {run.seconds:>7}  {run.scenes_per_minute:>10}"
            f"  {run.analyser_alone_seconds:>16}  {run.tool_cpu_seconds_per_scene:>16}  {run.changes_proposed:>7}"
        )
    first = results[0]
    for run in results:
        overhead = run.seconds / run.analyser_alone_seconds
        print(f"max_parallel {run.max_parallel}: the daemon takes {overhead:.2f}x the analyser's own time", end="")
        print(f"; {first.seconds / run.seconds:.2f}x the rate of max_parallel {first.max_parallel}")
    runs = [asdict(run) | {"scenes_per_minute": run.scenes_per_minute} for run in results]
    write_results("video_analysis", {"cores": cores, "runs": runs}, tiny=options.tiny)


if __name__ == "__main__":
    main()
