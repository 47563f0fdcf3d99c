"""QbittorrentClient against the real qbittorrent-nox, and against servers that fail in chosen ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from daemons.downloads.files import TorrentFile
from daemons.qbittorrent.client import (
    QbittorrentAPIError,
    QbittorrentClient,
    QbittorrentTimeout,
    QbittorrentUnauthorized,
    QbittorrentUnreachable,
    Torrent,
)
from daemons.qbittorrent.nox import QbittorrentNox
from supervisor import TransientError
from tests.qbtfixtures import add_torrent, make_torrent, nox, torrent_info, until_at_rest, webui_session
from tests.webharness import eventually

__all__ = ["nox"]  # the fixture: imported for pytest to find, and used by name only


@contextlib.asynccontextmanager
async def connected(
    url: str, password: str = "secret", timeout: float = 10, username: str = "admin"
) -> AsyncIterator[QbittorrentClient]:
    client = QbittorrentClient(url, username, password, timeout)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def client(nox: QbittorrentNox) -> AsyncIterator[QbittorrentClient]:
    async with connected(nox.url, nox.password, username=nox.username) as logged_in:
        yield logged_in


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def tcp_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A loopback server running `handle` on each connection; every connection is closed on the way out."""
    accepted: list[asyncio.StreamWriter] = []

    async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(ConnectionError):
            await handle(reader, writer)

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    finally:
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 16):
        pass


async def answer_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A status line, then a header one byte at a time: the client's read timeout never fires."""
    writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not writer.is_closing():
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def summary(torrent: Torrent) -> tuple[str, str, str, str, frozenset[str], float]:
    return (torrent.hash, torrent.name, torrent.save_path, torrent.category, torrent.tags, torrent.progress)


async def test_completed_torrents_by_category_their_files_and_tags(
    nox: QbittorrentNox, client: QbittorrentClient, tmp_path: Path
) -> None:
    assert (await client.version()).startswith("v4.5.")
    clip = write(tmp_path / "single" / "clip.mp4", 1 << 18)
    folder = tmp_path / "multi" / "Folder"
    write(folder / "sub" / "a.mp4", 1 << 17)
    write(folder / "b.nfo", 300)
    clip_torrent, clip_hash = make_torrent(clip)
    folder_torrent, folder_hash = make_torrent(folder)
    missing_torrent, missing_hash = make_torrent(write(tmp_path / "elsewhere" / "gone.mp4", 1 << 16))
    (tmp_path / "empty").mkdir()

    await client.add_torrent(clip_torrent, str(clip.parent), category="stash", tags=["seen"])
    await client.add_torrent(folder_torrent, str(folder.parent), category="other")
    async with webui_session(nox) as session:  # checked against an empty folder: it never completes
        await add_torrent(session, missing_torrent, tmp_path / "empty", skip_checking="false", category="stash")

        async def checked() -> bool:
            info = await torrent_info(session, missing_hash)
            return info is not None and info["state"] in {"stalledDL", "downloading", "missingFiles"}

        await eventually(checked, timeout=30, poll=0.05)
    for infohash in (clip_hash, folder_hash):
        await until_at_rest(client, infohash)

    assert [summary(t) for t in await client.completed("stash")] == [
        (clip_hash, "clip.mp4", str(clip.parent), "stash", {"seen"}, 1.0)
    ]
    assert [summary(t) for t in await client.completed("other")] == [
        (folder_hash, "Folder", str(folder.parent), "other", set(), 1.0)
    ]
    assert sorted(t.hash for t in await client.completed(None)) == sorted([clip_hash, folder_hash])
    incomplete = await client.torrent(missing_hash)
    assert incomplete is not None and incomplete.progress < 1

    assert sorted(await client.files(folder_hash), key=lambda f: f.name) == [
        TorrentFile("Folder/b.nfo", 300, 1.0),
        TorrentFile("Folder/sub/a.mp4", 1 << 17, 1.0),
    ]
    with pytest.raises(QbittorrentAPIError, match="404"):
        await client.files("0" * 40)
    with pytest.raises(QbittorrentAPIError, match="did not add the torrent"):
        await client.add_torrent(clip_torrent, str(clip.parent))  # already there

    await client.add_tag([clip_hash, folder_hash], "synced")
    await client.add_tag([], "never")
    tagged = [await client.torrent(infohash) for infohash in (clip_hash, folder_hash, missing_hash)]
    assert [t.tags if t else None for t in tagged] == [{"seen", "synced"}, {"synced"}, set()]
    assert await client.torrent("0" * 40) is None


