"""Preparing a daemon's own SQLite file: busy timeout, WAL, durability, numbered migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Literal

import aiosqlite


async def prepare(
    db: aiosqlite.Connection,
    migrations: Sequence[str],
    *,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    foreign_keys: bool = False,
) -> None:
    """Set the connection up and bring the schema to len(migrations) (PRAGMA user_version).

    Raises sqlite3.Error, including for a file written by a newer Warden (a schema it does not know).
    """
    await db.execute("PRAGMA busy_timeout = 10000")
    if foreign_keys:
        await db.execute("PRAGMA foreign_keys = ON")
    await _use_wal(db)
    await db.execute(f"PRAGMA synchronous = {synchronous}")
    await db.execute("BEGIN IMMEDIATE")  # two daemons opening a new file at once migrate it once
    try:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        if version > len(migrations):
            raise sqlite3.DatabaseError(
                f"written by a newer Warden (schema {version}; this one knows {len(migrations)})"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {number}")
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # COMMIT may have gone through before a cancel
            await db.execute("ROLLBACK")
        raise


async def _use_wal(db: aiosqlite.Connection) -> None:
    """Switch to WAL. SQLite does not wait out its busy timeout for this, so retry while
    another daemon opening the same new file holds it."""
    for attempt in range(200):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == 199:
                raise
            await asyncio.sleep(0.05)
