"""The REST API of docs/protocol.md, through a real HTTP client against a whole running Warden."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import Field, SecretStr, ValidationError
from yarl import URL

from supervisor import Daemon, DaemonConfig
from supervisor.app import Warden
from supervisor.cli import main
from supervisor.config import settings_model
from supervisor.configfile import MASK
from supervisor.models import Actor, DaemonState
from tests.daemons_for_tests import Crasher, Worker
from tests.webharness import TOKEN, api_session, browser, call, config_text, daemon_of, running_warden, saved, until
from web.app import MAX_BODY
from web.auth import AccessError, load_access

#: Every field of the daemon object in docs/protocol.md.
DAEMON_FIELDS = {
    "name", "title", "state", "message", "problem", "job_id", "job_type", "progress", "sleeping_until",
    "sleep_reason", "heartbeat_at", "started_at", "restarts", "last_error", "next_restart_at", "updated_at",
    "enabled", "auto_start",
}  # fmt: skip
EVENT_FIELDS = {"id", "at", "daemon", "kind", "actor", "from_state", "to_state", "message", "boot_id"}
SECRET = "sekrit-value"
PASSWORD = "hunter2-password"


class Chatter(Daemon):
    """Logs one line at each level (and a LIKE wildcard trap), then sleeps."""

    name = "chatter"
    title = "Chatter"

    async def run(self) -> None:
        self.log.debug("cache warmed", entries=3)
        self.log.info("progress 50% done")
        self.log.info("5000 items scanned")
        self.log.warning("disk almost full", free_gib=1.5)
        self.log.error("upload failed", status=503)
        await self.sleep(3600, "done talking")


class Vault(Daemon):
    """A daemon with a secret setting."""

    name = "vault"
    title = "Vault"

    class Config(DaemonConfig):
        password: SecretStr | None = Field(None, description="Password of the vault.")
        retries: int = Field(3, ge=0, le=10, description="Attempts before giving up.")

    async def run(self) -> None:
        await self.sleep(3600, "guarding")


#: A config file with comments, a secret daemon setting and a secret shared setting.
COMMENTED = (
    config_text(
        "  # the worker's own section\n"
        "  worker:\n"
        "    interval: 3600  # an hour between rounds\n"
        "  chatter:\n"
        "    log_level: debug\n"
        "  vault:\n"
        f"    password: {PASSWORD}\n"
        "    retries: 3\n"
    )
    + f"stash:\n  api_key: {SECRET}\n"
)


@pytest.fixture(autouse=True)
def reset_counters() -> None:
    Worker.runs = Worker.cleanups = 0


@asynccontextmanager
async def client(
    tmp_path: Path, yaml: str = COMMENTED, classes: tuple[type[Daemon], ...] = (Worker, Chatter, Vault)
) -> AsyncIterator[tuple[Warden, aiohttp.ClientSession]]:
    """A running Warden and a client authenticated with the bearer token."""
    async with running_warden(tmp_path, list(classes), yaml=yaml) as warden, api_session(warden) as session:
        yield warden, session


async def fails(session: aiohttp.ClientSession, method: str, path: str, status: int, **kwargs: Any) -> str:
    """A request that must fail with `status` and a JSON {"error": message}; returns the message."""
    body = await call(session, method, path, status, **kwargs)
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the first line containing `fragment`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def on_disk(warden: Warden) -> bytes:
    return Path(warden.config.path).read_bytes()


# -- access ---------------------------------------------------------------------------


async def test_every_api_call_needs_the_token(tmp_path):
    async with client(tmp_path) as (warden, _):
        for token in (None, "wrong-token"):
            async with api_session(warden, token=token) as stranger:
                for path in ("api/daemons", "api/daemons/worker/config", "api/config", "api/events", "metrics"):
                    await fails(stranger, "GET", path, 401)
                await fails(stranger, "POST", "api/daemons/worker/stop", 401)
                async with stranger.get("") as page:
                    assert page.status == 200, "the page itself is public: it shows the login form"
        assert warden.supervisor.runner("worker").status.state is DaemonState.RUNNING


def origin_of(warden: Warden) -> str:
    return str(URL(warden.url or "").origin())


async def test_login_sets_a_session_cookie_that_only_same_origin_changes_may_use(tmp_path):
    async with client(tmp_path) as (warden, _), browser(warden) as page:
        await fails(page, "POST", "api/login", 401, json={"token": "wrong-token"})
        await fails(page, "POST", "api/login", 400, data="not json")
        assert len(page.cookie_jar) == 0, "a failed login sets no cookie"
        async with page.post("api/login", json={"token": TOKEN}) as response:
            assert response.status == 200
            cookie = response.cookies["warden_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict", "scripts and other sites never see it"
            assert TOKEN not in cookie.value, "the cookie is derived from the token, not the token itself"
        listing = await call(page, "GET", "api/daemons")
        assert [d["name"] for d in listing["daemons"]] == ["chatter", "vault", "worker"]

        # A change that another site's page makes the browser send (with the cookie) is refused.
        await fails(page, "POST", "api/daemons/worker/stop", 403, headers={"Origin": "http://evil.example"})
        await fails(page, "POST", "api/daemons/worker/stop", 403, headers={"Sec-Fetch-Site": "cross-site"})
        assert warden.supervisor.runner("worker").status.state is DaemonState.RUNNING
        stopped = await call(page, "POST", "api/daemons/worker/stop", headers={"Origin": origin_of(warden)})
        assert stopped["state"] == "stopped"

        await call(page, "POST", "api/logout", headers={"Origin": origin_of(warden)})
        await fails(page, "GET", "api/daemons", 401)


async def test_login_link_sets_the_cookie_and_opens_the_page(tmp_path):
    async with client(tmp_path) as (warden, _), browser(warden) as page:
        async with page.get("login", params={"token": "wrong-token"}, allow_redirects=False) as refused:
            assert refused.status == 401
            assert "warden_session" not in refused.cookies
        async with page.get("login", params={"token": TOKEN}, allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == "/"
            assert "warden_session" in response.cookies
        assert (await call(page, "GET", "api/daemons/worker"))["state"] == "running"


def test_a_public_address_without_a_token_is_refused(tmp_path):
    # Checked before anything listens, so no non-loopback address is ever bound here.
    model = settings_model({})
    public = model(server={"host": "0.0.0.0"}, paths={"data_dir": tmp_path})
    with pytest.raises(AccessError, match="WARDEN_SERVER__TOKEN"):
        load_access(public)
    token = "a-long-enough-token"
    access, generated = load_access(model(server={"host": "0.0.0.0", "token": token}, paths={"data_dir": tmp_path}))
    assert access.token == token and not generated
    access, generated = load_access(model(paths={"data_dir": tmp_path}))
    assert generated and (tmp_path / "token").stat().st_mode & 0o777 == 0o600, "a generated token is private"
    assert load_access(model(paths={"data_dir": tmp_path})) == (access, False), "and kept for the next run"


def test_an_empty_or_short_token_is_never_accepted(tmp_path):
    model = settings_model({})
    for weak in ("", "short"):
        with pytest.raises(ValidationError, match=r"server\.token"):
            model(server={"host": "0.0.0.0", "token": weak}, paths={"data_dir": tmp_path})
    (tmp_path / "token").write_text("\n")  # a blank token file is replaced, not trusted
    access, generated = load_access(model(paths={"data_dir": tmp_path}))
    assert generated and len(access.token) >= 16


def test_warden_run_refuses_a_public_address_without_a_token(tmp_path, capsys):
    path = tmp_path / "warden.yaml"
    path.write_text(f"server:\n  host: 0.0.0.0\n  port: 0\npaths:\n  data_dir: {tmp_path / 'data'}\n")
    assert main(["run", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without a token" in error
    assert "Traceback" not in error
    assert not (tmp_path / "data" / "token").exists()


# -- daemons and commands -----------------------------------------------------------------


async def test_daemons_are_listed_with_their_full_state(tmp_path):
    async with client(tmp_path) as (warden, session):
        listing = await call(session, "GET", "api/daemons")
        assert 0 < listing["seq"] <= warden.hub.seq
        assert listing["system"]["store"]["ok"] is True
        by_name = {d["name"]: d for d in listing["daemons"]}
        assert set(by_name) == {"worker", "chatter", "vault"}
        for daemon in by_name.values():
            assert set(daemon) == DAEMON_FIELDS
        worker = by_name["worker"]
        assert worker["title"] == "Worker"
        assert (worker["state"], worker["message"], worker["sleep_reason"]) == ("running", "Round 1", "next round")
        assert (worker["enabled"], worker["auto_start"]) == (True, True)
        assert worker["sleeping_until"] > worker["started_at"] > 0
        assert await call(session, "GET", "api/daemons/worker") == worker
        assert "ghost" in await fails(session, "GET", "api/daemons/ghost", 404)
        await fails(session, "POST", "api/daemons/ghost/start", 404)
        await fails(session, "GET", "api/no-such-thing", 404)


async def test_start_stop_restart_and_wake(tmp_path):
    async with client(tmp_path) as (warden, session):
        stopped = await call(session, "POST", "api/daemons/worker/stop")
        assert (stopped["state"], stopped["message"], stopped["sleeping_until"]) == ("stopped", "", None)
        assert Worker.cleanups == 1
        woken = await call(session, "POST", "api/daemons/worker/wake")
        assert woken["woken"] is False, "a stopped daemon is not sleeping"
        started = await call(session, "POST", "api/daemons/worker/start")
        assert (started["state"], started["message"]) == ("running", "Round 1")
        restarted = await call(session, "POST", "api/daemons/worker/restart")
        assert restarted["state"] == "running" and restarted["started_at"] > started["started_at"]
        assert Worker.runs - Worker.cleanups == 1, "one live instance after a restart"

        woken = await call(session, "POST", "api/daemons/worker/wake")
        assert woken["woken"] is True
        assert set(woken["daemon"]) == DAEMON_FIELDS
        runner = warden.supervisor.runner("worker")
        await until(warden, lambda: runner.status.message == "Round 2")
        assert (await call(session, "GET", "api/daemons/worker"))["message"] == "Round 2"


async def test_commands_on_every_daemon_leave_a_disabled_one_alone(tmp_path):
    yaml = config_text("  worker:\n    interval: 3600\n  vault:\n    enabled: false\n")
    async with client(tmp_path, yaml) as (_, session):
        states = await call(session, "POST", "api/stop-all")
        assert {d["name"]: d["state"] for d in states["daemons"]} == {
            "chatter": "stopped",
            "vault": "disabled",
            "worker": "stopped",
        }
        for action in ("start-all", "restart-all"):
            states = await call(session, "POST", f"api/{action}")
            assert {d["name"]: d["state"] for d in states["daemons"]} == {
                "chatter": "running",
                "vault": "disabled",
                "worker": "running",
            }, action
        assert Worker.runs == 3, "auto-start, start-all, restart-all"


async def test_a_disabled_daemon_cannot_be_started(tmp_path):
    async with client(tmp_path, config_text("  vault:\n    enabled: false\n")) as (_, session):
        for action in ("start", "restart"):
            assert "disabled" in await fails(session, "POST", f"api/daemons/vault/{action}", 409)
        vault = await call(session, "GET", "api/daemons/vault")
        assert (vault["state"], vault["enabled"]) == ("disabled", False)


# -- a daemon's settings -----------------------------------------------------------------


async def test_daemon_config_shows_values_defaults_and_a_documented_schema(tmp_path):
    async with client(tmp_path) as (warden, session):
        view = await call(session, "GET", "api/daemons/worker/config")
        assert view["values"]["interval"] == 3600 and view["defaults"]["interval"] == 30
        assert view["values"]["restart"] == view["defaults"]["restart"] == "on-failure"
        assert view["etag"] == warden.config.etag
        properties = view["schema"]["properties"]
        assert set(properties) == set(view["values"])
        assert properties["interval"]["description"] == "Seconds between rounds."
        assert properties["interval"]["minimum"] == 0.001
        assert (properties["watchdog_timeout"]["minimum"], properties["watchdog_timeout"]["maximum"]) == (1, 86_400)
        assert all(field.get("description") for field in properties.values()), "every setting is explained"


async def test_a_valid_change_is_written_keeping_comments_and_restarts_the_daemon(tmp_path):
    async with client(tmp_path) as (warden, session):
        etag = (await call(session, "GET", "api/daemons/worker/config"))["etag"]
        view = await call(
            session, "PUT", "api/daemons/worker/config", json={"interval": 7200}, headers={"If-Match": etag}
        )
        assert view["values"]["interval"] == 7200 and view["etag"] != etag
        text = on_disk(warden).decode()
        assert "    interval: 7200  # an hour between rounds\n" in text
        assert "  # the worker's own section\n" in text
        assert f"api_key: {SECRET}" in text, "the rest of the file is as it was"
        assert Worker.runs == 2, "the worker's own code reads interval: it was restarted"
        assert daemon_of(warden, "worker").config.interval == 7200
        # null puts a setting back to its default (its line leaves the file).
        view = await call(session, "PUT", "api/daemons/worker/config", json={"interval": None})
        assert view["values"]["interval"] == 30
        assert "    interval:" not in on_disk(warden).decode()


@pytest.mark.parametrize(
    ("change", "field", "in_file"),
    [
        ({"interval": 0}, "interval", True),  # out of bounds
        ({"interval": "soon"}, "interval", True),  # wrong type
        ({"watchdog_timeout": 0.5}, "watchdog_timeout", False),  # out of bounds, not in the file yet
        ({"colour": "blue"}, "colour", False),  # no such setting
    ],
)
async def test_an_invalid_change_is_refused_with_issues_and_changes_nothing(tmp_path, change, field, in_file):
    async with client(tmp_path) as (warden, session):
        before = on_disk(warden)
        body = await call(session, "PUT", "api/daemons/worker/config", 422, json=change)
        [issue] = body["issues"]
        assert issue["path"] == field and issue["message"]
        assert issue["line"] == (line_of(before.decode(), f"    {field}:") if in_file else None)
        assert on_disk(warden) == before, "nothing was written"
        assert Worker.runs == 1, "nor was the daemon restarted"


async def test_a_daemon_config_edit_refuses_bad_requests(tmp_path):
    async with client(tmp_path) as (warden, session):
        before = on_disk(warden)
        stale = {"If-Match": "0123456789abcdef"}
        assert "changed" in await fails(
            session, "PUT", "api/daemons/worker/config", 409, json={"interval": 60}, headers=stale
        )
        await fails(session, "PUT", "api/daemons/worker/config", 400, data="{interval: 60")
        await fails(session, "PUT", "api/daemons/worker/config", 400, json=[60])
        await fails(session, "PUT", "api/daemons/worker/config", 413, json={"interval": 60, "pad": "x" * MAX_BODY})
        await fails(session, "PUT", "api/daemons/ghost/config", 404, json={"interval": 60})
        assert on_disk(warden) == before


# -- the raw file ------------------------------------------------------------------------


async def raw(session: aiohttp.ClientSession) -> tuple[str, str]:
    """GET api/config: the (masked) text and its ETag."""
    async with session.get("api/config") as response:
        assert response.status == 200 and response.content_type == "text/yaml"
        return await response.text(), response.headers["ETag"]


async def put_raw(session: aiohttp.ClientSession, text: str, etag: str | None, status: int = 200) -> Any:
    headers = {"Content-Type": "text/yaml", **({"If-Match": etag} if etag else {})}
    return await call(session, "PUT", "api/config", status, data=text.encode(), headers=headers)


async def test_raw_config_edits_need_the_current_etag(tmp_path):
    async with client(tmp_path) as (warden, session):
        text, etag = await raw(session)
        first = text.replace("interval: 3600", "interval: 1800")
        await put_raw(session, first, None, 428)
        reply = await put_raw(session, first, etag)
        assert (await raw(session))[1] == f'"{reply["etag"]}"' != etag
        assert "interval: 1800  # an hour between rounds" in on_disk(warden).decode()
        assert daemon_of(warden, "worker").config.interval == 1800
        # A second editor who loaded the old version cannot overwrite the first one's change.
        after_first = on_disk(warden)
        await put_raw(session, text.replace("retries: 3", "retries: 9"), etag, 409)
        assert on_disk(warden) == after_first


async def test_invalid_raw_config_is_refused_with_the_line(tmp_path):
    async with client(tmp_path) as (warden, session):
        text, etag = await raw(session)
        before = on_disk(warden)
        broken = text.replace("interval: 3600", "interval: 3600: 1800")
        [issue] = (await put_raw(session, broken, etag, 422))["issues"]
        assert issue["line"] == line_of(broken, "    interval:")
        invalid = text.replace("interval: 3600", "interval: -1")
        [issue] = (await put_raw(session, invalid, etag, 422))["issues"]
        assert (issue["path"], issue["line"]) == ("daemons.worker.interval", line_of(invalid, "    interval:"))
        await put_raw(session, "x" * (MAX_BODY + 1), etag, 413)
        assert on_disk(warden) == before and (await raw(session))[1] == etag


async def test_secrets_are_never_shown_and_survive_an_edit_of_the_masked_text(tmp_path):
    async with client(tmp_path) as (warden, session):
        text, etag = await raw(session)
        vault = await call(session, "GET", "api/daemons/vault/config")
        for shown in (text, json.dumps(vault), json.dumps(await call(session, "GET", "api/daemons/worker/config"))):
            assert SECRET not in shown and PASSWORD not in shown and TOKEN not in shown
        assert f"api_key: '{MASK}'" in text and vault["values"]["password"] == MASK

        await put_raw(session, text.replace("retries: 3", "retries: 4"), etag)
        saved_text = on_disk(warden).decode()
        assert "retries: 4" in saved_text
        for secret in (SECRET, PASSWORD, TOKEN):
            assert secret in saved_text, f"{secret} was kept"
        # The form sends the mask back for a secret it did not change.
        await call(session, "PUT", "api/daemons/vault/config", json={"password": MASK, "retries": 5})
        assert PASSWORD in on_disk(warden).decode()
        assert daemon_of(warden, "vault").config.password.get_secret_value() == PASSWORD
        await call(session, "PUT", "api/daemons/vault/config", json={"password": "a-new-one"})
        assert "a-new-one" in on_disk(warden).decode()
        assert daemon_of(warden, "vault").config.password.get_secret_value() == "a-new-one"


# -- logs and events -----------------------------------------------------------------------


async def log_messages(session: aiohttp.ClientSession, query: str = "") -> list[str]:
    return [line["message"] for line in (await call(session, "GET", f"api/daemons/chatter/logs{query}"))["lines"]]


async def test_logs_filter_by_level_text_and_time_and_page_back(tmp_path):
    async with client(tmp_path) as (warden, session):
        await saved(warden)
        lines = (await call(session, "GET", "api/daemons/chatter/logs"))["lines"]
        assert [line["message"] for line in lines] == [
            "upload failed",
            "disk almost full",
            "5000 items scanned",
            "progress 50% done",
            "cache warmed",
        ], "newest first"
        assert lines[0]["level"] == "error" and lines[0]["fields"] == {"status": 503}
        assert lines[-1]["level"] == "debug" and lines[-1]["fields"] == {"entries": 3}
        assert await log_messages(session, "?level=warning") == ["upload failed", "disk almost full"]
        assert await log_messages(session, "?q=50%25") == ["progress 50% done"], "% is a character, not a wildcard"
        assert await log_messages(session, "?q=DISK") == ["disk almost full"], "search ignores case"

        # limit and before page back through the log without overlap.
        first = (await call(session, "GET", "api/daemons/chatter/logs?limit=2"))["lines"]
        second = (await call(session, "GET", f"api/daemons/chatter/logs?limit=2&before={first[-1]['id']}"))["lines"]
        assert [line["id"] for line in first + second] == [line["id"] for line in lines[:4]]

        chatter = daemon_of(warden, "chatter")
        since = warden.clock.time()
        chatter.log.info("a later line")
        await chatter.update_status("said it")  # a numbered change after the line, for `saved`
        await saved(warden)
        assert await log_messages(session, f"?since={since!r}") == ["a later line"]

        for bad in ("level=loud", "limit=many", "since=yesterday", "before=x"):
            await fails(session, "GET", f"api/daemons/chatter/logs?{bad}", 400)
        await fails(session, "GET", "api/daemons/ghost/logs", 404)


async def test_logs_download_as_a_text_file(tmp_path):
    async with client(tmp_path) as (warden, session):
        await saved(warden)
        async with session.get("api/daemons/chatter/logs/download") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            assert response.headers["Content-Disposition"] == 'attachment; filename="chatter.log"'
            text = await response.text()
        rows = text.splitlines()
        assert len(rows) == 5
        assert "DEBUG" in rows[0] and rows[0].endswith('cache warmed {"entries": 3}'), "oldest first, fields kept"
        assert "ERROR" in rows[-1] and rows[-1].endswith('upload failed {"status": 503}')


def transitions(events: list[dict[str, Any]], daemon: str) -> list[tuple[str, str, str]]:
    """(from, to, actor) of a daemon's transitions, oldest first."""
    chosen = [e for e in reversed(events) if e["daemon"] == daemon and e["kind"] == "transition"]
    return [(e["from_state"], e["to_state"], e["actor"]) for e in chosen]


