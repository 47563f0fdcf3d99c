"""QbittorrentClient: the async face of qbittorrent-api, the one module that imports it.

qbittorrent-api is synchronous (requests). Here every call runs in the client's own thread
under a hard timeout (see daemons/blocking.py), and every failure comes out as one of the
QbittorrentError types below, written for a person. An expired session is renewed by
qbittorrent-api itself (it logs in again when an answer is 403); a login that fails is
QbittorrentUnauthorized. The password is never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import qbittorrentapi
import requests

from daemons.blocking import BlockingConnection, failure_reason
from daemons.downloads.files import TorrentFile
from supervisor import TransientError
from supervisor.config import QbittorrentSettings

T = TypeVar("T")


class QbittorrentError(Exception):
    """A qBittorrent call failed. The message is written for a person."""


class QbittorrentUnreachable(QbittorrentError, TransientError):
    """Nothing answers at the URL (refused, reset), or qBittorrent answers with a server error."""


class QbittorrentTimeout(QbittorrentError, TransientError):
    """qBittorrent took longer than qbittorrent.timeout to answer."""


class QbittorrentUnauthorized(QbittorrentError):
    """qBittorrent refused the user name and password (or has banned this address)."""


class QbittorrentAPIError(QbittorrentError):
    """qBittorrent understood the request and refused it (an unknown torrent, a bad argument)."""


class QbittorrentNotFound(QbittorrentAPIError):
    """qBittorrent answered 404: asked about one torrent, it does not have it (removed there meanwhile)."""


#: States of a complete torrent at rest (seeding, queued or paused): not being checked, moved or missing files.
AT_REST = frozenset({"uploading", "stalledUP", "pausedUP", "queuedUP", "forcedUP", "stoppedUP"})


@dataclass(frozen=True, slots=True)
class Torrent:
    hash: str
    name: str
    category: str
    tags: frozenset[str]
    save_path: str
    progress: float  # 0..1
    state: str

    @property
    def at_rest(self) -> bool:
        """Complete, with its files in place (qBittorrent is not checking or moving them)."""
        return self.progress == 1 and self.state in AT_REST

    @classmethod
    def from_answer(cls, answer: Any) -> Torrent:
        tags = frozenset(tag.strip() for tag in str(answer.get("tags") or "").split(",") if tag.strip())
        return cls(
            hash=str(answer["hash"]),
            name=str(answer["name"]),
            category=str(answer.get("category") or ""),
            tags=tags,
            save_path=str(answer["save_path"]),
            progress=float(answer["progress"]),
            state=str(answer["state"]),
        )


class QbittorrentClient:
    """What Warden asks of qBittorrent's Web API. `close()` when done."""

    def __init__(self, url: str, username: str, password: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout

        def connect() -> qbittorrentapi.Client:
            client = qbittorrentapi.Client(
                host=self.url,
                username=username,
                password=password,
                REQUESTS_ARGS={"timeout": timeout},
                # qbittorrent-api retries a failed request once itself; urllib3's own retry on top
                # would only add a warning per attempt to the console while qBittorrent is down.
                HTTPADAPTER_ARGS={"max_retries": 0},
                DISABLE_LOGGING_DEBUG_OUTPUT=True,
            )
            client.auth_log_in()  # now, so a refused password is told apart from a refused call
            return client

        self._qbt = BlockingConnection(
            connect,
            _log_out,
            timeout,
            "qbittorrent",
            translate=self._translate,
            reconnect_after=(TransientError, QbittorrentUnauthorized),
        )

    @classmethod
    def from_settings(cls, settings: QbittorrentSettings) -> QbittorrentClient:
        assert settings.url is not None, "no qBittorrent URL configured"
        password = settings.password.get_secret_value() if settings.password else ""
        return cls(settings.url, settings.username, password, settings.timeout)

    def close(self) -> None:
        self._qbt.close()

    async def version(self) -> str:
        return str(await self._call(lambda qbt: qbt.app_version()))

    async def completed(self, category: str | None) -> list[Torrent]:
        """Completed torrents (seeding, paused or stalled after download) in `category`; None: every category."""
        answer = await self._call(lambda qbt: qbt.torrents_info(status_filter="completed", category=category))
        return [Torrent.from_answer(torrent) for torrent in answer]

    async def torrent(self, torrent_hash: str) -> Torrent | None:
        answer = await self._call(lambda qbt: qbt.torrents_info(torrent_hashes=torrent_hash))
        return Torrent.from_answer(answer[0]) if answer else None

    async def files(self, torrent_hash: str) -> list[TorrentFile]:
        answer: list[Any] = await self._call(lambda qbt: list(qbt.torrents_files(torrent_hash=torrent_hash)))
        return [TorrentFile(str(file["name"]), int(file["size"]), float(file["progress"])) for file in answer]

    async def add_tag(self, torrent_hashes: Iterable[str], tag: str) -> None:
        """Tag these torrents, in one request."""
        hashes = list(torrent_hashes)
        if hashes:
            await self._call(lambda qbt: qbt.torrents_add_tags(tags=[tag], torrent_hashes=hashes))

    async def add_torrent(
        self, torrent: bytes, save_path: str, *, category: str | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Add a torrent whose data is already at `save_path` (its pieces are not checked)."""
        answer = await self._call(
            lambda qbt: qbt.torrents_add(
                torrent_files=torrent,
                save_path=save_path,
                category=category,
                tags=list(tags) or None,
                is_skip_checking=True,
            )
        )
        if answer == "Fails.":  # 4.x says "Ok." or "Fails."; 5.x answers JSON on success
            raise QbittorrentAPIError(f"qBittorrent at {self.url} did not add the torrent ({answer})")

    async def _call(self, request: Callable[[qbittorrentapi.Client], T]) -> T:
        """Run `request` in the connection's thread; every failure comes out as a QbittorrentError."""
        return await self._qbt.call(request)

    def _translate(self, error: Exception) -> QbittorrentError:
        where = f"qBittorrent at {self.url}"
        if isinstance(error, TimeoutError):
            return QbittorrentTimeout(f"{where} did not answer within {self._timeout:g} s")
        if isinstance(error, qbittorrentapi.LoginFailed):
            return QbittorrentUnauthorized(f"{where} refused the user name or password (check qbittorrent.password)")
        if isinstance(error, qbittorrentapi.HTTP403Error | qbittorrentapi.HTTP401Error):
            return QbittorrentUnauthorized(f"{where} refused access ({_first_line(error) or 'forbidden'})")
        if isinstance(error, qbittorrentapi.HTTP5XXError):
            return QbittorrentUnreachable(f"{where} is failing (HTTP {_status(error)})")
        if isinstance(error, qbittorrentapi.HTTPError):
            kind = QbittorrentNotFound if isinstance(error, qbittorrentapi.NotFound404Error) else QbittorrentAPIError
            return kind(f"{where} refused the request (HTTP {_status(error)}: {_first_line(error)})")
        if isinstance(error, qbittorrentapi.APIConnectionError):
            cause = error.__context__
            if isinstance(cause, requests.Timeout):
                return QbittorrentTimeout(f"{where} did not answer within {self._timeout:g} s")
            return QbittorrentUnreachable(f"qBittorrent not reachable at {self.url}: {failure_reason(cause or error)}")
        if isinstance(error, qbittorrentapi.APIError):
            return QbittorrentAPIError(f"{where} refused the request: {type(error).__name__}: {error}")
        return QbittorrentAPIError(f"unexpected answer from {where}: {type(error).__name__}: {error}")


def _log_out(qbt: qbittorrentapi.Client) -> None:
    """Free the session in qBittorrent (it keeps every one until it expires); best effort."""
    with contextlib.suppress(Exception):  # closing: qBittorrent may already be gone
        qbt.auth_log_out()


def _status(error: Exception) -> int | str:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) or "?"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
