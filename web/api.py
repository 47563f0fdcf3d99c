"""The REST API: daemons, commands, config, logs, events, health. See docs/protocol.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from supervisor.config import KERNEL_FIELDS
from supervisor.configfile import MASK, ConfigConflict, ConfigError, ConfigIssue
from supervisor.jobs import ACTIVE, JobManager, JobStatus
from supervisor.models import Actor, DaemonState
from supervisor.runner import DaemonDisabled, DaemonRunner
from supervisor.store import Store
from supervisor.supervisor import Supervisor, UnknownDaemon
from web import payload
from web.keys import WARDEN

T = TypeVar("T")
LEVELS = ("debug", "info", "warning", "error")
MAX_PAGE = 1000
SQLITE_INT = 2**63 - 1  # the largest integer SQLite stores; a bigger one cannot even be compared


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=payload.encode)


def error(status: type[web.HTTPError], message: str, **extra: Any) -> web.HTTPError:
    return status(text=json.dumps({"error": message, **extra}), content_type="application/json")


def _started(part: T | None) -> T:
    """A part of Warden made at start (supervisor, store, jobs); 503 while it is still starting."""
    if part is None:
        raise error(web.HTTPServiceUnavailable, "Warden is starting")
    return part


def _supervisor(request: web.Request) -> Supervisor:
    return _started(request.app[WARDEN].supervisor)


def _store(request: web.Request) -> Store:
    return _started(request.app[WARDEN].store)


def _runner(request: web.Request) -> DaemonRunner:
    try:
        return _supervisor(request).runner(request.match_info["name"])
    except UnknownDaemon as unknown:
        raise error(web.HTTPNotFound, str(unknown)) from None


def _daemon(runner: DaemonRunner, supervisor: Supervisor) -> dict[str, Any]:
    return payload.daemon(runner.status, supervisor)


async def list_daemons(request: web.Request) -> web.Response:
    supervisor = _supervisor(request)
    hub = request.app[WARDEN].hub
    daemons = [_daemon(runner, supervisor) for runner in supervisor.runners.values()]
    return _json({"daemons": daemons, "system": hub.system, "seq": hub.seq})


async def get_daemon(request: web.Request) -> web.Response:
    return _json(_daemon(_runner(request), _supervisor(request)))


async def command(request: web.Request) -> web.Response:
    runner, supervisor = _runner(request), _supervisor(request)
    action = request.match_info["action"]
    if action == "wake":
        return _json({"woken": runner.wake(), "daemon": _daemon(runner, supervisor)})
    try:
        if action == "start":
            await runner.start(Actor.USER)
        elif action == "stop":
            await runner.stop(Actor.USER)
        else:
            await runner.restart(Actor.USER)
    except DaemonDisabled as disabled:
        raise error(web.HTTPConflict, str(disabled)) from None
    return _json(_daemon(runner, supervisor))


async def command_all(request: web.Request) -> web.Response:
    supervisor = _supervisor(request)
    action = request.match_info["action"]
    run = {"start": supervisor.start_all, "stop": supervisor.stop_all, "restart": supervisor.restart_all}[action]
    await run(Actor.USER)
    return _json({"daemons": [_daemon(r, supervisor) for r in supervisor.runners.values()]})


# -- configuration -------------------------------------------------------------------


def _config_view(request: web.Request, runner: DaemonRunner) -> dict[str, Any]:
    config = request.app[WARDEN].config
    model = type(runner.config)
    schema = model.model_json_schema()
    # The daemon's own settings first; the ones every daemon has (restart policy, timeouts) after.
    properties = schema["properties"]
    schema["properties"] = dict(sorted(properties.items(), key=lambda item: item[0] in KERNEL_FIELDS))
    return {
        "values": runner.config.model_dump(mode="json"),
        "defaults": model().model_dump(mode="json"),
        "schema": schema,
        "etag": config.etag,
    }


async def get_daemon_config(request: web.Request) -> web.Response:
    return _json(_config_view(request, _runner(request)))


async def put_daemon_config(request: web.Request) -> web.Response:
    runner = _runner(request)
    config = request.app[WARDEN].config
    changes = await _json_object(request)
    secret = {name for name, value in runner.config.model_dump(mode="json").items() if value == MASK}
    changes = {key: value for key, value in changes.items() if not (key in secret and value == MASK)}
    _check_etag(request, config.etag)
    prefix = f"daemons.{runner.name}."
    try:
        await config.update_daemon(runner.name, changes)
    except ConfigError as invalid:
        issues = [_issue(issue, prefix) for issue in invalid.issues]
        raise error(web.HTTPUnprocessableEntity, "invalid configuration; nothing was changed", issues=issues) from None
    except ConfigConflict as conflict:
        raise error(web.HTTPConflict, str(conflict)) from None
    return _json(_config_view(request, runner))


async def get_config(request: web.Request) -> web.Response:
    config = request.app[WARDEN].config
    return web.Response(text=config.masked_text(), content_type="text/yaml", headers={"ETag": f'"{config.etag}"'})


async def put_config(request: web.Request) -> web.Response:
    config = request.app[WARDEN].config
    if "If-Match" not in request.headers:
        raise error(web.HTTPPreconditionRequired, "send If-Match with the ETag of the version you edited")
    etag = request.headers["If-Match"].strip('"')
    try:
        text = await request.text()
    except (UnicodeDecodeError, LookupError):  # not UTF-8, or a charset nobody knows
        raise error(web.HTTPBadRequest, "the body must be YAML text in UTF-8") from None
    try:
        await config.replace_masked(text, etag)
    except ConfigError as invalid:
        issues = [_issue(issue, "") for issue in invalid.issues]
        raise error(web.HTTPUnprocessableEntity, "invalid configuration; nothing was changed", issues=issues) from None
    except ConfigConflict as conflict:
        raise error(web.HTTPConflict, str(conflict)) from None
    return _json({"etag": config.etag})


def _issue(issue: ConfigIssue, prefix: str) -> dict[str, Any]:
    return {"path": issue.path.removeprefix(prefix), "message": issue.message, "line": issue.line}


def _check_etag(request: web.Request, current: str) -> None:
    expected = request.headers.get("If-Match")
    if expected is not None and expected.strip('"') != current:
        raise error(web.HTTPConflict, "the configuration changed since you loaded it; reload and edit again")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    # RecursionError: arrays or objects nested thousands deep; LookupError: a charset nobody knows.
    except (ValueError, RecursionError, LookupError):
        raise error(web.HTTPBadRequest, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "the body must be a JSON object")
    return body


# -- logs, events, health --------------------------------------------------------------


def _number(request: web.Request, name: str, kind: type[int] | type[float], default: Any = None) -> Any:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise error(web.HTTPBadRequest, f"{name} must be a number") from None
    if kind is int and not -SQLITE_INT - 1 <= number <= SQLITE_INT:
        raise error(web.HTTPBadRequest, f"{name} is out of range")
    return number


def _limit(request: web.Request, default: int) -> int:
    limit: int = _number(request, "limit", int, default)
    return max(1, min(limit, MAX_PAGE))  # SQLite reads LIMIT -1 as no limit


async def _log_lines(request: web.Request, limit: int) -> list[Any]:
    runner = _runner(request)
    level = request.query.get("level", "debug")
    if level not in LEVELS:
        raise error(web.HTTPBadRequest, f"level must be one of {', '.join(LEVELS)}")
    return await _store(request).logs(
        runner.name,
        levels=LEVELS[LEVELS.index(level) :],
        since=_number(request, "since", float),
        text=request.query.get("q") or None,
        limit=limit,
        before=_number(request, "before", int),
    )


async def get_logs(request: web.Request) -> web.Response:
    limit = _limit(request, 200)
    lines = await _log_lines(request, limit)
    return _json({"lines": [payload.log_line(s.line, id=s.id) for s in lines]})


async def download_logs(request: web.Request) -> web.Response:
    lines = await _log_lines(request, 100_000)
    text = "".join(
        f"{datetime.fromtimestamp(s.line.at, UTC).isoformat()} {s.line.level.upper():7} {s.line.message}"
        f"{' ' + json.dumps(s.line.fields) if s.line.fields else ''}\n"
        for s in reversed(lines)
    )
    name = request.match_info["name"]
    return web.Response(
        text=text, content_type="text/plain", headers={"Content-Disposition": f'attachment; filename="{name}.log"'}
    )


async def get_events(request: web.Request) -> web.Response:
    daemon = request.query.get("daemon") or None
    if daemon is not None and daemon not in _supervisor(request).runners:
        raise error(web.HTTPNotFound, f"no daemon named {daemon!r}")
    stored = await _store(request).events(daemon, limit=_limit(request, 100), before=_number(request, "before", int))
    events = [payload.event(s.event, id=s.id, boot_id=s.boot_id) for s in stored]
    return _json({"events": events})


async def health(request: web.Request) -> web.Response:
    warden = request.app[WARDEN]
    supervisor = _supervisor(request)
    store = warden.hub.system.get("store", {"ok": False, "error": "not started"})
    config_error = warden.config.last_error
    now = warden.clock.monotonic()
    daemons = {name: {"state": r.status.state, "healthy": _healthy(r, now)} for name, r in supervisor.runners.items()}
    ok = warden.supervising and bool(store.get("ok"))
    body = {
        "ok": ok,
        # Until the daemons set to auto-start are started (demo mode: after its Stash and qBittorrent are up).
        "starting": not warden.ready.is_set(),
        "store": store,
        "config": {"ok": config_error is None, "error": str(config_error) if config_error else None},
        "daemons": daemons,
    }
    return _json(body, status=200 if ok else 503)


def _healthy(runner: DaemonRunner, now: float) -> bool:
    """Not crashed, and not silent past its watchdog_timeout (the watchdog's own rule)."""
    return runner.status.state not in (DaemonState.BACKOFF, DaemonState.FATAL) and runner.overdue(now) is None


# -- jobs ------------------------------------------------------------------------------


def _jobs(request: web.Request) -> JobManager:
    return _started(request.app[WARDEN].jobs)


async def list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in set(JobStatus):
        raise error(web.HTTPBadRequest, f"status must be one of {', '.join(JobStatus)}")
    rows = await _store(request).jobs(
        status=status,
        job_type=request.query.get("type") or None,
        daemon=request.query.get("daemon") or None,
        limit=_limit(request, 100),
        before=_number(request, "before", float),
    )
    # Jobs known in memory are fresher than the database (which is written in batches).
    jobs = _jobs(request)
    return _json({"jobs": [_fresh(jobs, row) for row in rows]})


def _fresh(jobs: JobManager, row: dict[str, Any]) -> dict[str, Any]:
    job = jobs.get(row["id"])
    return job.to_dict() if job is not None else row


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    job = _jobs(request).get(job_id)
    if job is not None:
        return _json(job.to_dict())
    row = await _store(request).job(job_id)
    if row is None:
        raise error(web.HTTPNotFound, f"no job {job_id!r}")
    return _json(row)


async def cancel_job(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    job = await _jobs(request).cancel(job_id)
    if job is None:
        row = await _store(request).job(job_id)
        if row is None:
            raise error(web.HTTPNotFound, f"no job {job_id!r}")
        return _json({"cancelled": False, "reason": f"the job already ended ({row['status']})", "job": row})
    if job.status not in ACTIVE:
        return _json({"cancelled": False, "reason": f"the job already ended ({job.status})", "job": job.to_dict()})
    return _json({"cancelled": True, "job": job.to_dict()})
