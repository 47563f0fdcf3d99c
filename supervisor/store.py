"""Store: Warden's SQLite database. The only module that talks to SQLite.

One connection in WAL mode. Migrations are a numbered list tracked with PRAGMA user_version.
Writers call `write` with a whole batch, which becomes one transaction.

A database file deleted or replaced while Warden runs is noticed at the next write: the old
connection lets go of it and the file now at the path is opened (a new one is created when
there is none) and migrated; `generation` counts these openings, so the writer knows to write
everything again. A file there that is not a database is left alone and each write says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from supervisor.models import Actor, DaemonState, DaemonStatus, Event, LogLine

if TYPE_CHECKING:
    from supervisor.jobs import Job

MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE boots (
        id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        stopped_at REAL,
        pid INTEGER NOT NULL
    );
    CREATE TABLE daemon_state (
        name TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        job_id TEXT,
        job_type TEXT,
        progress REAL,
        sleeping_until REAL,
        sleep_reason TEXT,
        heartbeat_at REAL,
        started_at REAL,
        restarts INTEGER NOT NULL,
        last_error TEXT,
        next_restart_at REAL,
        updated_at REAL NOT NULL,
        boot_id TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        daemon TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        message TEXT NOT NULL,
        boot_id TEXT NOT NULL
    );
    CREATE INDEX events_by_daemon ON events (daemon, at);
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        daemon TEXT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        fields TEXT NOT NULL
    );
    CREATE INDEX logs_by_daemon ON logs (daemon, at);
    """,
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        key TEXT NOT NULL,
        daemon TEXT,
        status TEXT NOT NULL,
        progress REAL,
        message TEXT NOT NULL,
        items_done INTEGER,
        items_total INTEGER,
        result TEXT,
        error TEXT,
        traceback TEXT,
        attempt INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        external_id TEXT,
        retry_at REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL
    );
    -- Single-flight: at most one active job per type and key, whoever writes the database.
    CREATE UNIQUE INDEX jobs_one_active ON jobs (type, key) WHERE status IN ('pending', 'running', 'cancelling');
    CREATE INDEX jobs_by_created ON jobs (created_at);
    """,
    """
    -- Rows saved before the flag existed read back as no problem.
    ALTER TABLE daemon_state ADD COLUMN problem INTEGER NOT NULL DEFAULT 0;
    """,
)
_JOB_COLUMNS = (
    "id",
    "type",
    "key",
    "daemon",
    "status",
    "progress",
    "message",
    "items_done",
    "items_total",
    "result",
    "error",
    "traceback",
    "attempt",
    "max_attempts",
    "external_id",
    "retry_at",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
_UPSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))}) "
    "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _JOB_COLUMNS[1:])
)

_STATE_COLUMNS = tuple(DaemonStatus.__dataclass_fields__)
_UPSERT_STATE = (
    f"INSERT INTO daemon_state ({', '.join(_STATE_COLUMNS)}, boot_id) "
    f"VALUES ({', '.join('?' * len(_STATE_COLUMNS))}, ?) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in (*_STATE_COLUMNS[1:], "boot_id"))
)
_INSERT_EVENT = (
    "INSERT INTO events (at, daemon, kind, actor, from_state, to_state, message, boot_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LOG = "INSERT INTO logs (at, daemon, level, message, fields) VALUES (?, ?, ?, ?, ?)"


class StoreError(Exception):
    """A database operation failed (disk full, locked beyond busy_timeout, file gone...)."""


class DuplicateJob(StoreError):
    """An active job with this type and key is already in the database."""


class DatabaseReplaced(StoreError):
    """The open file was deleted or replaced; the one now at the path was opened in its place."""


@dataclass(frozen=True, slots=True)
class StoredState:
    status: DaemonStatus
    boot_id: str


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    event: Event
    boot_id: str


@dataclass(frozen=True, slots=True)
class StoredLog:
    id: int
    line: LogLine


@dataclass(frozen=True, slots=True)
class Retention:
    log_max_age: float
    log_max_rows: int
    event_max_age: float
    event_max_rows: int
    job_max_age: float


class Store:
    def __init__(self, connection: aiosqlite.Connection, path: Path, lock: int, busy_timeout_ms: int) -> None:
        self._connection: aiosqlite.Connection | None = connection  # None: the file at the path cannot be opened
        self.path = path
        self._lock = lock
        self._busy_timeout_ms = busy_timeout_ms
        self._file = _identity(path)
        self._unopened = ""  # why the file at the path could not be opened
        self._boot: tuple[str, float, int] | None = None  # written again into a database opened in a file's place
        self.generation = 0  # how many times a deleted or replaced file was followed
        # One statement sequence at a time on the one connection: a statement from another task must
        # never land inside the writer's open transaction (and be rolled back with it).
        self._turn = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock_exclusively(path.with_name(path.name + ".lock"))
        try:
            connection = await _connect(path, busy_timeout_ms)
        except BaseException:
            os.close(lock)
            raise
        return cls(connection, path, lock, busy_timeout_ms)

    async def close(self) -> None:
        try:
            if self._connection is not None:
                await self._connection.close()
        finally:
            os.close(self._lock)  # the lock goes with it (and with the process, however it ends)

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise StoreError(self._unopened)
        return self._connection

    async def _follow_the_file(self) -> None:
        """Before a write: when the open file is no longer the one at the path, open the one there.

        Raises DatabaseReplaced once that is done (what was written before is not in it), or
        StoreError while the path holds something that cannot be opened as the database.
        """
        if self._connection is not None and _identity(self.path) == self._file:
            return
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._unopened = f"{self.path} was deleted or replaced while Warden ran"
            with contextlib.suppress(sqlite3.Error):
                # Its write-ahead log keeps its name beside the new file: empty it into the old file first,
                # or opening the new one would replay the old one's pages into it.
                await connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):  # aiosqlite lets go of the file whether or not close fails
                await connection.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._relock()
            connection = await _connect(self.path, self._busy_timeout_ms)
        except (OSError, sqlite3.Error, StoreError) as error:
            self._unopened = (
                f"{self.path} was deleted or replaced while Warden ran, and what is there now cannot be opened "
                f"as its database ({error}); remove it and Warden creates a new one"
            )
            raise StoreError(self._unopened) from error
        self._connection = connection  # kept even if the path cannot be looked at now: followed at the next write
        self._file = _identity(self.path)
        self.generation += 1
        if self._boot is not None:
            with contextlib.suppress(sqlite3.Error):  # only a record of the run; its end is updated if it is there
                await connection.execute(
                    "INSERT OR IGNORE INTO boots (id, started_at, pid) VALUES (?, ?, ?)", self._boot
                )
        raise DatabaseReplaced(
            f"{self.path} was deleted or replaced while Warden ran; Warden opened the database now there "
            "and writes the current state to it"
        )

    def _relock(self) -> None:
        """Hold the lock file at the path again when it went with the database (e.g. its folder was deleted)."""
        path = self.path.with_name(self.path.name + ".lock")
        held = os.fstat(self._lock)
        if _identity(path) != (held.st_dev, held.st_ino):
            lock = _lock_exclusively(path)
            os.close(self._lock)
            self._lock = lock

    # -- writing -------------------------------------------------------------------

    async def write(
        self,
        boot_id: str,
        states: Iterable[DaemonStatus] = (),
        events: Iterable[Event] = (),
        logs: Iterable[LogLine] = (),
        jobs: Iterable[Job] = (),
    ) -> None:
        """Write one batch as a single transaction, or raise StoreError and write nothing."""
        state_rows = [(*(getattr(s, c) for c in _STATE_COLUMNS), boot_id) for s in states]
        event_rows = [(e.at, e.daemon, e.kind, e.actor, e.from_state, e.to_state, e.message, boot_id) for e in events]
        log_rows = [
            (line.at, line.daemon, line.level, line.message, json.dumps(line.fields, default=str)) for line in logs
        ]
        job_rows = [_job_row(job) for job in jobs]
        async with self._turn:
            await self._follow_the_file()
            await self._transaction(state_rows, event_rows, log_rows, job_rows)

    async def _transaction(self, *rows: list[tuple[Any, ...]]) -> None:
        state_rows, event_rows, log_rows, job_rows = rows
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                # Each statement is a round trip to the connection's thread: skip the empty ones.
                for statement, batch in (
                    (_UPSERT_STATE, state_rows),
                    (_UPSERT_JOB, job_rows),
                    (_INSERT_EVENT, event_rows),
                    (_INSERT_LOG, log_rows),
                ):
                    if batch:
                        await self._db.executemany(statement, batch)
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error

    async def insert_job(self, job: Job) -> None:
        """Record a new job at once (not batched): the unique index decides single-flight."""
        try:
            async with self._turn:
                await self._db.execute(
                    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})",
                    _job_row(job),
                )
        except sqlite3.IntegrityError as error:
            raise DuplicateJob(f"an active {job.type} job for {job.key!r} exists") from error
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error

    async def save_jobs(self, jobs: Iterable[Job]) -> None:
        """Write jobs' current state at once, outside the batched writes."""
        try:
            async with self._turn:
                await self._db.executemany(_UPSERT_JOB, [_job_row(job) for job in jobs])
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error

    async def interrupt_jobs(self, at: float, reason: str) -> int:
        """After a crash: jobs left active fail with `reason`. Returns how many."""
        return await self._execute(
            "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ? "
            "WHERE status IN ('pending', 'running', 'cancelling')",
            (reason, at, at),
        )

    async def jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        daemon: str | None = None,
        limit: int = 100,
        before: float | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` pages back from a creation time."""
        where, parameters = _where(
            ("status = ?", status), ("type = ?", job_type), ("daemon = ?", daemon), ("created_at < ?", before)
        )
        rows = await self._fetch(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs {where} ORDER BY created_at DESC LIMIT ?", (*parameters, limit)
        )
        return [_job_from_row(row) for row in rows]

    async def job(self, job_id: str) -> dict[str, Any] | None:
        rows = await self._fetch(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    async def begin_boot(self, boot_id: str, at: float, pid: int) -> None:
        self._boot = (boot_id, at, pid)
        await self._execute("INSERT INTO boots (id, started_at, pid) VALUES (?, ?, ?)", self._boot)

    async def end_boot(self, boot_id: str, at: float) -> None:
        await self._execute("UPDATE boots SET stopped_at = ? WHERE id = ?", (at, boot_id))

    async def prune(self, now: float, retention: Retention) -> int:
        """Apply the retention limits; returns the number of rows removed."""
        removed = 0
        for table, max_age, max_rows in (
            ("logs", retention.log_max_age, retention.log_max_rows),
            ("events", retention.event_max_age, retention.event_max_rows),
        ):
            removed += await self._execute(f"DELETE FROM {table} WHERE at < ?", (now - max_age,))
            removed += await self._execute(
                f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (max_rows,),
            )
        removed += await self._execute(
            "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (now - retention.job_max_age,)
        )
        return removed

    async def _execute(self, sql: str, parameters: Sequence[Any]) -> int:
        try:
            async with self._turn, self._db.execute(sql, parameters) as cursor:
                return cursor.rowcount
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error

    # -- reading -------------------------------------------------------------------

    async def states(self) -> dict[str, StoredState]:
        rows = await self._fetch(f"SELECT {', '.join(_STATE_COLUMNS)}, boot_id FROM daemon_state", ())
        return {row[0]: StoredState(_status_from_row(row[:-1]), row[-1]) for row in rows}

    async def events(
        self, daemon: str | None = None, *, limit: int = 100, before: int | None = None
    ) -> list[StoredEvent]:
        """Newest first; `before` pages back from an event id."""
        where, parameters = _where(("daemon = ?", daemon), ("id < ?", before))
        rows = await self._fetch(
            "SELECT id, daemon, kind, actor, at, message, from_state, to_state, boot_id FROM events "
            f"{where} ORDER BY id DESC LIMIT ?",
            (*parameters, limit),
        )
        return [StoredEvent(row[0], _event_from_row(row[1:-1]), row[-1]) for row in rows]

    async def logs(
        self,
        daemon: str,
        *,
        levels: Sequence[str] | None = None,
        since: float | None = None,
        text: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[StoredLog]:
        """Newest first. `levels`: the levels wanted; `text`: a case-insensitive substring."""
        pattern = None if not text else "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where, parameters = _where(
            ("daemon = ?", daemon),
            (f"level IN ({', '.join('?' * len(levels))})" if levels else None, *(levels or ())),
            ("at >= ?", since),
            ("message LIKE ? ESCAPE '\\'", pattern),
            ("id < ?", before),
        )
        rows = await self._fetch(
            f"SELECT id, daemon, level, message, at, fields FROM logs {where} ORDER BY id DESC LIMIT ?",
            (*parameters, limit),
        )
        return [StoredLog(row[0], LogLine(row[1], row[2], row[3], row[4], json.loads(row[5]))) for row in rows]

    async def _fetch(self, sql: str, parameters: Sequence[Any]) -> list[sqlite3.Row]:
        try:
            async with self._turn, self._db.execute(sql, parameters) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error


async def _connect(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
    """Open the database at `path` (created when missing), in WAL mode, with every migration applied."""
    connection = await aiosqlite.connect(path, isolation_level=None)
    try:
        await connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA synchronous = NORMAL")
        await _migrate(connection, path)
    except BaseException:
        await connection.close()
        raise
    return connection


async def _migrate(connection: aiosqlite.Connection, path: Path) -> None:
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise StoreError(f"{path} was written by a newer Warden (schema {version}, this one knows {len(MIGRATIONS)})")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; the version bump is in the same script so both land together.
        await connection.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` (device and inode), None when there is none.

    Raises StoreError when the path cannot be looked at (its folder replaced by a file, no permission):
    whether the open connection still writes the file a restarted Warden would open cannot be told, so
    the write fails, shows as the store problem and is retried, keeping the connection for when the
    path is usable again. Writing on unseen would leave the user believing it saved where it did not.
    """
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StoreError(f"{path} cannot be looked at ({error}); Warden retries until it can") from error
    return found.st_dev, found.st_ino


def _lock_exclusively(path: Path) -> int:
    """One Warden per database: a second one would take the first one's running daemons for crashed."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise StoreError(f"{path.with_suffix('')} is in use by another Warden (pid {holder})") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode(), 0)
    return descriptor