async def test_events_record_who_changed_what(tmp_path):
    async with client(tmp_path) as (warden, session):
        await call(session, "POST", "api/daemons/worker/stop")
        await call(session, "POST", "api/daemons/worker/start")
        await saved(warden)
        events = (await call(session, "GET", "api/events"))["events"]
        assert all(set(e) == EVENT_FIELDS and e["boot_id"] == warden.boot_id for e in events)
        assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True), "newest first"
        user = Actor.USER.value
        assert transitions(events, "worker")[-4:] == [
            ("running", "stopping", user),
            ("stopping", "stopped", user),
            ("stopped", "starting", user),
            ("starting", "running", user),
        ]
        assert transitions(events, "worker")[0] == ("stopped", "starting", "auto-start")
        assert transitions(events, "chatter"), "unfiltered: every daemon's events"

        only = (await call(session, "GET", "api/events?daemon=worker"))["events"]
        assert only == [e for e in events if e["daemon"] == "worker"]
        page = (await call(session, "GET", f"api/events?daemon=worker&limit=2&before={only[1]['id']}"))["events"]
        assert page == only[2:4]
        await fails(session, "GET", "api/events?daemon=ghost", 404)
        await fails(session, "GET", "api/events?limit=lots", 400)


# -- health and metrics --------------------------------------------------------------------


