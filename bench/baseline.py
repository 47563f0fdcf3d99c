"""The original system's status path (StashHog; reference/stashhog-daemons.md §1 and §5), rebuilt on
the same aiohttp and SQLite as Warden, for side-by-side benchmarks (bench.fanout).

`update_status`, in the daemon's own task: reads the daemon's row, writes the new status and
commits (one transaction per update), then sends `daemon_status` to each subscriber of that
daemon in turn, awaiting every send. A failed broadcast is logged, never raised. The
original's `await asyncio.sleep(1)` after each update is left out, so the comparison is
generous; so are the shared connection (no pool contention) and Warden's own SQLite pragmas.

`/api/daemons/ws` speaks the original protocol: `{"type":"ping"}`, `{"command":"subscribe",
"daemon_id":...}`, `{"command":"unsubscribe",...}`; anything else gets an error, and a
message that is not JSON ends the connection. Its 20 s ping (uvicorn's default there) is
aiohttp's heartbeat here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from aiohttp import WSCloseCode, web

logger = logging.getLogger(__name__)
PATH = "/api/daemons/ws"
HEARTBEAT = 20.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS daemons (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    current_status TEXT,
    current_job_id TEXT,
    current_job_type TEXT,
    status_updated_at TEXT
)
"""


class WebSocketManager:
    """Connections and per-daemon subscriptions; broadcasts await each send in turn."""

    def __init__(self) -> None:
        self.active_connections: list[web.WebSocketResponse] = []
        self.daemon_subscriptions: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)

    def connect(self, socket: web.WebSocketResponse) -> None:
        self.active_connections.append(socket)

    def disconnect(self, socket: web.WebSocketResponse) -> None:
        if socket in self.active_connections:
            self.active_connections.remove(socket)
        for daemon_id in list(self.daemon_subscriptions):
            self.unsubscribe(socket, daemon_id)

    def subscribe(self, socket: web.WebSocketResponse, daemon_id: str) -> None:
        self.daemon_subscriptions[daemon_id].add(socket)

    def unsubscribe(self, socket: web.WebSocketResponse, daemon_id: str) -> None:
        subscribers = self.daemon_subscriptions.get(daemon_id)
        if subscribers is not None:
            subscribers.discard(socket)
            if not subscribers:
                del self.daemon_subscriptions[daemon_id]

    async def broadcast_daemon_status(self, daemon_id: str, status: dict[str, Any]) -> None:
        if daemon_id not in self.daemon_subscriptions:
            return
        message = {"type": "daemon_status", "daemon_id": daemon_id, "status": status}
        disconnected = []
        # Iterates the live set while awaiting, as the original does: a (dis)connect meanwhile raises.
        for socket in self.daemon_subscriptions[daemon_id]:
            try:
                if socket.closed:
                    disconnected.append(socket)
                else:
                    await socket.send_json(message)  # encoded again for every client, as there
            except Exception:
                disconnected.append(socket)
        for socket in disconnected:
            self.unsubscribe(socket, daemon_id)
            self.disconnect(socket)


MANAGER = web.AppKey("manager", WebSocketManager)


class StatusPath:
    """The daemons' table and the broadcast: `update_status` as the original's BaseDaemon has it."""

    def __init__(self, db: aiosqlite.Connection, manager: WebSocketManager) -> None:
        self._db = db
        self._turn = asyncio.Lock()  # one transaction at a time on the shared connection
        self.manager = manager
        self.transactions = 0

    async def update_status(
        self, daemon_id: str, message: str, job_id: str | None = None, job_type: str | None = None
    ) -> None:
        now = datetime.now(UTC)
        async with self._turn:
            async with self._db.execute("SELECT id FROM daemons WHERE id = ?", (daemon_id,)) as cursor:
                if await cursor.fetchone() is None:
                    return
            await self._db.execute(
                "UPDATE daemons SET current_status = ?, current_job_id = ?, current_job_type = ?, "
                "status_updated_at = ? WHERE id = ?",
                (message, job_id, job_type, now.isoformat(), daemon_id),
            )
            await self._db.commit()
            self.transactions += 1
        status = {
            "current_status": message,
            "current_job_id": job_id,
            "current_job_type": job_type,
            "status_updated_at": now.isoformat(),
        }
        try:
            await self.manager.broadcast_daemon_status(daemon_id, status)
        except Exception:
            logger.exception("broadcasting the daemon status failed")


@dataclass(frozen=True)
class Baseline:
    url: str  # the WebSocket endpoint
    database: Path
    daemon_ids: list[str]
    path: StatusPath


async def websocket(request: web.Request) -> web.WebSocketResponse:
    manager: WebSocketManager = request.app[MANAGER]
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT)
    await socket.prepare(request)
    manager.connect(socket)
    try:
        while True:
            await _handle(socket, manager, await socket.receive_json())
    except Exception:
        pass  # any error, a close included, ends the connection
    finally:
        manager.disconnect(socket)
    return socket


async def _handle(socket: web.WebSocketResponse, manager: WebSocketManager, message: Any) -> None:
    fields = message if isinstance(message, dict) else {}
    kind, command, daemon_id = fields.get("type"), fields.get("command"), fields.get("daemon_id")
    if kind == "ping":
        await socket.send_json({"type": "pong"})
    elif command == "subscribe" and isinstance(daemon_id, str):
        manager.subscribe(socket, daemon_id)
        await socket.send_json({"type": "subscription_confirmed", "daemon_id": daemon_id})
    elif command == "unsubscribe" and isinstance(daemon_id, str):
        manager.unsubscribe(socket, daemon_id)
        await socket.send_json({"type": "unsubscription_confirmed", "daemon_id": daemon_id})
    elif kind != "pong":
        await socket.send_json({"type": "error", "message": "Invalid command"})


async def _open_database(path: Path, names: list[str]) -> tuple[aiosqlite.Connection, list[str]]:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute(SCHEMA)
    ids = [str(uuid.uuid4()) for _ in names]
    await db.executemany("INSERT INTO daemons (id, name) VALUES (?, ?)", list(zip(ids, names, strict=True)))
    await db.commit()
    return db, ids


@asynccontextmanager
async def running_baseline(folder: Path, names: list[str]) -> AsyncIterator[Baseline]:
    """Serve the original status path on a free loopback port until the block ends."""
    database = folder / "baseline.db"
    db, ids = await _open_database(database, names)
    manager = WebSocketManager()
    app = web.Application()
    app[MANAGER] = manager
    app.router.add_get(PATH, websocket)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield Baseline(f"http://{host}:{port}{PATH}", database, ids, StatusPath(db, manager))
    finally:
        closing = [socket.close(code=WSCloseCode.GOING_AWAY) for socket in manager.active_connections]
        with suppress(TimeoutError):
            async with asyncio.timeout(2):  # a client that never reads would hold the close forever
                await asyncio.gather(*closing, return_exceptions=True)
        await runner.cleanup()
        await db.close()
