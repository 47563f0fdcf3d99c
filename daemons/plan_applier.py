"""plan_applier: writes the approved changes of plans to Stash, and never applies one twice.

Each plan is applied as a job ("Applied 40/120 changes"), change by change; each change's
outcome is stored the moment it is known. A plan cut short (a crash, a stop, Stash down) is
left `applying` and is the first one taken up again: only its changes not yet recorded are
applied, and a change that already holds in Stash (the tag on the scene, the marker at its
time) counts as applied. A change whose scene was deleted in Stash is skipped.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from daemons.plans.apply import ChangeApplier
from daemons.plans.store import OUTCOMES, ChangeStatus, PlanConflict, PlanError, PlanStatus, PlanStore
from daemons.stash.client import StashClient, StashError
from supervisor import Daemon, DaemonConfig
from supervisor.config import WardenSettings
from supervisor.jobs import JobContext


def plans_path(settings: WardenSettings) -> Path:
    return settings.paths.data_dir / "plans.db"


@asynccontextmanager
async def open_plans(settings: WardenSettings) -> AsyncIterator[PlanStore]:
    """A plan store of the caller's own, closed when the block ends."""
    store = await PlanStore.open(plans_path(settings))
    try:
        yield store
    finally:
        await store.close()


class PlanApplier(Daemon):
    name = "plan_applier"
    title = "Plan Applier"
    uses = frozenset({"stash", "paths"})
    reloadable = True  # every cycle reads self.config afresh

    class Config(DaemonConfig):
        interval: float = Field(60, ge=1, le=86_400, description="Seconds between checks for plans to apply.")
        auto_approve_all: bool = Field(
            False, description="Approve draft plans by themselves (those matching plan_prefix_filter) and apply them."
        )
        plan_prefix_filter: str = Field(
            "", max_length=200, description="With auto_approve_all: only plans whose name starts with this. Empty: all."
        )
        min_confidence: float = Field(
            0.0, ge=0, le=1, description="With auto_approve_all: changes less confident than this are rejected."
        )

    config: Config
    plans: PlanStore

    async def run(self) -> None:
        if self.settings.stash.url is None:
            await self.wait_for_setting("No Stash server configured: set stash.url in warden.yaml")
        self.plans = await self.keep_trying(lambda: PlanStore.open(plans_path(self.settings)), (PlanError,))
        try:
            await self.run_cycles(self.cycle, (StashError, PlanError))
        finally:
            await self.plans.close()

    async def cycle(self) -> None:
        config = self.config
        await self.update_status("Checking for plans to apply")
        if config.auto_approve_all:
            await self._approve_drafts(config)
        # Plans a crash left half applied come first.
        queue = {plan.id: plan for plan in await self.plans.interrupted()}
        approved = reversed(await self.plans.plans([PlanStatus.APPROVED]))  # oldest first
        queue.update({plan.id: plan for plan in approved if plan.id not in queue})
        if not queue:
            await self.update_status("No plans to apply")
            await self.sleep(config.interval, "next check for plans to apply")
            return
        await self.update_status(f"Found {len(queue)} plans to apply")
        results = []
        for number, plan in enumerate(queue.values(), start=1):
            await self.update_status(f"Applying plan {number} of {len(queue)}: {plan.name}")
            apply = functools.partial(self._apply, plan_id=plan.id)
            results.append(await self.run_job("apply_plan", f"plan {plan.id}", apply))
        applied = sum(result["counts"][ChangeStatus.APPLIED] for result in results)
        await self.update_status(f"Applied {len(results)} plans ({applied} changes applied)")
        await self.sleep(config.interval, "next check for plans to apply")

    async def _approve_drafts(self, config: Config) -> None:
        """Approve the draft plans matching the prefix; changes under min_confidence are rejected
        (a person can still approve them on the Plans page, and plan_applier then applies them)."""
        prefix = config.plan_prefix_filter or None
        for draft in await self.plans.plans([PlanStatus.DRAFT], name_prefix=prefix):
            await self.plans.review(draft.id, None, ChangeStatus.APPROVED, min_confidence=config.min_confidence)
            unsure = [change.id for change in await self.plans.changes(draft.id, [ChangeStatus.PENDING])]
            if unsure:
                await self.plans.review(draft.id, unsure, ChangeStatus.REJECTED)
            self.log.info("plan approved automatically", plan=draft.id, name=draft.name, rejected=len(unsure))

    async def _apply(self, job: JobContext, plan_id: int) -> dict[str, Any]:
        """The job: apply the plan's approved changes one by one, recording each outcome at once."""
        # A store and a client of the job's own: a job may outlive the daemon run that launched it.
        stash = StashClient.from_settings(self.settings.stash)
        try:
            async with open_plans(self.settings) as store:
                try:
                    started = await store.start_applying(plan_id)
                except PlanConflict as conflict:  # reviewed (rejected) by a person since it was listed
                    self.log.info("plan not applied", plan=plan_id, reason=str(conflict))
                    return {"plan": plan_id, "status": "not applied", "counts": {ChangeStatus.APPLIED: 0}}
                changes = await store.to_apply(plan_id)
                # Progress is the whole plan's: outcomes recorded earlier (before a crash, or before a person
                # approved more of a partly applied plan) count as done.
                before = sum(started.counts[status] for status in OUTCOMES)
                total = before + len(changes)
                job.progress(done=before, total=total, message=f"Applied {before}/{total} changes")
                applier = ChangeApplier(stash)
                for number, change in enumerate(changes, start=before + 1):
                    outcome = await applier.apply(change)
                    await store.record(change.id, outcome.status, outcome.error)
                    if outcome.status is not ChangeStatus.APPLIED:
                        self.log.warning(
                            "change not applied",
                            plan=plan_id,
                            change=change.id,
                            status=str(outcome.status),
                            error=outcome.error,
                        )
                    job.progress(done=number, total=total, message=f"Applied {number}/{total} changes")
                plan = await store.finish(plan_id)
                self.log.info("plan applied", plan=plan.id, status=str(plan.status), counts=plan.counts)
                return {"plan": plan.id, "name": plan.name, "status": str(plan.status), "counts": plan.counts}
        finally:
            stash.close()
