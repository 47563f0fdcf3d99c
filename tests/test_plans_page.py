"""The Plans page in a real browser: review a plan scene by scene, apply it, and watch it applied live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Locator, Page, expect

from daemons.plan_applier import PlanApplier
from daemons.plans.store import ChangeStatus, PlanStatus
from daemons.stash.double import StashDouble
from tests.test_page import open_page, screenshot
from tests.test_plans_api import KEY, NAME, draft, marker, plans_db, tag, warden_yaml
from tests.webharness import running_warden, until


async def test_review_and_apply_a_plan_and_watch_it_applied_live(browser: Browser, tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        first, second = (double.add_scene(f"/media/{name}.mp4").id for name in ("first", "second"))
        plan = await draft(
            tmp_path,
            [
                tag(first, "1080p"),
                marker(first, 12.0),
                marker(first, 30.5),
                tag(second, "Vertical"),
                tag(second, "Short"),
            ],
        )
        async with plans_db(tmp_path) as store:
            ids = {f"{c.scene_id} {c.value}": c.id for c in await store.changes(plan.id)}

        # The first marker waits until the test has seen the plan part applied on the page.
        seen_halfway = asyncio.Event()
        held = asyncio.Event()

        async def hold_the_first_marker(root_field: str, variables: dict[str, Any]) -> None:
            if root_field == "sceneMarkerCreate" and not held.is_set():
                held.set()
                await asyncio.wait_for(seen_halfway.wait(), 30)

        double.before = hold_the_first_marker
        async with running_warden(tmp_path, [PlanApplier], yaml=warden_yaml(double)) as warden:
            runner = warden.supervisor.runner(NAME)
            await until(warden, lambda: runner.status.sleeping_until is not None, 30)
            page = await open_page(browser, warden.url)
            detail = await review_on_the_page(page, plan.id, ids, first, second)
            short = detail.get_by_test_id(f"change-{ids[f'{second} Short']}")
            row = page.get_by_test_id(f"plan-row-{plan.id}")
            await detail.get_by_test_id("apply-plan").click()
            # Live, with no reload: part applied while plan_applier is held at the first marker...
            status = detail.get_by_test_id("plan-facts").get_by_test_id("plan-status")
            await expect(status).to_have_text("applying")
            await expect(detail.get_by_test_id("plan-count-applied")).to_have_text("1")
            await expect(
                detail.get_by_test_id(f"change-{ids[f'{first} 1080p']}").get_by_test_id("change-status")
            ).to_have_text("applied")
            await expect(detail.get_by_test_id("approve-plan")).to_be_disabled()
            assert held.is_set()
            seen_halfway.set()
            # ...then every approved change applied, and the rejected one left alone.
            await expect(status).to_have_text("applied", timeout=20_000)
            await expect(detail.get_by_test_id("plan-count-applied")).to_have_text("4")
            await expect(detail.get_by_test_id("plan-count-approved")).to_have_text("0")
            await expect(detail.get_by_test_id("plan-count-rejected")).to_have_text("1")
            await expect(short.get_by_test_id("change-status")).to_have_text("rejected")
            await screenshot(page, "plans")

            await detail.get_by_test_id("plan-back").click()
            await expect(row.get_by_test_id("count-applied")).to_have_text("4")
            await expect(row.get_by_test_id("plan-status")).to_have_text("applied")

        async with plans_db(tmp_path) as store:
            stored = await store.plan(plan.id)
            changes = {c.id: c.status for c in await store.changes(plan.id)}
    assert stored is not None and stored.status is PlanStatus.APPLIED
    assert changes[ids[f"{second} Short"]] is ChangeStatus.REJECTED
    names = sorted(double.library.tags[t].name for t in double.library.scene(second).tag_ids)
    assert names == ["Vertical"]


async def review_on_the_page(page: Page, plan_id: int, ids: dict[str, int], first: str, second: str) -> Locator:
    """From the list to the plan: approve the first scene, approve one change of the second and reject the other."""
    await page.get_by_test_id("open-plans").click()
    row = page.get_by_test_id(f"plan-row-{plan_id}")
    await expect(row.get_by_test_id("count-pending")).to_have_text("5")
    await expect(row.get_by_test_id("plan-status")).to_have_text("draft")
    await row.get_by_test_id(f"open-plan-{plan_id}").click()

    detail = page.get_by_test_id("plan-detail")
    await expect(detail.get_by_test_id("apply-plan")).to_be_disabled()
    await detail.get_by_test_id(f"scene-{first}").get_by_test_id("approve-scene").click()
    await expect(detail.get_by_test_id("plan-count-approved")).to_have_text("3")
    await detail.get_by_test_id(f"change-{ids[f'{second} Vertical']}").get_by_test_id("approve-change").click()
    await expect(detail.get_by_test_id("plan-count-approved")).to_have_text("4")
    short = detail.get_by_test_id(f"change-{ids[f'{second} Short']}")
    await short.get_by_test_id("reject-change").click()
    await expect(short.get_by_test_id("change-status")).to_have_text("rejected")
    await expect(detail.get_by_test_id("plan-count-pending")).to_have_text("0")
    await expect(detail.get_by_test_id("plan-facts").get_by_test_id("plan-status")).to_have_text("approved")

    return detail
