"""Typed application state (aiohttp AppKeys): what the handlers share, with no module globals."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from aiohttp import web

from supervisor.app import Warden


@dataclass
class LiveStats:
    """Counters of the WebSocket side, for /metrics."""

    connections_total: int = 0
    dropped_lines_total: int = 0
    closed_stuck_total: int = 0


@dataclass(frozen=True)
class Access:
    token: str
    session: str  # the session cookie's value, derived from the token
    base_path: str


WARDEN = web.AppKey("warden", Warden)
ACCESS = web.AppKey("access", Access)
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
LIVE_STATS = web.AppKey("live_stats", LiveStats)
