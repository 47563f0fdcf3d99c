"""Every HTTP endpoint fuzzed (hypothesis) against a whole running Warden through a real client.

Routes are read from the app's own router, so a new endpoint is fuzzed too. Requests mix random
methods, path parameters (known names, traversal, NUL, unicode, huge), query strings, JSON and
non-JSON bodies, huge bodies and wrong content types, with the token, without it, or with it
in the wrong place. Whatever is sent: never a 500, nothing but a 401 without the token, and a
rejected request (4xx) changes nothing: the daemons' states, the config file's bytes, the
hub's sequence and the number of events are the same before and after.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from supervisor.app import Warden
from supervisor.models import DaemonState
from tests.daemons_for_tests import Worker
from tests.tally import TallyRecorder
from tests.webharness import TOKEN, api_session, bearer, config_text, running_warden, saved, until
from web.api import SQLITE_INT
from web.app import MAX_BODY, create_app
from web.auth import COOKIE
from web.keys import Access


class Locked(Worker):
    """A disabled daemon: starting it is refused (409)."""

    name = "locked"
    title = "Locked"


YAML = config_text("  worker:\n    interval: 3600\n  locked:\n    enabled: false\n")


@dataclass(frozen=True)
class Fingerprint:
    """What a rejected request must leave as it was."""

    config: bytes
    states: dict[str, dict[str, Any]]
    seq: int  # the hub numbers every daemon, job, event and system change
    events: int  # events in the database


async def fingerprint(warden: Warden) -> Fingerprint:
    assert warden.supervisor is not None and warden.store is not None
    await saved(warden)
    return Fingerprint(
        warden.config.path.read_bytes(),
        {name: runner.status.to_dict() for name, runner in warden.supervisor.runners.items()},
        warden.hub.seq,
        len(await warden.store.events(limit=1_000_000)),
    )


def settled(warden: Warden) -> bool:
    """Every daemon at rest: stopped, or running and asleep (after an accepted command has played out)."""
    assert warden.supervisor is not None
    return all(
        r.status.state in (DaemonState.STOPPED, DaemonState.DISABLED)
        or (r.status.state is DaemonState.RUNNING and r.status.sleeping_until is not None)
        for r in warden.supervisor.runners.values()
    )


def route_templates(warden: Warden) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, e.g. ("POST", "/api/daemons/{name}/{action}")."""
    app = create_app(warden, Access(TOKEN, "session", ""))
    routes = []
    for resource in app.router.resources():
        info = resource.get_info()
        template = info.get("formatter") or info.get("path") or info.get("prefix", "") + "/{file}"
        routes += [(route.method, template) for route in resource]
    return routes


