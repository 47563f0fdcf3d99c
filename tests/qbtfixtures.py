"""Helpers for tests that talk to a real qbittorrent-nox: the `nox` fixture, a logged-in WebUI session, torrents."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torf

from daemons.qbittorrent.client import QbittorrentClient, Torrent
from daemons.qbittorrent.nox import QbittorrentNox
from tests.webharness import eventually


def make_torrent(path: Path, *, name: str | None = None) -> tuple[bytes, str]:
    """A private, trackerless torrent of a local file or folder: (its bencoded bytes, its infohash in lowercase hex)."""
    torrent = torf.Torrent(path=path, private=True)
    if name is not None:
        torrent.name = name
    torrent.generate()
    return torrent.dump(), torrent.infohash.lower()


@pytest.fixture
async def nox(tmp_path: Path) -> AsyncIterator[QbittorrentNox]:
    """A started qbittorrent-nox with a throwaway profile in tmp_path/qbt, stopped at teardown.

    Without qbittorrent-nox installed (`make test` installs it) the test fails with NoxMissing."""
    async with QbittorrentNox(tmp_path / "qbt") as started:
        yield started


@contextlib.asynccontextmanager
async def webui_session(nox: QbittorrentNox) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session logged in to the WebUI; paths are relative to nox.url ("/api/v2/...")."""
    # The default cookie jar drops cookies from IP-address hosts, and the SID cookie is the login.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(nox.url, cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=10)) as session:
        form = {"username": nox.username, "password": nox.password}
        async with session.post("/api/v2/auth/login", data=form) as response:
            answer = await response.text()
        if answer != "Ok.":
            raise AssertionError(f"logging in to {nox.url} answered {response.status} {answer!r}")
        yield session


async def add_torrent(session: aiohttp.ClientSession, torrent: bytes, savepath: Path, **fields: str) -> None:
    """POST /api/v2/torrents/add with the hash check skipped; `fields` are further form fields (category=...)."""
    form = aiohttp.FormData({"savepath": str(savepath), "skip_checking": "true", **fields})
    form.add_field("torrents", torrent, filename="added.torrent", content_type="application/x-bittorrent")
    async with session.post("/api/v2/torrents/add", data=form) as response:
        answer = await response.text()
    if answer != "Ok.":
        raise AssertionError(f"adding a torrent answered {response.status} {answer!r}")


async def torrent_info(session: aiohttp.ClientSession, infohash: str) -> dict[str, Any] | None:
    """The torrent's entry in /api/v2/torrents/info, or None if qBittorrent does not have it."""
    async with session.get("/api/v2/torrents/info", params={"hashes": infohash}) as response:
        response.raise_for_status()
        found: list[dict[str, Any]] = await response.json()
    return found[0] if found else None


async def until_at_rest(client: QbittorrentClient, infohash: str) -> Torrent:
    """Wait until qBittorrent has the torrent complete and at rest (it checks resume data after adding or a restart)."""
    found: Torrent | None = None

    async def at_rest() -> bool:
        nonlocal found
        found = await client.torrent(infohash)
        return found is not None and found.at_rest

    await eventually(at_rest, timeout=30, poll=0.05)
    assert found is not None
    return found
