"""Access: the token only counts in its own place, the WebSocket refuses pages of other origins,
and the secrets (Warden's token, Stash's API key, qBittorrent's password) are never in a response,
a WebSocket message, the page, the process log or the database, while real daemons use them.
(tests/test_api.py and tests/test_ws.py have the basic token and origin cases, and the refusal of
a public address without a token.)"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, expect
from yarl import URL

from daemons.children import free_port
from daemons.download_processor import DownloadProcessor
from daemons.stash_sync import StashSync
from tests.daemons_for_tests import Worker
from tests.tally import TallyRecorder
from tests.test_page import card, open_page
from tests.test_ws import opening, read_until
from tests.webharness import TOKEN, api_session, bearer, browser, call, config_text, running_warden, until
from web.auth import COOKIE

#: (where the token was put, request headers, query, JSON body): none of them is a place it counts.
MISPLACED: list[tuple[str, dict[str, str], dict[str, str], dict[str, str] | None]] = [
    ("query string ?token=", {}, {"token": TOKEN}, None),
    ("query string ?access_token=", {}, {"access_token": TOKEN}, None),
    ("JSON body", {}, {}, {"token": TOKEN}),
    ("cookie named token", {"Cookie": f"token={TOKEN}"}, {}, None),
    ("session cookie holding the raw token", {"Cookie": f"{COOKIE}={TOKEN}"}, {}, None),
    ("X-Api-Key header", {"X-Api-Key": TOKEN}, {}, None),
    ("Authorization: Token", {"Authorization": f"Token {TOKEN}"}, {}, None),
    ("Authorization: Basic", {"Authorization": f"Basic {TOKEN}"}, {}, None),
    ("Authorization: bare token", {"Authorization": TOKEN}, {}, None),
    ("bearer with a suffix", bearer(TOKEN + "x"), {}, None),
    ("bearer, a prefix of the token", bearer(TOKEN[:-1]), {}, None),
    ("empty bearer", {"Authorization": "Bearer "}, {}, None),
]


async def test_the_token_counts_only_in_its_place(tmp_path: Path, tally: TallyRecorder) -> None:
    let_in: list[str] = []
    tries = 0
    async with running_warden(tmp_path, [Worker]) as warden, api_session(warden, token=None) as stranger:
        runner = warden.supervisor.runner("worker")
        for where, headers, query, body in MISPLACED:
            for method, path in (("GET", "api/daemons"), ("POST", "api/daemons/worker/stop"), ("GET", "ws")):
                tries += 1
                async with stranger.request(method, path, headers=headers, params=query, json=body) as response:
                    if response.status != 401:
                        let_in.append(f"{where}: {method} {path} -> {response.status}")
        assert runner.status.state.value == "running"
    tally.record(
        "access",
        "the token in the wrong place (query, body, other cookies, other headers and schemes, near misses)",
        tries=tries,
        outcome="401 for each; the daemon kept running",
        lost=len(let_in),
    )
    assert let_in == []


async def test_a_websocket_from_another_origin_is_refused_even_with_the_session_cookie(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    refused: list[str] = []
    async with running_warden(tmp_path, [Worker]) as warden, browser(warden) as page:
        await call(page, "POST", "api/login", json={"token": TOKEN})
        url = URL(warden.url or "")
        others = [
            f"http://{url.host}:{free_port()}",  # another port of the same host
            f"http://localhost:{url.port}",  # another name for the same server is another origin
            f"http://{url.host}:{url.port}.evil.example",
            f"http://evil.example/{url.host}:{url.port}",
            "null",  # a sandboxed frame or a file
        ]
        for origin in others:
            try:
                async with page.ws_connect("ws", origin=origin):
                    pass
            except aiohttp.WSServerHandshakeError as error:
                if error.status == 403:
                    refused.append(origin)
        async with page.ws_connect("ws", origin=str(url.origin())) as client:
            _, snapshot = await opening(client)
            assert snapshot["type"] == "snapshot", "the page's own origin is let in"
    tally.record(
        "access",
        "cross-origin WebSocket with the session cookie (other port, host name, suffix, path, null)",
        tries=len(others),
        outcome="403 for each; the page's own origin connects",
        lost=len(others) - len(refused),
    )
    assert refused == others


STASH_KEY = "stash-key-SECRET-4f1e7c"
QBT_PASSWORD = "qbt-pass-SECRET-9a2c31"
SECRETS = (TOKEN, STASH_KEY, QBT_PASSWORD)


async def test_secrets_are_never_in_responses_messages_the_page_logs_or_the_database(
    browser: Browser, tmp_path: Path, tally: TallyRecorder, capfd
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: both daemons fail and say so, using the secrets
    yaml = (
        config_text(f"  download_processor:\n    destination: {library}\n    interval: 3600\n")
        + f"stash:\n  url: {closed}\n  api_key: {STASH_KEY}\n"
        + f"qbittorrent:\n  url: {closed}\n  password: {QBT_PASSWORD}\n"
    )
    seen: dict[str, str] = {}
    async with running_warden(tmp_path, [StashSync, DownloadProcessor], yaml=yaml) as warden:
        runners = warden.supervisor.runners.values()
        await until(warden, lambda: all(r.status.problem for r in runners), 30)
        async with api_session(warden) as session:
            for path in (
                "api/daemons", "api/daemons/stash_sync", "api/daemons/stash_sync/config",
                "api/daemons/download_processor/config", "api/config", "api/daemons/stash_sync/logs",
                "api/daemons/download_processor/logs/download", "api/events", "api/jobs", "api/health", "metrics",
            ):  # fmt: skip
                async with session.get(path) as response:
                    seen[path] = f"{response.headers}\n{await response.text()}"
            async with session.ws_connect("ws") as client:
                messages = [*await opening(client)]
                await client.send_json({"type": "subscribe_logs", "daemons": ["stash_sync", "download_processor"]})
                await warden.supervisor.runner("stash_sync").restart("user")
                messages += await read_until(client, lambda m: m["type"] == "log", 30)
                seen["ws"] = json.dumps(messages)

        page = await open_page(browser, warden.url)
        await card(page, "download_processor").get_by_test_id("open-config").click()
        await expect(page.get_by_test_id("field-destination")).to_have_value(str(library))
        seen["page: config form"] = await page.content()
        await page.keyboard.press("Escape")  # closes the form's dialog
        await page.get_by_test_id("open-yaml").click()
        await expect(page.get_by_test_id("yaml-editor")).to_have_value(warden.config.masked_text())
        seen["page: config file"] = await page.get_by_test_id("yaml-editor").input_value()
    output = capfd.readouterr()
    # The one line that carries the token on purpose: the login link, printed for the person at the console.
    login = f"Log in with this link: {warden.url}login?token={TOKEN}\n"
    assert (output.out + output.err).count(login) == 1
    seen["process output"] = (output.out + output.err).replace(login, "")
    for file in sorted((tmp_path / "data").glob("warden.db*")):
        seen[f"database {file.name}"] = file.read_bytes().decode("latin-1")

    found = {f"{secret} in {where}": text.count(secret) for where, text in seen.items() for secret in SECRETS}
    leaks = {where: count for where, count in found.items() if count}
    tally.record(
        "access",
        "secrets (token, Stash key, qBittorrent password) in API responses, WebSocket, page, process output, database",
        tries=len(found),
        outcome="masked or absent everywhere while two real daemons used them against a closed port",
        lost=sum(leaks.values()),
    )
    assert leaks == {}
    # The places searched held what they should: the daemons' problems, logged and stored.
    assert "download_processor" in seen["process output"]
    assert "stash_sync" in seen["database warden.db"]
