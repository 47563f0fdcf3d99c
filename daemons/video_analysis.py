"""video_analysis: looks at each synced scene's video and proposes changes as a plan.

Scenes never analysed, or analysed by another analyser or version, are taken `batch_size`
at a time (least recently updated first) and analysed `max_parallel` at once. A change that
already holds in Stash (the tag on the scene, a marker at that time) is never proposed. The
proposals of a batch become one plan for plan_applier, and only once the plan is stored are
the scenes marked analysed, so a crash loses no proposal. A scene whose analysis fails (its
file missing or unreadable) is counted; after `max_failures` it is set aside and listed,
and not tried again until a person asks.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

from pydantic import Field

from daemons.analysis.analyser import Analyser, AnalysisFailed, Proposal, SceneToAnalyse
from daemons.analysis.ffmpeg import FfmpegSettings
from daemons.analysis.http import HttpAnalyserSettings
from daemons.analysis.plugins import AnalyserUnavailable, load_analyser
from daemons.plan_applier import plans_path
from daemons.plans.apply import SCENE_STATE, already_holds
from daemons.plans.store import PlanStore, ProposedChange
from daemons.stash.base import StashDaemon
from daemons.stash.library import SceneRecord
from supervisor import DaemonConfig
from supervisor.jobs import JobContext


class VideoAnalysis(StashDaemon):
    name = "video_analysis"
    title = "Video Analysis"
    reloadable = True  # every cycle reads self.config afresh

    class Config(DaemonConfig):
        interval: float = Field(300, ge=1, le=86_400, description="Seconds between checks for scenes to analyse.")
        batch_size: int = Field(50, ge=1, le=1000, description="Scenes analysed per batch; each batch is one plan.")
        max_parallel: int = Field(
            default_factory=lambda: os.cpu_count() or 1, ge=1, le=64, description="Scenes analysed at once."
        )
        max_failures: int = Field(
            3, ge=1, le=100, description="Failed analyses after which a scene is set aside until a person asks."
        )
        min_confidence: float = Field(0.0, ge=0, le=1, description="Proposals less confident than this are dropped.")
        auto_approve: bool = Field(False, description="Propose changes as approved, for plan_applier to apply at once.")
        analyser: str = Field("ffmpeg", description="The analyser: an entry point name in warden.analysers.")
        ffmpeg: FfmpegSettings = Field(
            default_factory=FfmpegSettings, description="The built-in analyser: tag names and scene-cut detection."
        )
        http: HttpAnalyserSettings | None = Field(
            None, description="Settings of the http analyser: the remote AI video server to ask."
        )

    config: Config

    async def cycle(self) -> None:
        config = self.config
        try:
            analyser = load_analyser(config.analyser, _analyser_settings(config))
        except AnalyserUnavailable as error:
            # Only a config change can help: wait for one instead of failing every cycle.
            await self.wait_for_setting(f"No analyser: {error}", until=lambda: self.config is not config)
            return
        source = f"{analyser.name} {analyser.version}"
        await self.update_status("Checking for scenes needing video analysis")
        batch = await self.library.to_analyse(source, config.max_failures, config.batch_size)
        set_aside = await self.library.set_aside(config.max_failures)
        if not batch:
            aside = f"; {len(set_aside)} set aside after {config.max_failures} failures" if set_aside else ""
            await self.update_status(f"No scenes need analysis{aside}")
            await self.sleep(config.interval, "next check for scenes needing analysis")
            return
        await self.update_status(f"Found {len(batch)} scenes needing analysis")
        analyse = functools.partial(self._analyse, batch=batch, analyser=analyser, config=config)
        result = await self.run_job("analysis", "analysis", analyse)
        failed = f"; {result['failed']} failed" if result["failed"] else ""
        await self.update_status(
            f"Analysed {result['analysed']} scenes: {result['changes']} changes proposed"
            + (f" in plan “{result['plan']}”" if result["plan"] else "")
            + failed
        )
        await self.sleep(0 if len(batch) == config.batch_size else config.interval, "next batch")

    async def _analyse(
        self, job: JobContext, *, batch: list[SceneRecord], analyser: Analyser, config: Config
    ) -> dict[str, Any]:
        """The job: analyse the batch, store one plan of what does not already hold, mark the scenes analysed."""
        source = f"{analyser.name} {analyser.version}"
        limit = asyncio.Semaphore(config.max_parallel)
        proposed: list[ProposedChange] = []
        analysed: list[str] = []
        failures = 0
        # A client and a library handle of the job's own: a job may outlive the daemon run that launched it.
        async with self.own_resources() as (stash, library):

            async def one(scene: SceneRecord) -> None:
                nonlocal failures
                async with limit:
                    try:
                        if not scene.path:
                            raise AnalysisFailed("the scene has no video file in Stash")
                        proposals = await analyser.analyse(SceneToAnalyse(scene.id, scene.path, scene.title))
                    except AnalysisFailed as failed:
                        failures += 1
                        await library.analysis_failed(scene.id, str(failed))
                        self.log.warning("analysis failed", scene=scene.id, path=scene.path, error=str(failed))
                        return
                    current = await stash.find_scene(scene.id, SCENE_STATE)
                    if current is not None:  # deleted in Stash meanwhile: nothing to propose
                        proposed.extend(_new(scene.id, proposals, current, config.min_confidence))
                    analysed.append(scene.id)
                    done = len(analysed) + failures
                    job.progress(done=done, total=len(batch), message=f"Analysed {done}/{len(batch)} scenes")

            async with asyncio.TaskGroup() as group:
                for scene in batch:
                    group.create_task(one(scene))
            name = f"Video analysis {time.strftime('%Y-%m-%d %H:%M:%S')}"
            if proposed:
                store = await PlanStore.open(plans_path(self.settings))
                try:
                    await store.create(name, source, proposed, approved=config.auto_approve)
                finally:
                    await store.close()
            await library.mark_analysed(analysed, source)  # only now: a crash before re-analyses, losing nothing
        plan = name if proposed else None
        return {"analysed": len(analysed), "failed": failures, "changes": len(proposed), "plan": plan}


def _analyser_settings(config: VideoAnalysis.Config) -> dict[str, Any]:
    if config.analyser == "ffmpeg":
        return config.ffmpeg.model_dump()
    if config.analyser == "http":
        if config.http is None:
            raise AnalyserUnavailable("the http analyser needs its settings: set video_analysis.http.url")
        return config.http.model_dump()
    return {}  # a third-party analyser: its defaults


def _new(
    scene_id: str, proposals: list[Proposal], scene: dict[str, Any], min_confidence: float
) -> list[ProposedChange]:
    return [
        ProposedChange(scene_id, proposal.field, proposal.action, proposal.value, proposal.confidence)
        for proposal in proposals
        if proposal.confidence >= min_confidence
        and not already_holds(scene, proposal.field, proposal.action, proposal.value)
    ]
