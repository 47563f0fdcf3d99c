"""StashClient: the async face of stashapi, the one module that imports it.

stashapi is synchronous (requests) and has no timeout, logs GraphQL errors instead of
raising them, and connects (three requests, one of them an introspection) in its
constructor. Here every call runs in a worker thread under a hard timeout, GraphQL errors
raise, the connection is made on first use and made again after a failure, and every
failure comes out as one of the StashError types below. The API key travels in the
`ApiKey` header only and is never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from stashapi.classes import GQLException, GQLWrapper
from stashapi.stashapp import StashInterface

from daemons.blocking import BlockingConnection, failure_reason
from supervisor import ExternalState, JobStatus, TransientError
from supervisor.config import StashSettings

T = TypeVar("T")

#: Stash job states → Warden job states (READY and STOPPING are still running there).
_JOB_STATES = {
    "READY": JobStatus.RUNNING,
    "RUNNING": JobStatus.RUNNING,
    "STOPPING": JobStatus.RUNNING,
    "FINISHED": JobStatus.COMPLETED,
    "CANCELLED": JobStatus.CANCELLED,
    "FAILED": JobStatus.FAILED,
}


class StashError(Exception):
    """A Stash call failed. The message is written for a person."""


class StashUnreachable(StashError, TransientError):
    """Nothing answers at the URL (refused, DNS, reset)."""


class StashTimeout(StashError, TransientError):
    """Stash took longer than stash.timeout to answer."""


class StashBusy(StashError, TransientError):
    """Stash answered that its database is locked; worth retrying."""


class StashUnauthorized(StashError):
    """Stash refused the API key (or needs one)."""


class StashGraphQLError(StashError):
    """Stash understood the request and answered with an error."""


class StashBadResponse(StashError):
    """The answer was not what a Stash server sends."""


@dataclass(frozen=True, slots=True)
class StashJob:
    """A job in Stash's queue (scan, generate, ...)."""

    id: str
    status: str  # READY RUNNING STOPPING FINISHED CANCELLED FAILED
    description: str
    progress: float | None  # 0..1, None while waiting
    error: str | None

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> StashJob:
        return cls(
            str(answer["id"]),
            answer["status"],
            answer.get("description") or "",
            answer.get("progress"),
            answer.get("error"),
        )

    @property
    def is_scan(self) -> bool:
        return self.description.startswith("Scanning")

    def external_state(self) -> ExternalState:
        """This job as Warden's job mirror sees it."""
        status = _JOB_STATES.get(self.status)
        if status is None:
            raise StashBadResponse(f"Stash job {self.id} has an unknown status {self.status!r}")
        progress = None if self.progress is None else round(100 * self.progress, 1)
        message = f"Stash: {self.description} ({self.status.lower()})"
        error = (self.error or "failed in Stash") if status is JobStatus.FAILED else None
        return ExternalState(status, progress, message, error)


#: Fields of the Job type Warden reads.
_JOB_FIELDS = "id status description progress error"


def connection_of(url: str, api_key: str | None) -> dict[str, Any]:
    """stashapi's connection dict for a Stash URL like http://127.0.0.1:9999."""
    parts = urlsplit(url)  # its shape is checked with the settings (StashSettings.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    connection: dict[str, Any] = {"Scheme": parts.scheme, "Host": parts.hostname, "Port": port}
    if api_key:
        connection["ApiKey"] = api_key
    return connection


