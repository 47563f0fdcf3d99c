"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from aiohttp import web

from supervisor.models import DaemonState
from web.keys import LIVE_STATS, SOCKETS, WARDEN


def _line(name: str, value: float, **labels: str) -> str:
    if labels:
        inner = ",".join(f'{key}="{text}"' for key, text in labels.items())
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


async def metrics(request: web.Request) -> web.Response:
    warden = request.app[WARDEN]
    stats = request.app[LIVE_STATS]
    lines = [
        "# HELP warden_daemon_state 1 for the state each daemon is in.",
        "# TYPE warden_daemon_state gauge",
    ]
    runners = warden.supervisor.runners.values() if warden.supervisor else []
    for runner in runners:
        lines += [
            _line("warden_daemon_state", runner.status.state is s, daemon=runner.name, state=s) for s in DaemonState
        ]
    lines += ["# HELP warden_daemon_restarts_total Automatic restarts.", "# TYPE warden_daemon_restarts_total counter"]
    lines += [_line("warden_daemon_restarts_total", r.status.restarts, daemon=r.name) for r in runners]
    lines += [
        "# HELP warden_daemon_problem 1 while a daemon's status line reports a problem it is retrying.",
        "# TYPE warden_daemon_problem gauge",
    ]
    lines += [_line("warden_daemon_problem", r.status.problem, daemon=r.name) for r in runners]
    writer = warden.writer
    store_ok = warden.hub.system.get("store", {}).get("ok", False)
    for name, kind, value, text in (
        ("warden_status_updates_total", "counter", warden.hub.published, "Daemon state changes published."),
        ("warden_websocket_clients", "gauge", len(request.app[SOCKETS]), "Connected WebSocket clients."),
        ("warden_websocket_connections_total", "counter", stats.connections_total, "WebSocket connections accepted."),
        ("warden_websocket_dropped_total", "counter", stats.dropped_lines_total, "Lines dropped for slow clients."),
        ("warden_websocket_closed_slow_total", "counter", stats.closed_stuck_total, "Clients closed for not reading."),
        ("warden_store_ok", "gauge", store_ok, "1 when the last database write succeeded."),
        ("warden_store_transactions_total", "counter", writer.transactions if writer else 0, "Database writes."),
        ("warden_store_write_seconds", "gauge", writer.last_write_seconds if writer else 0, "Last write's duration."),
    ):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", _line(name, float(value))]
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