async def test_health_shows_each_daemon(tmp_path):
    yaml = config_text("  worker:\n    interval: 3600\n  crasher:\n    restart: never\n")
    async with client(tmp_path, yaml, (Worker, Crasher)) as (_, session):
        health = await call(session, "GET", "api/health")
        assert health["ok"] is True and health["store"]["ok"] is True and health["config"]["ok"] is True
        assert health["daemons"] == {
            "worker": {"state": "running", "healthy": True},
            "crasher": {"state": "fatal", "healthy": False},
        }


async def test_metrics_in_prometheus_text_format(tmp_path):
    async with client(tmp_path) as (warden, session):
        async with session.get("metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            text = await response.text()
        lines = text.splitlines()
        assert 'warden_daemon_state{daemon="worker",state="running"} 1' in lines
        assert 'warden_daemon_state{daemon="worker",state="stopped"} 0' in lines
        assert "warden_websocket_clients 0" in lines
        assert "# TYPE warden_status_updates_total counter" in lines
        assert any(line.startswith("warden_store_write_seconds ") for line in lines)
        updates = next(line for line in lines if line.startswith("warden_status_updates_total "))
        assert float(updates.split()[1]) == warden.hub.published > 0


# -- behind a reverse proxy ------------------------------------------------------------------


async def test_base_path_serves_everything_under_the_prefix(tmp_path):
    yaml = config_text("  worker:\n    interval: 3600\n", server="  base_path: /warden\n")
    async with client(tmp_path, yaml, (Worker,)) as (warden, session):
        assert warden.url.endswith("/warden/")
        assert (await call(session, "GET", "api/daemons/worker"))["state"] == "running"  # /warden/api/...
        root = str(URL(warden.url).origin())
        async with aiohttp.ClientSession(root, headers=session.headers) as bare:
            async with bare.get("/warden/") as page:
                assert page.status == 200 and "<html" in (await page.text()).lower()
            async with bare.get("/warden", allow_redirects=False) as redirect:
                assert (redirect.status, redirect.headers["Location"]) == (302, "/warden/")
            for outside in ("/", "/api/daemons", "/metrics"):
                async with bare.get(outside) as response:
                    assert response.status == 404, outside
            async with bare.get("/warden/login", params={"token": TOKEN}, allow_redirects=False) as login:
                assert login.headers["Location"] == "/warden/"
                assert login.cookies["warden_session"]["path"] == "/warden"


# -- jobs ------------------------------------------------------------------------------------


async def test_jobs_list_get_and_cancel(tmp_path):
    async with running_warden(tmp_path, [Worker]) as warden, api_session(warden) as session:
        gate = asyncio.Event()

        async def waits(context):
            context.progress(10, "waiting for the gate")
            await gate.wait()
            return {"imported": 3}

        async def quick(context):
            return {"imported": 3}

        done = await warden.jobs.launch("import", "finished", quick, daemon="worker")
        await warden.jobs.wait(done)
        active = await warden.jobs.launch("import", "active", waits)
        await saved(warden)
        listed = await call(session, "GET", "api/jobs?type=import")
        assert {j["key"]: j["status"] for j in listed["jobs"]} == {"finished": "completed", "active": "running"}
        assert [j["key"] for j in (await call(session, "GET", "api/jobs?daemon=worker"))["jobs"]] == ["finished"]
        assert [j["key"] for j in (await call(session, "GET", "api/jobs?status=running"))["jobs"]] == ["active"]
        await call(session, "GET", "api/jobs?status=bogus", status=400)
        assert (await call(session, "GET", f"api/jobs/{done.id}"))["result"] == {"imported": 3}
        await call(session, "GET", "api/jobs/nope", status=404)
        answer = await call(session, "POST", f"api/jobs/{active.id}/cancel")
        assert answer["cancelled"] is True
        await warden.jobs.wait(active)
        answer = await call(session, "POST", f"api/jobs/{done.id}/cancel")
        assert answer == {"cancelled": False, "reason": "the job already ended (completed)", "job": answer["job"]}
        await call(session, "POST", "api/jobs/nope/cancel", status=404)
        assert (await call(session, "GET", f"api/jobs/{active.id}"))["status"] == "cancelled"
