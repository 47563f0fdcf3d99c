"""Plans: creating and listing, reviews and the plan statuses they lead to, and applying that a crash can resume."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from daemons.plans.store import ChangeStatus, PlanConflict, PlanError, PlanStatus, PlanStore, ProposedChange

APPROVED, REJECTED, PENDING = ChangeStatus.APPROVED, ChangeStatus.REJECTED, ChangeStatus.PENDING
MARKER = {"seconds": 12.5, "title": "Scene 2", "primary_tag": "Scene cut"}


def ticking() -> Callable[[], float]:
    clock = itertools.count(1000.0)
    return lambda: next(clock)


def tag(scene_id: str, name: str, confidence: float = 0.9) -> ProposedChange:
    return ProposedChange(scene_id, "tags", "add", name, confidence)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[PlanStore]:
    store = await PlanStore.open(tmp_path / "plans.db", now=ticking())
    try:
        yield store
    finally:
        await store.close()


async def test_a_plan_is_listed_with_its_counts_scenes_and_values(store: PlanStore) -> None:
    changes = [tag("2", "outdoor"), ProposedChange("1", "markers", "add", MARKER, 0.75), tag("1", "indoor")]
    draft = await store.create("ffmpeg scenes", "ffmpeg 1", changes)
    ready = await store.create("auto tags", "ffmpeg 1", [tag("3", "night")], approved=True)

    assert (draft.status, draft.source, draft.scenes, draft.created_at) == (PlanStatus.DRAFT, "ffmpeg 1", 2, 1000.0)
    assert draft.counts == {status.value: 3 if status is PENDING else 0 for status in ChangeStatus}
    assert (ready.status, ready.counts[APPROVED], ready.counts[PENDING]) == (PlanStatus.APPROVED, 1, 0)
    assert await store.plan(draft.id) == draft
    assert await store.plan(999) is None
    assert [plan.id for plan in await store.plans()] == [ready.id, draft.id]  # newest first
    assert [plan.id for plan in await store.plans([PlanStatus.DRAFT])] == [draft.id]
    assert [plan.id for plan in await store.plans(name_prefix="ffmpeg")] == [draft.id]
    assert await store.plans(name_prefix="FFmpeg") == await store.plans(name_prefix="ffmpeg%") == []

    stored = await store.changes(draft.id)
    assert [(c.scene_id, c.field, c.value) for c in stored] == [
        ("1", "markers", MARKER),  # by scene, then as proposed
        ("1", "tags", "indoor"),
        ("2", "tags", "outdoor"),
    ]
    assert stored[0].value["seconds"] == 12.5 and stored[0].confidence == 0.75
    assert {c.status for c in stored} == {PENDING} and stored[0].error is None


async def test_reviews_move_changes_and_the_plan_follows_them(store: PlanStore) -> None:
    plan = await store.create("p", "ffmpeg 1", [tag("1", "a", 0.9), tag("1", "b", 0.8), tag("2", "c", 0.4)])
    a, b, c = (change.id for change in await store.changes(plan.id))

    assert (await store.review(plan.id, None, APPROVED, min_confidence=0.95)).status is PlanStatus.DRAFT
    assert (await store.review(plan.id, [a], APPROVED)).status is PlanStatus.REVIEWING
    assert (await store.review(plan.id, [b], REJECTED)).status is PlanStatus.REVIEWING

    # Approving everything above 0.5 takes back the rejection of b and leaves c pending.
    reviewed = await store.review(plan.id, None, APPROVED, min_confidence=0.5)
    assert (reviewed.status, reviewed.counts[APPROVED], reviewed.counts[PENDING]) == (PlanStatus.REVIEWING, 2, 1)
    assert [change.id for change in await store.changes(plan.id, [PENDING])] == [c]

    assert (await store.review(plan.id, [c], APPROVED)).status is PlanStatus.APPROVED
    rejected = await store.review(plan.id, None, REJECTED)
    assert (rejected.status, rejected.counts[REJECTED]) == (PlanStatus.REJECTED, 3)
    assert (await store.review(plan.id, None, APPROVED)).status is PlanStatus.APPROVED

    with pytest.raises(ValueError, match="approves or rejects"):
        await store.review(plan.id, None, ChangeStatus.APPLIED)


async def test_a_plan_being_applied_cannot_be_reviewed_and_only_approved_plans_start(store: PlanStore) -> None:
    draft = await store.create("draft", "ffmpeg 1", [tag("1", "a")])
    with pytest.raises(PlanConflict, match="draft"):
        await store.start_applying(draft.id)

    plan = await store.create("p", "ffmpeg 1", [tag("1", "a")], approved=True)
    assert (await store.start_applying(plan.id)).status is PlanStatus.APPLYING
    with pytest.raises(PlanConflict, match="being applied"):
        await store.review(plan.id, None, REJECTED)
    assert [change.status for change in await store.changes(plan.id)] == [APPROVED]
    with pytest.raises(PlanConflict, match="pending"):
        await store.record((await store.changes(draft.id))[0].id, ChangeStatus.APPLIED)


async def test_recorded_outcomes_survive_a_crash_and_are_never_recorded_twice(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    crashed = await PlanStore.open(path, now=ticking())
    plan = await crashed.create("p", "ffmpeg 1", [tag(str(i), "a") for i in range(1, 5)], approved=True)
    await crashed.start_applying(plan.id)
    first, second, *rest = await crashed.to_apply(plan.id)
    await crashed.record(first.id, ChangeStatus.APPLIED)
    await crashed.record(second.id, ChangeStatus.APPLIED)

    # The next run opens the file while the crashed one never got to finish (or close).
    store = await PlanStore.open(path, now=ticking())
    try:
        assert [p.id for p in await store.interrupted()] == [plan.id]
        assert await store.to_apply(plan.id) == rest
        with pytest.raises(PlanConflict, match="applied"):
            await store.record(first.id, ChangeStatus.APPLIED)
        assert (await store.start_applying(plan.id)).status is PlanStatus.APPLYING
        for change in rest:
            await store.record(change.id, ChangeStatus.APPLIED)
        done = await store.finish(plan.id)
        assert (done.status, done.counts[ChangeStatus.APPLIED]) == (PlanStatus.APPLIED, 4)
        assert await store.interrupted() == []
        with pytest.raises(PlanConflict, match="not being applied"):
            await store.finish(plan.id)
    finally:
        await store.close()
        await crashed.close()


async def test_failures_leave_a_plan_partly_applied_and_new_approvals_make_it_ready_again(store: PlanStore) -> None:
    plan = await store.create("p", "ffmpeg 1", [tag("1", "a"), tag("2", "b"), tag("3", "c"), tag("4", "d")])
    a, b, c, d = (change.id for change in await store.changes(plan.id))
    await store.review(plan.id, [a, b, c], APPROVED)
    await store.review(plan.id, [d], REJECTED)
    await store.start_applying(plan.id)
    await store.record(a, ChangeStatus.APPLIED)
    await store.record(b, ChangeStatus.FAILED, "Stash said no")
    await store.record(c, ChangeStatus.SKIPPED, "scene gone")
    partly = await store.finish(plan.id)
    assert partly.status is PlanStatus.PARTIALLY_APPLIED
    assert [(x.status, x.error) for x in await store.changes(plan.id)] == [
        (ChangeStatus.APPLIED, None),
        (ChangeStatus.FAILED, "Stash said no"),
        (ChangeStatus.SKIPPED, "scene gone"),
        (REJECTED, None),
    ]
    assert (await store.review(plan.id, None, REJECTED)).status is PlanStatus.PARTIALLY_APPLIED
    with pytest.raises(PlanConflict):
        await store.start_applying(plan.id)  # nothing approved is left

    again = await store.review(plan.id, None, APPROVED)  # only d can move: outcomes never change
    assert (again.status, again.counts[APPROVED], again.counts[ChangeStatus.FAILED]) == (PlanStatus.APPROVED, 1, 1)
    await store.start_applying(plan.id)
    assert [change.id for change in await store.to_apply(plan.id)] == [d]
    await store.record(d, ChangeStatus.APPLIED)
    assert (await store.finish(plan.id)).status is PlanStatus.PARTIALLY_APPLIED  # b still failed


async def test_a_plan_is_applied_when_every_change_not_rejected_is(store: PlanStore) -> None:
    plan = await store.create("p", "ffmpeg 1", [tag("1", "a"), tag("2", "b")])
    a, b = (change.id for change in await store.changes(plan.id))
    await store.review(plan.id, [a], APPROVED)
    assert (await store.review(plan.id, [b], REJECTED)).status is PlanStatus.APPROVED
    with pytest.raises(PlanConflict, match="not being applied"):
        await store.record(a, ChangeStatus.APPLIED)
    await store.start_applying(plan.id)
    await store.record(a, ChangeStatus.APPLIED)
    assert (await store.finish(plan.id)).status is PlanStatus.APPLIED

    assert (await store.review(plan.id, [b], APPROVED)).status is PlanStatus.APPROVED  # b still has to be applied
    assert (await store.review(plan.id, [b], REJECTED)).status is PlanStatus.APPLIED


async def test_a_file_that_is_not_a_database_is_a_plan_error(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(PlanError, match="cannot prepare the plans database"):
        await PlanStore.open(path)
