"""The Plans API against a whole running Warden: a real plans.db, the real plan_applier and the Stash double."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from daemons.plan_applier import PlanApplier
from daemons.plans.store import ChangeStatus, Plan, PlanStore, ProposedChange
from daemons.stash.double import StashDouble
from supervisor.app import Warden
from tests.webharness import api_session, call, config_text, running_warden, until

KEY = "plans-api-key-0123"
NAME = PlanApplier.name


def tag(scene_id: str, name: str) -> ProposedChange:
    return ProposedChange(scene_id, "tags", "add", name, 1.0)


def marker(scene_id: str, seconds: float) -> ProposedChange:
    return ProposedChange(
        scene_id, "markers", "add", {"seconds": seconds, "title": "Cut", "primary_tag": "Scene cut"}, 0.9
    )


def warden_yaml(double: StashDouble | None, applier: str = "    interval: 3600\n") -> str:
    stash = f"stash:\n  url: {double.url}\n  api_key: {KEY}\n" if double else ""
    return config_text(f"  {NAME}:\n{applier}") + stash


@asynccontextmanager
async def plans_db(tmp_path: Path) -> AsyncIterator[PlanStore]:
    """The plans.db the running Warden uses (its data_dir is tmp_path/data)."""
    store = await PlanStore.open(tmp_path / "data" / "plans.db")
    try:
        yield store
    finally:
        await store.close()


async def draft(tmp_path: Path, changes: list[ProposedChange], name: str = "Video analysis 1") -> Plan:
    async with plans_db(tmp_path) as store:
        return await store.create(name, "ffmpeg 1", changes)


async def statuses(session: aiohttp.ClientSession, plan_id: int) -> dict[int, str]:
    body = await call(session, "GET", f"api/plans/{plan_id}")
    return {change["id"]: change["status"] for scene in body["scenes"] for change in scene["changes"]}


@asynccontextmanager
async def warden_without_applier(tmp_path: Path) -> AsyncIterator[Warden]:
    async with running_warden(tmp_path, [PlanApplier], yaml=warden_yaml(None, "    auto_start: false\n")) as warden:
        yield warden


async def test_plans_are_listed_newest_first_and_shown_with_their_changes_by_scene(tmp_path: Path) -> None:
    first = await draft(tmp_path, [tag("12", "1080p")], name="first")
    second = await draft(tmp_path, [tag("7", "Short"), marker("12", 5.0), tag("12", "1080p"), marker("7", 9.0)])
    async with warden_without_applier(tmp_path) as warden, api_session(warden) as session:
        listed = (await call(session, "GET", "api/plans"))["plans"]
        assert [plan["id"] for plan in listed] == [second.id, first.id]
        assert set(listed[0]) == {"id", "name", "source", "status", "created_at", "updated_at", "counts", "scenes"}
        assert listed[0]["counts"]["pending"] == 4 and listed[0]["scenes"] == 2 and listed[0]["status"] == "draft"

        body = await call(session, "GET", f"api/plans/{second.id}")
        assert body["plan"]["id"] == second.id
        assert [scene["scene_id"] for scene in body["scenes"]] == ["12", "7"]
        twelve = body["scenes"][0]["changes"]
        assert [(c["field"], c["value"]) for c in twelve] == [
            ("markers", {"seconds": 5.0, "title": "Cut", "primary_tag": "Scene cut"}),
            ("tags", "1080p"),
        ]
        assert set(twelve[0]) == {"id", "field", "action", "value", "confidence", "status", "error"}

        missing = await call(session, "GET", "api/plans/999", status=404)
        assert missing == {"error": "no plan '999'"}
        await call(session, "GET", "api/plans/abc", status=404)


async def test_review_per_change_per_scene_and_whole_plan(tmp_path: Path) -> None:
    plan = await draft(tmp_path, [tag("1", "a"), tag("1", "b"), tag("2", "c"), tag("3", "d")])
    async with warden_without_applier(tmp_path) as warden, api_session(warden) as session:
        ids = list(await statuses(session, plan.id))
        one = await call(
            session, "POST", f"api/plans/{plan.id}/review", json={"decision": "approved", "change_ids": [ids[0]]}
        )
        assert one["status"] == "reviewing" and one["counts"]["approved"] == 1 and one["counts"]["pending"] == 3

        scene = await call(
            session, "POST", f"api/plans/{plan.id}/review", json={"decision": "rejected", "scene_id": "2"}
        )
        assert scene["counts"] == {**scene["counts"], "approved": 1, "rejected": 1, "pending": 2}
        assert list((await statuses(session, plan.id)).values()) == ["approved", "pending", "rejected", "pending"]

        whole = await call(session, "POST", f"api/plans/{plan.id}/review", json={"decision": "approved"})
        assert whole["status"] == "approved" and whole["counts"]["approved"] == 4 and whole["counts"]["rejected"] == 0


async def test_bad_review_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    plan = await draft(tmp_path, [tag("1", "a"), tag("2", "b")])
    other = await draft(tmp_path, [tag("1", "z")], name="other")
    async with warden_without_applier(tmp_path) as warden, api_session(warden) as session:
        before = await statuses(session, plan.id)
        path = f"api/plans/{plan.id}/review"
        (foreign,) = await statuses(session, other.id)
        bad: list[Any] = [
            {"decision": "applied"},
            {"decision": "maybe", "change_ids": list(before)},
            {"change_ids": list(before)},
            {"decision": "approved", "change_ids": ["1"]},
            {"decision": "approved", "change_ids": [1.5]},
            {"decision": "approved", "change_ids": [True]},
            {"decision": "approved", "change_ids": []},
            {"decision": "approved", "change_ids": [foreign]},
            {"decision": "approved", "scene_id": "99"},
            {"decision": "approved", "scene_id": ["1"]},
            {"decision": "approved", "scene_id": "1", "change_ids": list(before)},
            {"decision": "approved", "everything": True},
            ["approved"],
        ]
        for body in bad:
            answer = await call(session, "POST", path, status=400, json=body)
            assert answer["error"], body
        await call(session, "POST", path, status=400, data=b"{not json", headers={"Content-Type": "application/json"})
        await call(session, "POST", "api/plans/999/review", status=404, json={"decision": "approved"})
        assert await statuses(session, plan.id) == before
        assert (await call(session, "GET", f"api/plans/{plan.id}"))["plan"]["status"] == "draft"


async def test_a_plan_being_applied_cannot_be_reviewed_or_applied_again(tmp_path: Path) -> None:
    plan = await draft(tmp_path, [tag("1", "a")])
    async with plans_db(tmp_path) as store:
        await store.review(plan.id, None, ChangeStatus.APPROVED)
        await store.start_applying(plan.id)
    async with warden_without_applier(tmp_path) as warden, api_session(warden) as session:
        before = await statuses(session, plan.id)
        refused = await call(session, "POST", f"api/plans/{plan.id}/review", status=409, json={"decision": "rejected"})
        assert "being applied" in refused["error"]
        assert await statuses(session, plan.id) == before
        again = await call(session, "POST", f"api/plans/{plan.id}/apply", status=409)
        assert "already being applied" in again["error"]


async def test_apply_needs_approved_changes_and_a_running_plan_applier(tmp_path: Path) -> None:
    plan = await draft(tmp_path, [tag("1", "a"), tag("2", "b")])
    async with warden_without_applier(tmp_path) as warden, api_session(warden) as session:
        path = f"api/plans/{plan.id}/apply"
        assert "no approved change" in (await call(session, "POST", path, status=409))["error"]
        review = f"api/plans/{plan.id}/review"
        (first, _) = await statuses(session, plan.id)
        await call(session, "POST", review, json={"decision": "approved", "change_ids": [first]})
        assert "1 pending changes" in (await call(session, "POST", path, status=409))["error"]
        await call(session, "POST", review, json={"decision": "approved"})
        stopped = await call(session, "POST", path, status=409)
        assert stopped["error"] == "plan_applier is not running (stopped): start it to apply the plan"
        await call(session, "POST", "api/plans/999/apply", status=404)
        assert set((await statuses(session, plan.id)).values()) == {"approved"}, "apply approves nothing by itself"


async def test_apply_wakes_plan_applier_which_applies_the_plan(tmp_path: Path) -> None:
    async with StashDouble(api_key=KEY, step_delay=0.001) as double:
        one, two = (double.add_scene(f"/media/{name}.mp4").id for name in ("one", "two"))
        plan = await draft(tmp_path, [tag(one, "1080p"), marker(one, 12.0), tag(two, "Vertical")])
        async with running_warden(tmp_path, [PlanApplier], yaml=warden_yaml(double)) as warden:
            runner = warden.supervisor.runner(NAME)
            await until(warden, lambda: runner.status.sleeping_until is not None, 30)
            assert runner.status.message == "No plans to apply"
            async with api_session(warden) as session:
                await call(session, "POST", f"api/plans/{plan.id}/review", json={"decision": "approved"})
                answer = await call(session, "POST", f"api/plans/{plan.id}/apply", status=202)
                assert answer["woken"] is True and answer["plan"]["status"] == "approved"
                await until(warden, lambda: runner.status.message.startswith("Applied 1 plans"), 30)
                body = await call(session, "GET", f"api/plans/{plan.id}")
        assert body["plan"]["status"] == "applied" and body["plan"]["counts"]["applied"] == 3
        assert {change["status"] for scene in body["scenes"] for change in scene["changes"]} == {"applied"}
        assert [double.library.tags[t].name for t in double.library.scene(two).tag_ids] == ["Vertical"]
