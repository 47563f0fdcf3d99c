"""video_analysis: looks at each synced scene's video and proposes changes as a plan.

Scenes never analysed, or analysed by another analyser or version, are taken `batch_size`
at a time (least recently updated first) and analysed `max_parallel` at once. A change that
already holds in Stash (the tag on the scene, a marker at that time), or already waits in a
plan, is never proposed. The
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

from daemons.analysis.analyser import Analyser, AnalysisFailed, FileMissing, Proposal, SceneToAnalyse
from daemons.analysis.ffmpeg import FfmpegSettings
from daemons.analysis.http import HttpAnalyserSettings
from daemons.analysis.plugins import AnalyserUnavailable, load_analyser
from daemons.plan_applier import open_plans
from daemons.plans.apply import SCENE_STATE, already_holds, already_proposed
from daemons.plans.store import Change, ProposedChange
from daemons.stash.base import StashDaemon
from daemons.stash.client import StashError
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
        if not batch:
            set_aside = await self.library.set_aside(config.max_failures)
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
        more = len(batch) == config.batch_size and result["analysed"] > 0  # a full batch that went well
        await self.sleep(0 if more else config.interval, "next batch")

    async def _analyse(
        self, job: JobContext, *, batch: list[SceneRecord], analyser: Analyser, config: Config
    ) -> dict[str, Any]:
        """The job: analyse the batch, store one plan of what does not already hold, mark the scenes analysed."""
        source = f"{analyser.name} {analyser.version}"
        limit = asyncio.Semaphore(config.max_parallel)
        proposed: list[ProposedChange] = []
        analysed: list[str] = []
        failed: dict[str, AnalysisFailed] = {}
        stash_trouble: list[StashError] = []
        # A client, a library handle and a plan store of the job's own: a job may outlive the daemon run
        # that launched it.
        async with self.own_resources() as (stash, library), open_plans(self.settings) as store:
            waiting: dict[str, list[Change]] = {}  # changes to the batch's scenes still waiting in a plan
            for change in await store.open_changes(scene.id for scene in batch):
                waiting.setdefault(change.scene_id, []).append(change)

            async def one(scene: SceneRecord) -> None:
                async with limit:
                    try:
                        if not scene.path:
                            raise FileMissing("the scene has no video file in Stash")
                        proposals = await analyser.analyse(SceneToAnalyse(scene.id, scene.path, scene.title))
                    except AnalysisFailed as failure:
                        failed[scene.id] = failure
                        return
                    except Exception as error:  # a plugin's bug fails this scene, not the batch
                        self.log.exception("the analyser failed unexpectedly", scene=scene.id)
                        failed[scene.id] = AnalysisFailed(f"{analyser.name} failed: {type(error).__name__}: {error}")
                        return
                    try:
                        current = await stash.find_scene(scene.id, SCENE_STATE)
                    except StashError as error:  # the scene stays to analyse; the job reports Stash's trouble
                        stash_trouble.append(error)
                        return
                    if current is not None:  # deleted in Stash meanwhile: nothing to propose
                        fresh = _new(scene.id, proposals, current, waiting.get(scene.id, []), config.min_confidence)
                        proposed.extend(fresh)
                    analysed.append(scene.id)
                    done = len(analysed) + len(failed)
                    job.progress(done=done, total=len(batch), message=f"Analysed {done}/{len(batch)} scenes")

            async with asyncio.TaskGroup() as group:
                for scene in batch:
                    group.create_task(one(scene))
            name = f"Video analysis {time.strftime('%Y-%m-%d %H:%M:%S')}"
            if proposed:
                await store.create(name, source, proposed, approved=config.auto_approve)
            await library.mark_analysed(analysed, source)  # only now: a crash before re-analyses, losing nothing
            if len(batch) > 1 and not analysed and all(isinstance(f, FileMissing) for f in failed.values()):
                # Not one file of the batch is there: the library's disk is missing, not the scenes' files.
                raise AnalysisFailed(f"none of the {len(batch)} scenes' files can be read: is the library mounted?")
            for scene_id, failure in failed.items():
                await library.analysis_failed(scene_id, str(failure))
                self.log.warning("analysis failed", scene=scene_id, error=str(failure))
        if stash_trouble and not analysed:
            raise stash_trouble[0]
        plan = name if proposed else None
        return {"analysed": len(analysed), "failed": len(failed), "changes": len(proposed), "plan": plan}


def _analyser_settings(config: VideoAnalysis.Config) -> dict[str, Any]:
    if config.analyser == "ffmpeg":
        return config.ffmpeg.model_dump()
    if config.analyser == "http":
        if config.http is None:
            raise AnalyserUnavailable("the http analyser needs its settings: set video_analysis.http.url")
        return config.http.model_dump()
    return {}  # a third-party analyser: its defaults


def _new(
    scene_id: str, proposals: list[Proposal], scene: dict[str, Any], waiting: list[Change], min_confidence: float
) -> list[ProposedChange]:
    """The proposals worth a change: confident enough, not already true in Stash, and not already
    waiting in a plan (stored by a run that crashed before marking the scene, or by an older version)."""
    return [
        ProposedChange(scene_id, proposal.field, proposal.action, proposal.value, proposal.confidence)
        for proposal in proposals
        if proposal.confidence >= min_confidence
        and not already_holds(scene, proposal.field, proposal.action, proposal.value)
        and not already_proposed(waiting, proposal.field, proposal.action, proposal.value)
    ]
