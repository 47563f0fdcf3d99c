"""stash_generation: has Stash generate the covers, previews, sprites and phashes scenes lack.

It works only while Stash's job queue is idle, asks for exactly the scenes that lack an
asset (from the local library that stash_sync keeps), in batches, and follows each Stash
job to its end. When a scan shows up in Stash's queue it stops its generate job there
(stopJob), waits until Stash confirms, and tries again once the queue is idle.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from daemons.stash.base import StashDaemon
from daemons.stash.client import StashError, StashJob
from daemons.stash.jobs import launch_stash_job
from daemons.stash.library import ASSETS
from supervisor import DaemonConfig, JobFailed, JobStatus
from supervisor.clock import sleep
from supervisor.jobs import Job


class StashGeneration(StashDaemon):
    name = "stash_generation"
    title = "Stash Generation"
    reloadable = True  # every cycle reads self.config afresh

    class Config(DaemonConfig):
        interval: float = Field(
            600, ge=1, le=86_400, description="Seconds between checks for scenes lacking generated assets."
        )
        batch_size: int = Field(100, ge=1, le=10_000, description="Scenes per Stash generate job.")
        covers: bool = Field(True, description="Generate missing covers.")
        previews: bool = Field(True, description="Generate missing video previews.")
        sprites: bool = Field(True, description="Generate missing scrubber sprites.")
        phashes: bool = Field(True, description="Generate missing perceptual hashes (phash).")
        yield_to_scans: bool = Field(
            True, description="Stop a running generate job when a scan is waiting in Stash's queue."
        )
        poll_interval: float = Field(
            5, ge=0.05, le=600, description="Seconds between looks at Stash's job queue and at a running job."
        )
        stop_confirm_timeout: float = Field(
            300, ge=1, le=3600, description="Seconds to wait for Stash to confirm a stopped job."
        )

        @property
        def assets(self) -> list[str]:
            return [asset for asset in ASSETS if getattr(self, asset)]

    config: Config

    async def cycle(self) -> None:
        config = self.config
        if not config.assets:
            await self.update_status("Nothing to generate: every asset is switched off in the settings")
            await self.sleep(config.interval, "next check")
            return
        left = [job for job in self.context.jobs.active() if job.type == "stash_generate" and job.daemon == self.name]
        if left:
            # Started by a previous run (restarted mid-job): follow it, yielding to scans as ever.
            await self.update_status(
                "Following the generate job an earlier run started", job_id=left[0].id, job_type=left[0].type
            )
            await self._follow(left[0])
            return
        await self.update_status("Checking Stash's job queue")
        busy = await self.stash.job_queue()
        if busy:
            await self.update_status(f"Stash is busy ({_describe(busy)}); waiting for its queue to empty")
            await self.sleep(config.poll_interval, "Stash's queue to empty")
            return
        await self.update_status("Checking for scenes needing generation")
        missing = await self.library.missing_assets(config.assets)
        wanted = ", ".join(config.assets)
        if not missing:
            synced = await self.library.count()
            if synced:
                await self.update_status(f"All {synced:,} synced scenes have their {wanted}")
            else:
                await self.update_status("No synced scenes yet: stash_sync fills the library")
            await self.sleep(config.interval, "next check for scenes needing generation")
            return
        batches = [missing[start : start + config.batch_size] for start in range(0, len(missing), config.batch_size)]
        await self.update_status(f"Found {len(missing):,} scenes needing {wanted}")
        for number, batch in enumerate(batches, start=1):
            if number > 1 and await self.stash.job_queue():
                return  # something else started in Stash meanwhile: wait for the queue again
            await self.update_status(f"Processing batch {number} of {len(batches)} ({len(batch)} scenes)")
            if not await self._generate(batch, config.assets, number, len(batches)):
                return
        await self.update_status(f"Generation completed for {len(missing):,} scenes")
        await self.sleep(config.interval, "next check for scenes needing generation")

    async def _generate(self, scene_ids: list[str], assets: list[str], number: int, batches: int) -> bool:
        """Run one Stash generate job for these scenes; True when it finished."""
        stash_job_id = await self.stash.metadata_generate(scene_ids, assets)
        job = await launch_stash_job(
            self,
            "stash_generate",
            "generate",
            stash_job_id,
            interval=self.config.poll_interval,
            stop_timeout=self.config.stop_confirm_timeout,
        )
        await self.update_status(
            f"Generating {', '.join(assets)} for {len(scene_ids)} scenes (batch {number} of {batches})",
            job_id=job.id,
            job_type=job.type,
        )
        if not await self._follow(job):
            return False
        await self.library.mark_generated(scene_ids, assets)
        self.log.info("generated", scenes=len(scene_ids), assets=assets, stash_job=stash_job_id)
        return True

    async def _follow(self, job: Job) -> bool:
        """Wait for a generate job to end, stopping it when a scan waits; True when it completed."""
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(self._yield_to_scans(job)) if self.config.yield_to_scans else None
            ended = await self.context.wait_for_job(job)  # the Job, whatever its end (no JobFailed)
            if watcher is not None and not watcher.done():
                watcher.cancel()
        if ended.status is JobStatus.CANCELLED:
            if watcher is not None and not watcher.cancelled() and watcher.result():
                await self.update_status("Generation stopped so Stash can scan; trying again once its queue is idle")
                self.log.info("generation stopped for a scan", stash_job=job.external_id)
                return False
            await self.update_status("Generation cancelled; the next check is on schedule")
            await self.sleep(self.config.interval, "next check for scenes needing generation")
            return False
        if ended.status is not JobStatus.COMPLETED:
            raise JobFailed(ended)
        return True

    async def _yield_to_scans(self, job: Job) -> bool:
        """Stop the generate job as soon as a scan waits in Stash's queue; True once it asked."""
        while True:
            await sleep(self.context.clock, self.config.poll_interval)
            try:
                queue = await self.stash.job_queue()
            except StashError as error:
                self.log.debug("cannot look at Stash's queue; trying again", error=str(error))
                continue  # the job's own poll shows Stash's trouble
            scans = [stash_job for stash_job in queue if stash_job.is_scan]
            if scans:
                self.log.info("a scan is waiting in Stash: stopping generation", scans=[scan.id for scan in scans])
                await self.update_status(
                    f"Stopping generation: {len(scans)} scan job(s) waiting in Stash", job_id=job.id, job_type=job.type
                )
                await self.cancel_job(job)
                return True


def _describe(jobs: list[StashJob]) -> str:
    return "; ".join(f"{job.description} {job.status.lower()}" for job in jobs[:3]) + (
        f" and {len(jobs) - 3} more" if len(jobs) > 3 else ""
    )
