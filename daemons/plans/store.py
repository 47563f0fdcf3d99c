"""PlanStore: plans of changes to Stash scenes, in their own SQLite file (plans.db in the data folder).

video_analysis writes plans, a person approves or rejects their changes on the Plans page, and
plan_applier applies the approved ones. Each change's outcome is committed as it is recorded, so after
a crash the applier carries on with the changes not yet recorded and never applies one twice.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from daemons.sqlite import prepare

_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE plans (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,       -- the analyser and its version, e.g. "ffmpeg 1"
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX plans_by_status ON plans (status);
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        plan_id INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
        scene_id TEXT NOT NULL,
        field TEXT NOT NULL,
        action TEXT NOT NULL,
        value TEXT NOT NULL,        -- JSON
        confidence REAL NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX changes_by_plan_status ON changes (plan_id, status);
    """,
    "CREATE INDEX changes_by_scene_status ON changes (scene_id, status);",
)

# The counts come back as one JSON object per plan, so a listing is one query however long it is.
_PLAN_SELECT = """
SELECT id, name, source, status, created_at, updated_at,
    (SELECT json_group_object(status, n) FROM
        (SELECT status, COUNT(*) AS n FROM changes WHERE plan_id = plans.id GROUP BY status)),
    (SELECT COUNT(DISTINCT scene_id) FROM changes WHERE plan_id = plans.id)
FROM plans
"""
_CHANGE_COLUMNS = "id, plan_id, scene_id, field, action, value, confidence, status, error, updated_at"


class PlanStatus(StrEnum):
    DRAFT = "draft"
    REVIEWING = "reviewing"
    APPROVED = "approved"
    APPLYING = "applying"
    APPLIED = "applied"
    PARTIALLY_APPLIED = "partially_applied"
    REJECTED = "rejected"


class ChangeStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    APPLIED = "applied"
    FAILED = "failed"
    SKIPPED = "skipped"


#: What applying a change ends in.
OUTCOMES = (ChangeStatus.APPLIED, ChangeStatus.FAILED, ChangeStatus.SKIPPED)


class PlanError(Exception):
    """The plans database cannot be used (locked past the busy timeout, disk full, corrupt...)."""


class PlanConflict(PlanError):
    """The plan or change is not in a state that allows this, e.g. reviewing a plan while it is applied."""


@dataclass(frozen=True, slots=True)
class ProposedChange:
    scene_id: str
    field: str  # "tags" | "markers"
    action: str  # "add" | "remove"
    value: Any  # JSON-able: a tag name, or {"seconds": 12.5, "title": "Scene 2", "primary_tag": "Scene cut"}
    confidence: float  # 0..1


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    plan_id: int
    scene_id: str
    field: str
    action: str
    value: Any
    confidence: float
    status: ChangeStatus
    error: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Plan:
    id: int
    name: str
    source: str
    status: PlanStatus
    created_at: float
    updated_at: float
    counts: dict[str, int]  # ChangeStatus value -> number of changes, every status present
    scenes: int  # distinct scenes with changes


