"""Store: migrations, one transaction per batch, failures that write nothing, retention."""

from __future__ import annotations

import os
import sqlite3

import pytest

from supervisor.models import Actor, DaemonState, DaemonStatus, Event, LogLine
from supervisor.store import MIGRATIONS, Retention, Store, StoreError


async def test_migrations_apply_once_and_set_user_version(tmp_path):
    path = tmp_path / "w.db"
    for _ in range(2):  # a second start applies nothing and fails on nothing
        store = await Store.open(path)
        await store.close()
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_database_from_a_newer_warden_is_refused(tmp_path):
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer Warden"):
        await Store.open(path)


async def test_write_round_trips_states_events_and_logs(tmp_path):
    store = await Store.open(tmp_path / "w.db")
    try:
        state = DaemonStatus("a", "A", DaemonState.RUNNING, message="hello", progress=50.0, restarts=2, updated_at=1.0)
        event = Event("a", "transition", Actor.USER, 1.0, "", DaemonState.STOPPED, DaemonState.STARTING)
        line = LogLine("a", "info", "found 3 scenes", 2.0, {"count": 3})
        await store.write("boot1", [state], [event], [line])
        stored = await store.states()
        assert stored["a"].status == state and stored["a"].boot_id == "boot1"
        assert [(e.event, e.boot_id) for e in await store.events("a")] == [(event, "boot1")]
        assert [stored.line for stored in await store.logs("a")] == [line]
    finally:
        await store.close()


async def test_a_problem_is_read_back_after_a_restart(tmp_path):
    path = tmp_path / "w.db"
    store = await Store.open(path)
    state = DaemonStatus("a", "A", DaemonState.RUNNING, message="Cannot reach Stash", problem=True, updated_at=1.0)
    try:
        await store.write("boot1", [state])
    finally:
        await store.close()
    store = await Store.open(path)
    try:
        stored = (await store.states())["a"].status
        assert stored == state and stored.problem is True
    finally:
        await store.close()


async def test_rows_saved_before_the_problem_flag_read_back_without_a_problem(tmp_path):
    path = tmp_path / "w.db"
    before = 2  # migration 3 adds the flag
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:before]:
            db.executescript(script)
        db.execute(f"PRAGMA user_version = {before}")
        db.execute(
            "INSERT INTO daemon_state (name, title, state, message, restarts, updated_at, boot_id) "
            "VALUES ('a', 'A', 'stopped', 'done', 1, 2.0, 'old-boot')"
        )
    store = await Store.open(path)
    try:
        stored = await store.states()
        expected = DaemonStatus("a", "A", DaemonState.STOPPED, message="done", restarts=1, updated_at=2.0)
        assert stored["a"].status == expected and stored["a"].status.problem is False
        assert stored["a"].boot_id == "old-boot"
    finally:
        await store.close()


async def test_a_locked_database_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "w.db"
    store = await Store.open(path, busy_timeout_ms=50)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            await store.write("b", [DaemonStatus("a", "A")], [], [LogLine("a", "info", "x", 1.0)])
        blocker.execute("ROLLBACK")
        assert await store.states() == {}
        assert await store.logs("a") == []
    finally:
        blocker.close()
        await store.close()


async def test_retention_removes_old_rows_and_caps_the_count(tmp_path):
    store = await Store.open(tmp_path / "w.db")
    try:
        lines = [LogLine("a", "info", f"line {n}", float(n)) for n in range(100)]
        events = [Event("a", "transition", Actor.USER, float(n)) for n in range(100)]
        await store.write("b", [], events, lines)
        removed = await store.prune(now=100.0, retention=Retention(50, 30, 1000, 10, 1000))
        logs = await store.logs("a", limit=1000)
        # log lines: older than 50 s go (n < 50), then only the newest 30 stay
        assert [stored.line.message for stored in reversed(logs)] == [f"line {n}" for n in range(70, 100)]
        assert len(await store.events("a", limit=1000)) == 10
        assert removed == 70 + 90
    finally:
        await store.close()


async def test_log_queries_filter_by_level_time_text_and_page_by_id(tmp_path):
    store = await Store.open(tmp_path / "w.db")
    try:
        levels = ["debug", "info", "warning", "error"]
        lines = [LogLine("a", levels[n % 4], f"scene {n} 100%_done", float(n)) for n in range(40)]
        await store.write("b", [], [], [*lines, LogLine("other", "error", "scene 1", 1.0)])
        errors = await store.logs("a", levels=["error"], limit=1000)
        assert [s.line.message for s in errors] == [f"scene {n} 100%_done" for n in range(39, 0, -4)]
        assert [s.line.at for s in await store.logs("a", since=37.0)] == [39.0, 38.0, 37.0]
        assert [s.line.message for s in await store.logs("a", text="SCENE 2 ")] == ["scene 2 100%_done"]
        assert await store.logs("a", text="100%x") == [], "% and _ in the search text are literal"
        newest = await store.logs("a", limit=5)
        older = await store.logs("a", limit=5, before=newest[-1].id)
        assert [s.line.at for s in newest + older] == [float(n) for n in range(39, 29, -1)]
    finally:
        await store.close()


async def test_one_warden_per_database(tmp_path):
    first = await Store.open(tmp_path / "w.db")
    try:
        with pytest.raises(StoreError, match=rf"in use by another Warden \(pid {os.getpid()}\)"):
            await Store.open(tmp_path / "w.db")
    finally:
        await first.close()
    second = await Store.open(tmp_path / "w.db")  # free again once the first is closed
    await second.close()
