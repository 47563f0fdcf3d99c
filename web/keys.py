"""Typed application state (aiohttp AppKeys): what the handlers share, with no module globals."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from daemons.plans.store import PlanStore
from daemons.stash.library import SceneLibrary
from supervisor.app import Warden

if TYPE_CHECKING:
    from web.handles import LazyHandle
    from web.ws import Connection


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
#: The live WebSocket connections (for /metrics, and to close them at shutdown).
SOCKETS: web.AppKey[weakref.WeakSet[Connection]] = web.AppKey("sockets")
LIVE_STATS = web.AppKey("live_stats", LiveStats)
#: The plans database, opened on first use (web/plans.py).
PLANS: web.AppKey[LazyHandle[PlanStore]] = web.AppKey("plans")
#: The scene library, opened on first use (web/analysis.py).
LIBRARY: web.AppKey[LazyHandle[SceneLibrary]] = web.AppKey("library")