HOSTILE_SEGMENTS = [
    "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2Fetc%2Fpasswd", "%00", "\u202e", "<script>", "9" * 40, "²",
    "-1", "x" * 3000, "%ff", "'\"", "a;b", "worker%00", " ", "%20",
]  # fmt: skip
NAMES = ["worker", "locked", "ghost"]
ACTIONS = ["start", "stop", "restart", "wake", "dance"]
segments = st.one_of(
    st.sampled_from(["worker"] * 10 + NAMES + ACTIONS * 2 + HOSTILE_SEGMENTS),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
)
HUGE = "9" * 30  # beyond SQLite's integers
QUERY_KEYS = ["limit", "before", "since", "level", "q", "status", "type", "daemon", "token", "resume", "x"]
query_values = st.one_of(
    st.sampled_from(["", "-1", "0", "nan", "inf", "1e999", HUGE, "-" + HUGE, "x", "debug", "worker", "\x00"]),
    st.text(max_size=30),
)
queries = st.fixed_dictionaries({}, optional=dict.fromkeys(QUERY_KEYS, query_values))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_changes = st.dictionaries(
    st.sampled_from(["interval", "enabled", "restart", "decision", "scene_ids", "token", "nonsense"]),
    st.sampled_from([-1, "x", [], {}, "**********", "nope", 10**30]),
    min_size=1,
    max_size=3,
)
Body = tuple[bytes | None, str | None]  # (data, content type)
DEEP: Body = (b"[" * 100_000, "application/json")  # nested deeper than any parser recurses
NOT_UTF8: Body = (b"\xff\xfe\x00", "text/yaml")
bodies: st.SearchStrategy[Body] = st.one_of(
    st.just((None, None)),
    json_values.map(lambda value: (json.dumps(value).encode(), "application/json")),
    field_changes.map(lambda value: (json.dumps(value).encode(), "application/json")),
    st.binary(max_size=200).map(lambda data: (data, "application/octet-stream")),
    st.sampled_from([
        DEEP,
        (b'{"a": ' * 50_000, "application/json"),
        (b"x" * (MAX_BODY + 1), "application/json"),  # over the body limit
        NOT_UTF8,
        (b"server: {}", "text/yaml; charset=no-such-charset"),
        (b'{"token": 1}', "application/json; charset=no-such-charset"),
        (b"a=1&b=2", "application/x-www-form-urlencoded"),
        (b"--x\r\n", "multipart/form-data"),  # no boundary
        (b'{"token": "' + TOKEN.encode() + b'"}', "application/json"),  # the token in the body
        (b"NaN", "application/json"),
    ]),
)  # fmt: skip
#: How a request authenticates: the right bearer token, or something that must not let it in.
CREDENTIALS: dict[str, Callable[[], tuple[dict[str, str], dict[str, str]]]] = {
    "bearer": lambda: (bearer(), {}),
    "none": lambda: ({}, {}),
    "wrong bearer": lambda: (bearer("wrong-token-0123456789"), {}),
    "token as cookie": lambda: ({"Cookie": f"{COOKIE}={TOKEN}"}, {}),  # the token is not the session value
    "other cookie": lambda: ({"Cookie": f"token={TOKEN}"}, {}),
    "basic": lambda: ({"Authorization": f"Basic {TOKEN}"}, {}),
    "query": lambda: ({}, {"token": TOKEN}),
}
PUBLIC = re.compile(r"^/(login|api/login|api/logout|static/.*)?$")