class PlanStore:
    def __init__(self, path: Path, connection: aiosqlite.Connection, now: Callable[[], float]) -> None:
        self.path = path
        self._db = connection
        self._now = now
        # One statement sequence at a time on the one connection: a statement from another task must
        # never land inside an open transaction.
        self._turn = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, now: Callable[[], float] = time.time) -> PlanStore:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise PlanError(f"cannot open the plans database {path}: {error}") from error
        store = cls(path, connection, now)
        try:
            # FULL, not NORMAL: a recorded outcome must survive a power cut too, or a change could be applied twice.
            await prepare(connection, _MIGRATIONS, synchronous="FULL", foreign_keys=True)
        except sqlite3.Error as error:
            await connection.close()
            raise PlanError(f"cannot prepare the plans database {path}: {error}") from error
        except BaseException:
            await connection.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    # -- written by the analyser -------------------------------------------------------

    async def create(
        self, name: str, source: str, changes: Sequence[ProposedChange], *, approved: bool = False
    ) -> Plan:
        """A new plan: a draft of pending changes, or with `approved` a plan ready to apply."""
        plan_status, change_status = (
            (PlanStatus.APPROVED, ChangeStatus.APPROVED) if approved else (PlanStatus.DRAFT, ChangeStatus.PENDING)
        )
        values = [json.dumps(change.value) for change in changes]  # a value that is not JSON fails before writing
        now = self._now()
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO plans (name, source, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (name, source, plan_status, now, now),
            )
            plan_id = cursor.lastrowid
            assert plan_id is not None  # set by every INSERT
            await db.executemany(
                "INSERT INTO changes (plan_id, scene_id, field, action, value, confidence, status, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (plan_id, c.scene_id, c.field, c.action, value, c.confidence, change_status, now)
                    for c, value in zip(changes, values, strict=True)
                ],
            )
            return await _plan_by_id(db, plan_id)

    # -- read by the page and the applier ----------------------------------------------

    async def plans(
        self, statuses: Iterable[PlanStatus] | None = None, *, name_prefix: str | None = None, limit: int = 200
    ) -> list[Plan]:
        """Newest first."""
        where: list[str] = ["1"]
        params: list[Any] = []
        if statuses is not None:
            where.append("status IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(statuses)))
        if name_prefix is not None:
            where.append("substr(name, 1, ?) = ?")  # not LIKE: that ignores case and treats % and _ as wildcards
            params += [len(name_prefix), name_prefix]
        return await self._read_plans(
            f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]
        )

    async def plan(self, plan_id: int) -> Plan | None:
        found = await self._read_plans("WHERE id = ?", [plan_id])
        return found[0] if found else None

    async def interrupted(self) -> list[Plan]:
        """Plans a crash left APPLYING, oldest first: the applier resumes them before anything else."""
        return await self._read_plans("WHERE status = ? ORDER BY id", [PlanStatus.APPLYING])

    async def changes(self, plan_id: int, statuses: Iterable[ChangeStatus] | None = None) -> list[Change]:
        """Ordered by scene, then as proposed."""
        sql = f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE plan_id = ?"
        params: list[Any] = [plan_id]
        if statuses is not None:
            sql += " AND status IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(statuses)))
        async with self._reading() as db, db.execute(f"{sql} ORDER BY scene_id, id", params) as cursor:
            return [_change(row) async for row in cursor]

    async def open_changes(self, scene_ids: Iterable[str]) -> list[Change]:
        """The changes to these scenes still waiting, in any plan: pending review, or approved and not yet applied."""
        sql = (
            f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE status IN ('pending', 'approved') "
            "AND scene_id IN (SELECT value FROM json_each(?)) ORDER BY scene_id, id"
        )
        async with self._reading() as db, db.execute(sql, [json.dumps(list(scene_ids))]) as cursor:
            return [_change(row) async for row in cursor]

    async def to_apply(self, plan_id: int) -> list[Change]:
        return await self.changes(plan_id, [ChangeStatus.APPROVED])

    # -- written by the page -----------------------------------------------------------

    async def review(
        self, plan_id: int, change_ids: Iterable[int] | None, decision: ChangeStatus, *, min_confidence: float = 0.0
    ) -> Plan:
        """Approve or reject some of the plan's changes (None: all of them); those already applied, failed or
        skipped stay, and so do those below `min_confidence` when approving."""
        if decision not in (ChangeStatus.APPROVED, ChangeStatus.REJECTED):
            raise ValueError(f"a review approves or rejects changes, not {decision!r}")
        sql = (
            "UPDATE changes SET status = ?, updated_at = ? "
            "WHERE plan_id = ? AND status IN ('pending', 'approved', 'rejected') AND status != ?"
        )
        now = self._now()
        params: list[Any] = [decision, now, plan_id, decision]
        if decision == ChangeStatus.APPROVED:
            sql += " AND confidence >= ?"
            params.append(min_confidence)
        if change_ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(change_ids)))
        async with self._transaction() as db:
            if (await _plan_by_id(db, plan_id)).status is PlanStatus.APPLYING:
                raise PlanConflict(f"plan {plan_id} is being applied; review it once that is done")
            await db.execute(sql, params)
            plan = await _plan_by_id(db, plan_id)
            return await _set_status(db, plan, _reviewed(plan.counts), now)

    # -- written by the applier --------------------------------------------------------

    async def start_applying(self, plan_id: int) -> Plan:
        """Mark an approved plan APPLYING; a plan a crash left APPLYING may be started again."""
        async with self._transaction() as db:
            plan = await _plan_by_id(db, plan_id)
            left = plan.status is PlanStatus.PARTIALLY_APPLIED and plan.counts[ChangeStatus.APPROVED]
            if not (left or plan.status in (PlanStatus.APPROVED, PlanStatus.APPLYING)):
                raise PlanConflict(f"plan {plan_id} is {plan.status}; only an approved plan can be applied")
            return await _set_status(db, plan, PlanStatus.APPLYING, self._now())

    async def record(self, change_id: int, status: ChangeStatus, error: str | None = None) -> None:
        """The outcome of applying one change, committed before this returns."""
        if status not in OUTCOMES:
            raise ValueError(f"an outcome is applied, failed or skipped, not {status!r}")
        now = self._now()
        async with self._transaction() as db:
            async with db.execute(
                "SELECT changes.status, plans.id, plans.status FROM changes JOIN plans ON plans.id = changes.plan_id "
                "WHERE changes.id = ?",
                (change_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise LookupError(f"no change {change_id}")
            change_status, plan_id, plan_status = row
            if change_status != ChangeStatus.APPROVED:
                raise PlanConflict(f"change {change_id} is {change_status}; only an approved change can be recorded")
            if plan_status != PlanStatus.APPLYING:
                raise PlanConflict(f"plan {plan_id} is {plan_status}, not being applied")
            await db.execute(
                "UPDATE changes SET status = ?, error = ?, updated_at = ? WHERE id = ?", (status, error, now, change_id)
            )
            await db.execute("UPDATE plans SET updated_at = ? WHERE id = ?", (now, plan_id))

    async def finish(self, plan_id: int) -> Plan:
        """APPLIED if every change not rejected was applied, else PARTIALLY_APPLIED."""
        async with self._transaction() as db:
            plan = await _plan_by_id(db, plan_id)
            if plan.status is not PlanStatus.APPLYING:
                raise PlanConflict(f"plan {plan_id} is {plan.status}, not being applied")
            return await _set_status(db, plan, _outcome(plan.counts), self._now())

    # -- the connection ----------------------------------------------------------------

    async def _read_plans(self, where: str, params: Sequence[Any]) -> list[Plan]:
        async with self._reading() as db:
            return await _select_plans(db, where, params)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._turn:
            try:
                yield self._db
            except sqlite3.Error as error:
                raise PlanError(f"cannot read the plans database {self.path}: {error}") from error

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write, committed when the block ends, or rolled back (and PlanError if SQLite failed)."""
        db = self._db
        async with self._turn:
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    # Never mask the first error: SQLite rolls back by itself after some failures, and a COMMIT
                    # whose caller was cancelled still lands, leaving nothing to roll back.
                    with suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as error:
                raise PlanError(f"cannot write the plans database {self.path}: {error}") from error


def _reviewed(counts: Mapping[str, int]) -> PlanStatus:
    """A plan's status after a review, from how many of its changes are in each status."""
    pending, approved, rejected = (
        counts[ChangeStatus.PENDING],
        counts[ChangeStatus.APPROVED],
        counts[ChangeStatus.REJECTED],
    )
    total = sum(counts.values())
    if pending + approved + rejected < total:  # applied before: newly approved changes make it ready again
        return PlanStatus.APPROVED if approved else _outcome(counts)
    if pending == total:
        return PlanStatus.DRAFT
    if rejected == total:
        return PlanStatus.REJECTED
    return PlanStatus.REVIEWING if pending else PlanStatus.APPROVED


def _outcome(counts: Mapping[str, int]) -> PlanStatus:
    if counts[ChangeStatus.APPLIED] == sum(counts.values()) - counts[ChangeStatus.REJECTED]:
        return PlanStatus.APPLIED
    return PlanStatus.PARTIALLY_APPLIED


async def _set_status(db: aiosqlite.Connection, plan: Plan, status: PlanStatus, now: float) -> Plan:
    await db.execute("UPDATE plans SET status = ?, updated_at = ? WHERE id = ?", (status, now, plan.id))
    return replace(plan, status=status, updated_at=now)


async def _plan_by_id(db: aiosqlite.Connection, plan_id: int) -> Plan:
    found = await _select_plans(db, "WHERE id = ?", [plan_id])
    if not found:
        raise LookupError(f"no plan {plan_id}")
    return found[0]


async def _select_plans(db: aiosqlite.Connection, where: str, params: Sequence[Any]) -> list[Plan]:
    async with db.execute(f"{_PLAN_SELECT} {where}", params) as cursor:
        return [_plan(row) async for row in cursor]


def _plan(row: Sequence[Any]) -> Plan:
    return Plan(
        id=row[0],
        name=row[1],
        source=row[2],
        status=PlanStatus(row[3]),
        created_at=row[4],
        updated_at=row[5],
        counts={status.value: 0 for status in ChangeStatus} | json.loads(row[6]),
        scenes=row[7],
    )


def _change(row: Sequence[Any]) -> Change:
    return Change(
        id=row[0],
        plan_id=row[1],
        scene_id=row[2],
        field=row[3],
        action=row[4],
        value=json.loads(row[5]),
        confidence=row[6],
        status=ChangeStatus(row[7]),
        error=row[8],
        updated_at=row[9],
    )
