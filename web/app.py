"""The aiohttp application: built by `create_app`, served by `serve` for as long as Warden runs."""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from aiohttp import web

from supervisor.app import Warden
from supervisor.store import StoreError
from web import analysis, api, auth, metrics, plans, ws
from web.keys import ACCESS, LIVE_STATS, SOCKETS, WARDEN, Access, LiveStats

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1024 * 1024
logger = structlog.get_logger("warden.web")


def create_app(warden: Warden, access: Access) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors, auth.require_token, static_not_found])
    app[WARDEN] = warden
    app[ACCESS] = access
    app[SOCKETS] = weakref.WeakSet()
    app[LIVE_STATS] = LiveStats()
    base = access.base_path
    index = _versioned_index(base)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=index, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def to_page(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{base}/")  # the page's relative URLs need the trailing slash

    add = app.router
    if base:
        add.add_get(base, to_page)
    add.add_get(f"{base}/", page)
    add.add_get(f"{base}/login", auth.login_page)
    add.add_post(f"{base}/api/login", auth.login)
    add.add_post(f"{base}/api/logout", auth.logout)
    add.add_get(f"{base}/api/daemons", api.list_daemons)
    add.add_get(f"{base}/api/daemons/{{name}}", api.get_daemon)
    add.add_post(f"{base}/api/daemons/{{name}}/{{action:start|stop|restart|wake}}", api.command)
    add.add_post(f"{base}/api/{{action:start|stop|restart}}-all", api.command_all)
    add.add_get(f"{base}/api/daemons/{{name}}/config", api.get_daemon_config)
    add.add_put(f"{base}/api/daemons/{{name}}/config", api.put_daemon_config)
    add.add_get(f"{base}/api/config", api.get_config)
    add.add_put(f"{base}/api/config", api.put_config)
    add.add_get(f"{base}/api/daemons/{{name}}/logs", api.get_logs)
    add.add_get(f"{base}/api/daemons/{{name}}/logs/download", api.download_logs)
    add.add_get(f"{base}/api/events", api.get_events)
    add.add_get(f"{base}/api/jobs", api.list_jobs)
    add.add_get(f"{base}/api/jobs/{{id}}", api.get_job)
    add.add_post(f"{base}/api/jobs/{{id}}/cancel", api.cancel_job)
    plans.add_routes(add, base)
    analysis.add_routes(add, base)
    add.add_get(f"{base}/jobs", page)  # the page's own views: it routes by path
    add.add_get(f"{base}/jobs/{{id}}", page)
    add.add_get(f"{base}/plans", page)
    add.add_get(f"{base}/plans/{{id}}", page)
    add.add_get(f"{base}/api/health", api.health)
    add.add_get(f"{base}/metrics", metrics.metrics)
    add.add_get(f"{base}/ws", ws.websocket)
    add.add_static(f"{base}/static", STATIC)
    app.on_response_prepare.append(_revalidate_static)
    app.cleanup_ctx.append(plans.plans_store)
    app.cleanup_ctx.append(analysis.scene_library)
    app.on_shutdown.append(ws.close_all)
    return app


def _versioned_index(base: str) -> str:
    """index.html for every view of the page: its relative URLs resolve against the page's root
    (`<base href>`, also under /jobs/<id>), and its static URLs carry ?v=<hash of the static files>
    so that a new release is never stale."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    version = digest.hexdigest()[:12]
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    html = html.replace("<head>", f'<head>\n  <base href="{base}/">', 1)
    return re.sub(r'((?:src|href)="static/[^"?]+)"', rf'\1?v={version}"', html)


async def _revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    # Modules import each other without a version: make the browser check each one (304 when unchanged).
    if "/static/" in request.path:
        response.headers["Cache-Control"] = "no-cache"


@web.middleware
async def json_errors(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """API errors are JSON (aiohttp's own 404/405/413 are plain text)."""
    try:
        return await handler(request)
    except StoreError as failure:
        # Warden's database is unusable for now (its file replaced, the disk failing): say so, not 500.
        raise api.error(web.HTTPServiceUnavailable, f"the database is unavailable: {failure}") from None
    except web.HTTPException as failure:
        if failure.content_type == "application/json" or "/api/" not in request.path:
            raise
        failure.text = json.dumps({"error": failure.reason})
        failure.content_type = "application/json"
        raise


@web.middleware
async def static_not_found(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """A static file name the filesystem refuses (longer than it allows) is not there: 404, not aiohttp's 500."""
    try:
        return await handler(request)
    except OSError:
        if not request.path.startswith(f"{request.app[ACCESS].base_path}/static/"):
            raise
        raise web.HTTPNotFound() from None


@asynccontextmanager
async def serve(warden: Warden) -> AsyncIterator[str]:
    """Serve the page and API while the block runs; yields the page's URL. Closes clients with 1001."""
    access, generated = auth.load_access(warden.settings)
    server = warden.settings.server
    runner = web.AppRunner(create_app(warden, access), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{access.base_path}/"
        logger.info("page served", url=url)
        # The login link carries the token: print it for the person at the console, never into the log.
        print(f"\nWarden is running: {url}\nLog in with this link: {url}login?token={access.token}", flush=True)
        if generated:
            print(f"(a new token was made and saved in {warden.settings.paths.data_dir / 'token'})", flush=True)
        yield url
    finally:
        await runner.cleanup()