class StashClient:
    """What Warden's daemons ask of Stash. `close()` when done."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        connection = connection_of(url, api_key)
        self._timeout = timeout
        self._stash = BlockingConnection(
            lambda: _Interface(connection, timeout),
            _disconnect,
            timeout,
            "stash",
            translate=self._translate,
            reconnect_after=(TransientError, StashUnauthorized),
        )

    @classmethod
    def from_settings(cls, settings: StashSettings) -> StashClient:
        assert settings.url is not None, "no Stash URL configured"
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(settings.url, api_key, settings.timeout)

    def close(self) -> None:
        self._stash.close()

    # -- reads -------------------------------------------------------------------------

    async def version(self) -> str:
        answer = await self._call(lambda stash: stash.call_GQL("query StashVersion { version { version } }"))
        return str(answer["version"]["version"])

    async def find_scenes(
        self,
        scene_filter: Mapping[str, Any],
        fields: str,
        *,
        page: int = 1,
        per_page: int = 100,
        sort: str = "updated_at",
        direction: str = "ASC",
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of scenes matching a SceneFilterType, and how many match in all."""
        find_filter = {"page": page, "per_page": per_page, "sort": sort, "direction": direction}
        count, scenes = await self._call(
            lambda stash: stash.find_scenes(f=dict(scene_filter), filter=find_filter, fragment=fields, get_count=True)
        )
        return int(count), list(scenes)

    async def find_scene(self, scene_id: str, fields: str) -> dict[str, Any] | None:
        scene = await self._call(lambda stash: stash.find_scene(int(scene_id), fragment=fields))
        return None if scene is None else dict(scene)

    async def find_tag(self, name: str) -> dict[str, Any] | None:
        """The tag with this name or alias (case-insensitive), or None."""
        tag = await self._call(lambda stash: stash.find_tag(name, fragment="id name aliases"))
        return dict(tag) if tag else None

    async def create_tag(self, name: str) -> dict[str, Any]:
        return dict(await self._call(lambda stash: stash.create_tag({"name": name})))

    async def scene_markers(self, scene_id: str) -> list[dict[str, Any]]:
        markers = await self._call(
            lambda stash: stash.find_scene_markers(
                {"scenes": {"value": [scene_id], "modifier": "INCLUDES"}},
                filter={"per_page": -1},
                fragment="id title seconds end_seconds primary_tag { id name } tags { id name }",
            )
        )
        return list(markers)

    async def create_marker(
        self,
        scene_id: str,
        title: str,
        seconds: float,
        primary_tag_id: str,
        *,
        end_seconds: float | None = None,
        tag_ids: Iterable[str] = (),
    ) -> dict[str, Any]:
        marker_input: dict[str, Any] = {
            "scene_id": scene_id,
            "title": title,
            "seconds": seconds,
            "primary_tag_id": primary_tag_id,
            "tag_ids": list(tag_ids),
        }
        if end_seconds is not None:
            marker_input["end_seconds"] = end_seconds
        marker = await self._call(
            lambda stash: stash.create_scene_marker(marker_input, fragment="id title seconds end_seconds")
        )
        return dict(marker)

    async def update_scene_tags(self, scene_ids: Iterable[str], tag_ids: Iterable[str], mode: str = "ADD") -> list[str]:
        """Add (ADD), remove (REMOVE) or set (SET) tags on many scenes at once; returns the updated ids."""
        update = {"ids": list(scene_ids), "tag_ids": {"ids": list(tag_ids), "mode": mode}}
        scenes = await self._call(lambda stash: stash.update_scenes(update))
        return [str(scene["id"]) for scene in scenes or ()]

    # -- tasks and jobs ----------------------------------------------------------------

    async def metadata_scan(self, paths: Iterable[str], *, generate: Iterable[str] = ()) -> str:
        """Ask Stash to scan exactly these paths; returns its job id. `generate` names scanGenerate* flags."""
        flags = {_SCAN_FLAGS[asset]: True for asset in generate} or {"rescan": False}
        return str(await self._call(lambda stash: stash.metadata_scan(list(paths), flags=flags)))

    async def metadata_generate(self, scene_ids: Iterable[str], assets: Iterable[str]) -> str:
        """Ask Stash to generate these assets (covers, previews, sprites, phashes) for these scenes."""
        flags: dict[str, Any] = {asset: True for asset in assets}
        flags.update(sceneIDs=list(scene_ids), overwrite=False)
        return str(await self._call(lambda stash: stash.metadata_generate(flags)))

    async def job_queue(self) -> list[StashJob]:
        answer = await self._call(lambda stash: stash.call_GQL(f"query JobQueue {{ jobQueue {{ {_JOB_FIELDS} }} }}"))
        return [StashJob.from_answer(job) for job in answer["jobQueue"] or ()]

    async def find_job(self, job_id: str) -> StashJob | None:
        answer = await self._call(
            lambda stash: stash.call_GQL(
                f"query FindJob($input: FindJobInput!) {{ findJob(input: $input) {{ {_JOB_FIELDS} }} }}",
                {"input": {"id": job_id}},
            )
        )
        job = answer["findJob"]
        return None if job is None else StashJob.from_answer(job)

    async def stop_job(self, job_id: str) -> bool:
        return bool(await self._call(lambda stash: stash.stop_job(job_id)))

    # -- the call path -----------------------------------------------------------------

    async def _call(self, request: Callable[[StashInterface], T]) -> T:
        """Run `request` in the connection's thread; every failure comes out as a StashError."""
        return await self._stash.call(request)

    def _translate(self, error: Exception) -> StashError:
        if isinstance(error, StashError):
            return error
        if isinstance(error, _HTTPStatus):
            if error.status in (401, 403):
                # stashapi raises a bare Exception("Authentication error") for 401; _HTTPStatus covers both.
                return StashUnauthorized(f"Stash at {self.url} refused the API key (check stash.api_key)")
            return StashUnreachable(f"Stash at {self.url} is not answering (HTTP {error.status})")
        if isinstance(error, requests.exceptions.InvalidHeader):
            # The message would quote the key itself.
            return StashUnauthorized("the Stash API key has characters an HTTP header cannot carry")
        if isinstance(error, _NotGraphQL):
            return StashBadResponse(f"Stash at {self.url} sent an answer Warden cannot read: {error}")
        if isinstance(error, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
            return StashUnreachable(f"Stash at {self.url} broke off its answer (the connection closed mid-way)")
        if isinstance(error, requests.Timeout | TimeoutError):
            return StashTimeout(f"Stash at {self.url} did not answer within {self._timeout:g} s")
        if isinstance(error, requests.ConnectionError):
            return StashUnreachable(f"cannot reach Stash at {self.url}: {failure_reason(error)}")
        if isinstance(error, GQLException):
            message = str(error).strip()
            if "database is locked" in message:
                return StashBusy(f"Stash is busy (database locked): {message}")
            return StashGraphQLError(f"Stash refused the request: {message}")
        if isinstance(error, requests.RequestException):
            return StashUnreachable(f"cannot talk to Stash at {self.url}: {failure_reason(error)}")
        return StashBadResponse(f"unexpected answer from Stash at {self.url}: {type(error).__name__}: {error}")


def _disconnect(stash: StashInterface) -> None:
    stash.s.close()


class _NotGraphQL(Exception):
    """A 200 (or other) answer that is no GraphQL answer: a proxy's page, JSON cut short, no data."""

    @classmethod
    def of(cls, response: requests.Response) -> _NotGraphQL:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
        try:
            response.json()
        except ValueError:
            if "json" in kind:
                return cls(f"its JSON is cut short or malformed (HTTP {response.status_code})")
            return cls(f"{kind} instead of JSON (HTTP {response.status_code})")
        return cls(f"an answer without data (HTTP {response.status_code})")


class _HTTPStatus(Exception):
    """An HTTP status that says more than stashapi's generic error would."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


_SCAN_FLAGS = {
    "covers": "scanGenerateCovers",
    "previews": "scanGeneratePreviews",
    "sprites": "scanGenerateSprites",
    "phashes": "scanGeneratePhashes",
}


class _TimedSession(GQLWrapper):
    """Swaps stashapi's requests session for one with a timeout, before the constructor's first request."""

    _request_timeout: float

    def __init__(self) -> None:
        super().__init__()
        session = _Session(self._request_timeout)
        session.headers.update(self.s.headers)
        session.verify = self.s.verify
        self.s = session


class _Interface(StashInterface, _TimedSession):
    RAISE_GQL_ERRORS = True

    def __init__(self, connection: dict[str, Any], timeout: float) -> None:
        self._request_timeout = timeout
        super().__init__({**connection, "Logger": _Quiet()})

    def _handle_GQL_response(self, response: requests.Response) -> dict[str, Any]:
        # Refused keys, overloaded proxies and a restarting Stash all look alike to stashapi.
        if response.status_code in (401, 403, 429) or response.status_code >= 500:
            raise _HTTPStatus(response.status_code)
        try:
            answer: dict[str, Any] = super()._handle_GQL_response(response)
        except GQLException:
            raise
        except Exception as error:  # stashapi's own words for these are "query failed" or a TypeError
            raise _NotGraphQL.of(response) from error
        return answer


class _Session(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class _Quiet:
    """stashapi's logger, silenced: its failures reach the daemons as StashErrors, and some of
    its lines (a rejected header) would quote the API key."""

    def __getattr__(self, level: str) -> Callable[..., None]:
        return _ignore


def _ignore(*args: object, **kwargs: object) -> None:
    return None