def _where(*conditions: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """A WHERE clause from (sql, value...) pairs; a pair whose sql or first value is None is left out."""
    clauses, parameters = [], []
    for sql, *values in conditions:
        if sql is None or (values and values[0] is None):
            continue
        clauses.append(sql)
        parameters.extend(values)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), parameters


def _job_row(job: Job) -> tuple[Any, ...]:
    values = {column: getattr(job, column) for column in _JOB_COLUMNS}
    values["result"] = None if job.result is None else json.dumps(job.result, default=str)
    return tuple(values.values())


def _job_from_row(row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    values["result"] = None if values["result"] is None else json.loads(values["result"])
    return values


def _status_from_row(row: Sequence[Any]) -> DaemonStatus:
    values = dict(zip(_STATE_COLUMNS, row, strict=True))
    values["state"] = DaemonState(values["state"])
    values["problem"] = bool(values["problem"])  # SQLite keeps booleans as 0 and 1
    return DaemonStatus(**values)


def _event_from_row(row: Sequence[Any]) -> Event:
    daemon, kind, actor, at, message, from_state, to_state = row
    return Event(
        daemon,
        kind,
        Actor(actor),
        at,
        message,
        DaemonState(from_state) if from_state else None,
        DaemonState(to_state) if to_state else None,
    )