@dataclass
class Outcome:
    requests: int = 0
    rejected: int = 0
    server_errors: int = 0
    changed_by_rejected: int = 0
    let_in_without_token: int = 0


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_every_endpoint_survives_fuzzing_and_a_rejected_request_changes_nothing(
    tmp_path, tally: TallyRecorder, soak: bool
) -> None:
    examples = 400 if soak else 25
    async with (
        running_warden(tmp_path, [Worker, Locked], yaml=YAML) as warden,
        # No cookie jar: a session cookie from /login must not carry over to the requests without the token.
        aiohttp.ClientSession(base_url=warden.url or "", cookie_jar=aiohttp.DummyCookieJar()) as session,
    ):
        loop = asyncio.get_running_loop()
        routes = route_templates(warden)
        assert {"/api/daemons/{name}/{action}", "/api/config", "/ws", "/static/{file}"} <= {t for _, t in routes}
        outcome = Outcome()
        problems: list[str] = []
        last = [await fingerprint(warden)]  # after the previous request: the state the next one starts from

        async def one(method: str, template: str, fill: list[str], query: dict[str, str], body: Body, who: str) -> None:
            parts = iter(fill)
            path = re.sub(r"\{[^}]+\}", lambda _: next(parts), template)
            headers, extra_query = CREDENTIALS[who]()
            data, content_type = body
            if content_type:
                headers["Content-Type"] = content_type
            if template == "/api/config":
                headers["If-Match"] = '"not-the-etag"'  # a whole new file must never land by chance
            before = last[0]
            async with session.request(
                method, path.lstrip("/"), params={**query, **extra_query}, data=data, headers=headers
            ) as response:
                await response.read()
            outcome.requests += 1
            # The path as sent: the client resolves dot segments first ("/jobs/.." is the public page "/").
            sent = (response.history or (response,))[0].url.path
            seen = f"{method} {path[:80]} ({sent[:80]}) as {who} -> {response.status}"
            if response.status >= 500:
                outcome.server_errors += 1
                problems.append(seen)
            if who != "bearer" and not PUBLIC.match(sent) and response.status < 400:
                outcome.let_in_without_token += 1
                problems.append(seen)
            if not 400 <= response.status < 500:
                await until(warden, lambda: settled(warden))
            last[0] = await fingerprint(warden)
            if 400 <= response.status < 500:
                outcome.rejected += 1
                if last[0] != before:
                    outcome.changed_by_rejected += 1
                    problems.append(f"state changed: {seen}")

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        )
        @given(
            fill=st.lists(segments, min_size=2, max_size=2),
            method=st.sampled_from([None] * 4 + ["GET", "POST", "PUT", "DELETE", "PATCH"]),
            query=queries,
            body=bodies,
            who=st.sampled_from(["bearer"] * len(CREDENTIALS) + list(CREDENTIALS)),
        )
        # Always tried, besides what hypothesis draws: the inputs that once made a 500.
        @example(fill=["worker", "start"], method=None, query=dict.fromkeys(QUERY_KEYS, HUGE), body=DEEP, who="bearer")
        # "/jobs/.." is sent as "/" (the public page) by the client: not an entry without the token.
        @example(fill=["..", ".."], method="HEAD", query={}, body=(None, None), who="other cookie")
        @example(
            fill=["x" * 3000, "²"],
            method=None,
            query=dict.fromkeys(QUERY_KEYS, "-" + HUGE),
            body=NOT_UTF8,
            who="bearer",
        )
        def fuzz(fill: list[str], method: str | None, query: dict[str, str], body: Body, who: str) -> None:
            # Each drawn request goes to every route, so every endpoint meets every kind of input.
            for route_method, template in routes:
                request = one(method or route_method, template, fill, query, body, who)
                asyncio.run_coroutine_threadsafe(request, loop).result(60)

        await asyncio.to_thread(fuzz)
        lost = outcome.server_errors + outcome.changed_by_rejected + outcome.let_in_without_token
        tally.record(
            "api",
            f"fuzzed requests to all {len(routes)} routes (hostile paths, queries, bodies, credentials)",
            tries=outcome.requests,
            outcome=f"no 500; {outcome.rejected} rejected with 4xx, none changed state; no entry without the token",
            lost=lost,
        )
        assert problems == []
        assert lost == 0


#: Integers at and just beyond SQLite's range, as a query value → the status they must get.
BOUNDS = {
    str(-SQLITE_INT - 1): 200,
    str(SQLITE_INT): 200,
    str(-SQLITE_INT - 2): 400,
    str(SQLITE_INT + 1): 400,
    "9" * 5000: 400,  # beyond the digits int() reads at all
}
#: Plan ids that are no plan: beyond SQLite, beyond int(), digits that are not ASCII.
NO_PLAN = [str(SQLITE_INT), str(SQLITE_INT + 1), "9" * 4301, "9" * 7000, "²", "\u0663", "\uff11"]


async def test_numbers_at_the_edges_of_sqlite_range_are_answered_not_failed(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    wrong: list[str] = []
    async with running_warden(tmp_path, [Worker, Locked], yaml=YAML) as warden, api_session(warden) as session:
        before = await fingerprint(warden)
        for path in ("api/events", "api/daemons/worker/logs"):
            for value, status in BOUNDS.items():
                async with session.get(path, params={"before": value}) as response:
                    if response.status != status:
                        wrong.append(f"{path}?before={value[:30]} -> {response.status}")
        for raw in NO_PLAN:
            for method, action in (("GET", ""), ("POST", "/review"), ("POST", "/apply")):
                async with session.request(method, f"api/plans/{raw}{action}", json={}) as response:
                    if response.status != 404:
                        wrong.append(f"{method} plans/{raw[:30]}{action} -> {response.status}")
        changed = await fingerprint(warden) != before
    tries = 2 * len(BOUNDS) + 3 * len(NO_PLAN)
    tally.record(
        "api",
        "integers at SQLite's bounds and beyond in queries; plan ids of thousands of digits or non-ASCII digits",
        tries=tries,
        outcome="the bounds accepted, beyond them 400, no such plan 404; nothing changed",
        lost=len(wrong) + changed,
    )
    assert wrong == []
    assert not changed
