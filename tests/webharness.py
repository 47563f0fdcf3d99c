"""A whole Warden (kernel and web) in the test's event loop, on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from supervisor.app import Warden, load_config
from supervisor.daemon import Daemon
from supervisor.plugins import Registry
from web.app import serve

TOKEN = "test-token-0123456789"


def config_text(daemon_sections: str = "", server: str = "") -> str:
    """A config file: loopback, port 0 (any free port), a fixed token, fast hand-edit polling."""
    return (
        "server:\n  host: 127.0.0.1\n  port: 0\n"
        f"  token: {TOKEN}\n{server}"
        "paths:\n  data_dir: data\n"
        "supervisor:\n  config_poll_interval: 0.05\n"
        f"daemons:\n{daemon_sections or '  {}'}\n"
    )


@asynccontextmanager
async def running_warden(
    tmp_path: Path,
    daemon_classes: list[type[Daemon]],
    yaml: str | None = None,
    companions: Sequence[Callable[[Warden], AbstractAsyncContextManager[None]]] = (),
) -> AsyncIterator[Warden]:
    """Run Warden until the block ends (then a graceful shutdown). `warden.url` is the page."""
    path = tmp_path / "warden.yaml"
    text = yaml if yaml is not None else config_text()
    path.write_text(text.replace("data_dir: data", f"data_dir: {tmp_path / 'data'}"))
    registry = Registry(daemons={cls.name: cls for cls in daemon_classes})
    warden = Warden(load_config(path, registry), registry, front=serve, companions=list(companions))
    stop = asyncio.Event()
    task = asyncio.create_task(warden.run(stop))
    ready = asyncio.create_task(warden.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what prevented the start
    try:
        yield warden
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def api_session(warden: Warden, token: str | None = TOKEN) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose relative URLs resolve against the page (base path included)."""
    assert warden.url is not None
    headers = bearer(token) if token else {}
    async with aiohttp.ClientSession(base_url=warden.url.rstrip("/") + "/", headers=headers) as session:
        yield session


async def until(warden: Warden, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds, re-checking after every change Warden publishes."""
    subscription = warden.hub.subscribe(max_lines=100)
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await subscription.get()
    finally:
        warden.hub.unsubscribe(subscription)


@asynccontextmanager
async def browser(warden: Warden) -> AsyncIterator[aiohttp.ClientSession]:
    """A client with no bearer token that keeps cookies (also from an IP-address host, as a browser does)."""
    assert warden.url is not None
    async with aiohttp.ClientSession(base_url=warden.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def call(session: aiohttp.ClientSession, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    """One API request; asserts the status and returns the JSON body (every API error is JSON too)."""
    async with session.request(method, path, **kwargs) as response:
        body = await response.text()
        assert response.status == status, body
        assert response.content_type == "application/json", body
        return json.loads(body)


def daemon_of(warden: Warden, name: str) -> Daemon:
    """The running instance of a daemon, to drive it from the test (update_status, log)."""
    assert warden.supervisor is not None
    daemon = warden.supervisor.runner(name).daemon
    assert daemon is not None, f"{name} is not running"
    return daemon


async def saved(warden: Warden) -> None:
    """Wait until every numbered change published so far is in the database (the API reads it from there)."""
    assert warden.writer is not None
    warden.hub.flush()
    await asyncio.wait_for(warden.writer.wait_saved(warden.hub.seq), 5)


async def metrics(session: aiohttp.ClientSession) -> dict[str, float]:
    """GET /metrics as {'name{labels}': value}."""
    async with session.get("metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, poll: float = 0.02) -> None:
    """Re-run `check` until it returns True, for conditions nothing publishes (e.g. a counter in /metrics)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 -- what it reads publishes no change to wait on
            await asyncio.sleep(poll)
