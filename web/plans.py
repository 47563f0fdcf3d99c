"""The Plans API: list plans, show one with its changes by scene, review them, and ask for them to be applied.

The app holds one PlanStore, opened on first use and closed at cleanup (`plans_store`): opening one per
request would run the migrations check and open a file on every click, and the store already serialises
its statements on its one connection. plan_applier writes through connections of its own; SQLite's locking
and busy timeout keep the two apart.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from daemons.plan_applier import PlanApplier, plans_path
from daemons.plans.store import Change, ChangeStatus, Plan, PlanConflict, PlanError, PlanStatus, PlanStore
from supervisor.models import DaemonState
from supervisor.supervisor import UnknownDaemon
from web.api import SQLITE_INT, _json, _json_object, _supervisor, error
from web.handles import opened_on_first_use
from web.keys import PLANS

DECISIONS = {"approved": ChangeStatus.APPROVED, "rejected": ChangeStatus.REJECTED}
APPLIER = PlanApplier.name


#: cleanup_ctx: the app's PlanStore, opened on first use.
plans_store = opened_on_first_use(PLANS, plans_path, PlanStore.open, (PlanError,))


def add_routes(router: web.UrlDispatcher, base: str) -> None:
    router.add_get(f"{base}/api/plans", list_plans)
    router.add_get(f"{base}/api/plans/{{id}}", get_plan)
    router.add_post(f"{base}/api/plans/{{id}}/review", review_plan)
    router.add_post(f"{base}/api/plans/{{id}}/apply", apply_plan)


def plan_body(plan: Plan) -> dict[str, Any]:
    return asdict(plan)


def change_body(change: Change) -> dict[str, Any]:
    return {
        "id": change.id,
        "field": change.field,
        "action": change.action,
        "value": change.value,
        "confidence": change.confidence,
        "status": change.status,
        "error": change.error,
    }


def _unavailable(failure: PlanError) -> web.HTTPError:
    return error(web.HTTPServiceUnavailable, str(failure))


async def _plan(request: web.Request) -> tuple[PlanStore, Plan]:
    """The plan named in the path; 404 when there is none."""
    raw = request.match_info["id"]
    store = await request.app[PLANS].get()
    try:
        # ASCII only: "²" is a digit to isdigit() but not to int(). At most 19 digits: int() refuses thousands,
        # and SQLite holds ids up to SQLITE_INT.
        valid = raw.isascii() and raw.isdigit() and len(raw) <= len(str(SQLITE_INT)) and int(raw) <= SQLITE_INT
        plan = await store.plan(int(raw)) if valid else None
    except PlanError as failure:
        raise _unavailable(failure) from None
    if plan is None:
        raise error(web.HTTPNotFound, f"no plan {raw!r}")
    return store, plan


async def list_plans(request: web.Request) -> web.Response:
    try:
        plans = await (await request.app[PLANS].get()).plans()
    except PlanError as failure:
        raise _unavailable(failure) from None
    return _json({"plans": [plan_body(plan) for plan in plans]})


async def get_plan(request: web.Request) -> web.Response:
    store, plan = await _plan(request)
    try:
        changes = await store.changes(plan.id)
    except PlanError as failure:
        raise _unavailable(failure) from None
    scenes: dict[str, list[dict[str, Any]]] = {}
    for change in changes:  # ordered by scene
        scenes.setdefault(change.scene_id, []).append(change_body(change))
    grouped = [{"scene_id": scene_id, "changes": listed} for scene_id, listed in scenes.items()]
    return _json({"plan": plan_body(plan), "scenes": grouped})


async def review_plan(request: web.Request) -> web.Response:
    """Body: {"decision": "approved" | "rejected"} with "change_ids": [...] or "scene_id": "12", or
    neither for the whole plan. Everything is checked before anything changes."""
    store, plan = await _plan(request)
    body = await _json_object(request)
    decision = body.get("decision")
    if not isinstance(decision, str) or decision not in DECISIONS:
        raise error(web.HTTPBadRequest, 'decision must be "approved" or "rejected"')
    unknown = set(body) - {"decision", "change_ids", "scene_id"}
    if unknown:
        raise error(web.HTTPBadRequest, f"unknown fields: {', '.join(sorted(unknown))}")
    if "change_ids" in body and "scene_id" in body:
        raise error(web.HTTPBadRequest, "send change_ids or scene_id, not both")
    try:
        changes = await store.changes(plan.id)
        change_ids = _chosen(body, changes)
        updated = await store.review(plan.id, change_ids, DECISIONS[decision])
    except PlanConflict as conflict:
        raise error(web.HTTPConflict, str(conflict)) from None
    except PlanError as failure:
        raise _unavailable(failure) from None
    return _json(plan_body(updated))


def _chosen(body: dict[str, Any], changes: list[Change]) -> list[int] | None:
    """The ids of the changes a review names (None: every change of the plan); 400 for ids not in it."""
    if "scene_id" in body:
        scene_id = body["scene_id"]
        if isinstance(scene_id, bool) or not isinstance(scene_id, str | int):
            raise error(web.HTTPBadRequest, "scene_id must be a string")
        chosen = [change.id for change in changes if change.scene_id == str(scene_id)]
        if not chosen:
            raise error(web.HTTPBadRequest, f"the plan has no change to scene {scene_id}")
        return chosen
    if "change_ids" in body:
        ids = body["change_ids"]
        if not isinstance(ids, list) or not ids or not all(type(i) is int for i in ids):
            raise error(web.HTTPBadRequest, "change_ids must be a non-empty list of integers")
        known = {change.id for change in changes}
        foreign = sorted(set(ids) - known)
        if foreign:
            raise error(web.HTTPBadRequest, f"changes not in this plan: {', '.join(map(str, foreign))}")
        return ids
    return None


async def apply_plan(request: web.Request) -> web.Response:
    """Wake plan_applier for a plan with approved changes (202); it applies every approved plan it finds."""
    _, plan = await _plan(request)
    supervisor = _supervisor(request)
    try:
        runner = supervisor.runner(APPLIER)
    except UnknownDaemon:
        raise error(web.HTTPConflict, f"{APPLIER} is not installed, so nothing can apply the plan") from None
    if plan.status is PlanStatus.APPLYING:
        raise error(web.HTTPConflict, f"plan {plan.id} is already being applied")
    if not plan.counts[ChangeStatus.APPROVED]:
        raise error(web.HTTPConflict, f"plan {plan.id} has no approved change to apply")
    if plan.status is not PlanStatus.APPROVED:  # plan_applier takes up approved plans only
        pending = plan.counts[ChangeStatus.PENDING]
        raise error(web.HTTPConflict, f"plan {plan.id} still has {pending} pending changes: approve or reject them")
    if runner.status.state is not DaemonState.RUNNING:
        raise error(web.HTTPConflict, f"{APPLIER} is not running ({runner.status.state}): start it to apply the plan")
    # False when it is busy (in a cycle): it finds the plan at its next check.
    woken = runner.wake()
    return _json({"woken": woken, "plan": plan_body(plan)}, status=202)
