"""StashDouble: a Stash server for tests and the demo, speaking real GraphQL on 127.0.0.1.

    async with StashDouble(api_key="secret") as double:
        double.add_scene("/media/a.mp4", title="A")
        stash = StashInterface({"scheme": "http", "host": "127.0.0.1", "port": double.port, "ApiKey": "secret"})

State (library, jobs) lives on the double and survives `down()`/`up()`. Test controls are plain
attributes: `latency`, `api_key`, `before` (awaited before each root field runs), `fail()`,
`calls` (requests per root field), `documents` (distinct documents received), and the job
holds on `jobs`. `until(condition)` waits for any change of state without sleeping blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeGuard

from aiohttp import web
from graphql import ExecutionResult, execute

from daemons.stash import videos
from daemons.stash.double import synthetic
from daemons.stash.double.changes import Changes
from daemons.stash.double.endpoint import Documents, RequestRefused, introspect, request_errors
from daemons.stash.double.jobs import GRAVEYARD_SIZE, JobManager
from daemons.stash.double.library import Library
from daemons.stash.double.resolvers import FieldResolver
from daemons.stash.double.schema import load_schema
from daemons.stash.double.search import Search
from daemons.stash.double.tasks import Probe
from daemons.stash.double.times import offset_zone

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
BeforeHook = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class _Failure:
    message: str
    remaining: int | None


class StashDouble:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        utc_offset: timedelta | str = "+02:00",
        now: Callable[[], float] = time.time,
        step_delay: float = 0.01,
        library_paths: Iterable[str | Path] = (),
        schema_dir: Path | None = None,
        probe: Probe = videos.probe,
        job_graveyard_size: int = GRAVEYARD_SIZE,
    ) -> None:
        loaded = load_schema(schema_dir)
        self.schema = loaded.schema
        self.schema_source = loaded.source  # "real" or "subset"
        self.schema_location = loaded.location
        self.zone = offset_zone(utc_offset)
        self.api_key = api_key
        self.library_paths = [str(path) for path in library_paths]
        self.probe = probe
        self.version, self.version_hash, self.build_time = "v0.30.1", "b23b0267", "2025-12-18 09:57:49"

        self.changes = Changes()
        self.library = Library(now, on_change=self.changes.notify)
        self.search = Search(self.library, self.zone, now)
        self.jobs = JobManager(now, self.changes, step_delay=step_delay, graveyard_size=job_graveyard_size)
        # Test setup goes straight to the library; these are its own methods.
        self.add_scene = self.library.add_scene
        self.update_scene = self.library.update_scene
        self.delete_scene = self.library.delete_scene
        self.add_tag = self.library.add_tag
        self.add_marker = self.library.add_marker

        self.latency = 0.0
        self.before: BeforeHook | None = None
        self.calls: Counter[str] = Counter()
        self.logged: list[str] = []
        self._failures: dict[str, _Failure] = {}
        self._documents = Documents(self.schema)
        self.documents = self._documents.received
        self._resolver = FieldResolver(self.zone)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._job_runner: asyncio.Task[None] | None = None

    # Lifecycle

    async def start(self, port: int = 0) -> None:
        if self._job_runner is None:
            self._job_runner = asyncio.create_task(self.jobs.run(), name="stash-double-jobs")
        await self._listen(port)

    async def stop(self) -> None:
        await self.down()
        if self._job_runner is not None:
            self._job_runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job_runner
            self._job_runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def down(self) -> None:
        """Stop listening and drop open connections, as a Stash that went away; the state stays."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def up(self) -> None:
        """Listen again on the same port."""
        if self._runner is None:
            await self._listen(self.port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def add_synthetic_scenes(self, count: int, *, seed: int = 0, span: int = 30 * 86400) -> list[str]:
        """`count` plausible scenes with no files on disk (see synthetic.py); returns their ids."""
        return synthetic.add_synthetic_scenes(self.library, count, seed=seed, span=span)

    # Test controls

    def fail(self, root_field: str, message: str, times: int | None = 1) -> None:
        """Answer `root_field` with a GraphQL error `message`, `times` times (None: until cleared)."""
        self._failures[root_field] = _Failure(message, times)

    def clear_failures(self) -> None:
        self._failures.clear()

    def take_failure(self, root_field: str) -> str | None:
        failure = self._failures.get(root_field)
        if failure is None:
            return None
        if failure.remaining is not None:
            failure.remaining -= 1
            if failure.remaining <= 0:
                del self._failures[root_field]
        return failure.message

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `condition()` holds, checking after every change of the double's state."""
        await self.changes.wait_for(condition, timeout)

    def log(self, message: str) -> None:
        """Stash's log, as far as the double writes one (scan errors and warnings)."""
        self.logged.append(message)
        logger.info("stash double: %s", message)

    # Serving

    async def _listen(self, port: int) -> None:
        app = web.Application()
        app.router.add_route("POST", "/graphql", self._serve)
        app.router.add_route("GET", "/graphql", self._serve)
        # Almost no grace for requests in flight: going down is abrupt, like a Stash that stopped.
        # (aiohttp reads a timeout of 0 as "wait forever".)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.01)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        if not self._authorized(request):
            # Stash answers a missing or wrong key with an empty 401.
            return web.Response(status=401, headers={"WWW-Authenticate": "FormBased"})
        try:
            graphql_request = await self._documents.read(request)
        except RequestRefused as refused:
            return refused.response()
        self.calls.update(graphql_request.root_fields)
        try:
            if self.before is not None:
                for root_field in graphql_request.root_fields:
                    await self.before(root_field, graphql_request.variables)
            if graphql_request.introspection_only and not graphql_request.variables:
                return web.json_response(introspect(self.schema, graphql_request.query, graphql_request.operation_name))
            result = execute(
                self.schema,
                graphql_request.document,
                context_value=self,
                variable_values=graphql_request.variables,
                operation_name=graphql_request.operation_name,
                field_resolver=self._resolver,
                is_awaitable=_never_awaitable,
            )
            assert isinstance(result, ExecutionResult), "the double's resolvers are synchronous"
        finally:
            self.changes.notify()
        rejected = request_errors(list(result.errors or ()))
        if rejected is not None:
            return rejected.response()
        return web.json_response(result.formatted)

    def _authorized(self, request: web.Request) -> bool:
        if not self.api_key:
            return True
        given = request.headers.get("ApiKey") or request.query.get("apikey")
        return given == self.api_key


def _never_awaitable(value: object) -> TypeGuard[Awaitable[Any]]:
    # Every resolver of the double is synchronous; skipping graphql-core's per-value check saves time on big pages.
    return False