async def test_nothing_listening_is_unreachable(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    async with connected(url) as client:
        with pytest.raises(QbittorrentUnreachable) as refused:
            await client.version()
    assert str(refused.value).startswith(f"qBittorrent not reachable at {url}")
    assert isinstance(refused.value, TransientError)


async def test_a_wrong_password_is_unauthorized_and_never_shown(
    nox: QbittorrentNox, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    caplog.set_level(logging.DEBUG)
    async with connected(nox.url, wrong, username=nox.username) as client:
        with pytest.raises(QbittorrentUnauthorized, match="user name or password") as refused:
            await client.completed(None)
    assert not isinstance(refused.value, TransientError)
    for secret in (wrong, nox.password):
        assert secret not in str(refused.value)
        assert secret not in caplog.text


async def test_the_same_client_logs_in_again_after_restarts_and_outages(
    nox: QbittorrentNox, client: QbittorrentClient
) -> None:
    assert await client.completed(None) == []
    await nox.restart()  # qBittorrent forgets every session: the next call gets 403 and logs in again
    assert await client.completed(None) == []
    await nox.stop()
    with pytest.raises(QbittorrentUnreachable, match=f"not reachable at {nox.url}: Connection refused"):
        await client.completed(None)
    await nox.start()
    assert await client.completed(None) == []
    assert (await client.version()).startswith("v4.5.")


async def test_a_server_that_never_answers_times_out() -> None:
    async with tcp_server(never_answer) as (url, accepted), connected(url, timeout=0.5) as client:
        for _ in range(2):  # the next call fails the same way, in bounded time
            async with asyncio.timeout(10):
                with pytest.raises(QbittorrentTimeout, match=r"did not answer within 0\.5 s") as slow:
                    await client.version()
        assert isinstance(slow.value, TransientError)
        assert accepted  # it connected: the server's silence timed it out, not a refusal


async def test_calls_after_a_timeout_go_to_a_fresh_connection_not_behind_the_stuck_one() -> None:
    async with tcp_server(answer_forever) as (url, accepted), connected(url, timeout=0.5) as client:
        with pytest.raises(QbittorrentTimeout):
            await client.version()
        assert len(accepted) == 1  # its thread still reads the endless answer
        async with asyncio.timeout(10):
            later = await asyncio.gather(client.version(), client.completed(None), return_exceptions=True)
        assert [type(outcome) for outcome in later] == [QbittorrentTimeout, QbittorrentTimeout]
        assert len(accepted) == 2  # the later calls connected afresh, in a new thread, while the first still hangs


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, QbittorrentUnreachable),
        (503, QbittorrentUnreachable),
        (404, QbittorrentAPIError),
        (409, QbittorrentAPIError),
    ],
)
async def test_http_statuses_are_mapped_to_what_they_mean(
    unused_tcp_port: int, status: int, error: type[Exception]
) -> None:
    logins = 0

    async def login(request: web.Request) -> web.Response:
        nonlocal logins
        logins += 1
        response = web.Response(text="Ok.")
        response.set_cookie("SID", secrets.token_hex(16))
        return response

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=status, text=f"answered {status}")

    app = web.Application()
    app.router.add_post("/api/v2/auth/login", login)
    app.router.add_route("*", "/api/v2/{call:.*}", fail)
    async with serving(app, unused_tcp_port) as url, connected(url) as client:
        with pytest.raises(error, match=f"HTTP {status}"):
            await client.version()
        with pytest.raises(error):
            await client.torrent("0" * 40)
    # A server error may be a restart: the client logs in afresh. A refused request keeps the session.
    assert logins == (2 if issubclass(error, TransientError) else 1)
