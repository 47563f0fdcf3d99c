"""download_processor against a real qbittorrent-nox and the Stash double: exactly the right
files placed, the right torrents tagged, a scan of exactly those paths; hostile torrents;
qBittorrent stopped mid-cycle and refusing the password."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemons.download_processor import DownloadProcessor
from daemons.qbittorrent.client import QbittorrentClient
from daemons.qbittorrent.nox import QbittorrentNox
from daemons.stash.double import StashDouble
from daemons.stash.videos import make_video
from supervisor.jobs import Job, JobStatus
from supervisor.models import DaemonStatus
from tests.harness import Kernel, make_settings, running_kernel
from tests.qbtfixtures import make_torrent, nox, until_at_rest, webui_session

__all__ = ["nox"]  # the fixture, used by name

KEY = "downloads-test-key-0123"
NAME = DownloadProcessor.name
#: Media files at least this big are placed; the "samples" made below are smaller.
MIN_SIZE = 4000


@dataclass
class World:
    tmp_path: Path
    nox: QbittorrentNox
    double: StashDouble
    library: Path
    scans: list[list[str]] = field(default_factory=list)  # the paths of each metadataScan Stash received
    scan_hook: Callable[[], Awaitable[None]] | None = None

    def settings(self, password: str | None = None, *, stash: bool = True, **config: Any) -> Any:
        daemon = {
            "interval": 3600,
            "destination": str(self.library),
            "min_size": MIN_SIZE,
            "poll_interval": 0.05,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            **config,
        }
        qbittorrent = {"url": self.nox.url, "password": password or self.nox.password, "timeout": 5}
        return make_settings(
            [DownloadProcessor],
            self.tmp_path,
            stash={"url": self.double.url, "api_key": KEY} if stash else {},
            qbittorrent=qbittorrent,
            daemons={NAME: daemon},
        )

    def client(self) -> QbittorrentClient:
        return QbittorrentClient(self.nox.url, self.nox.username, self.nox.password, 10)

    def placed(self) -> list[str]:
        return sorted(str(path.relative_to(self.library)) for path in self.library.rglob("*") if path.is_file())


@asynccontextmanager
async def world(tmp_path: Path, nox: QbittorrentNox) -> AsyncIterator[World]:
    library = tmp_path / "library"
    library.mkdir()
    async with StashDouble(api_key=KEY, step_delay=0.001, library_paths=[library]) as double:
        state = World(tmp_path, nox, double, library)

        async def before(root_field: str, variables: dict[str, Any]) -> None:
            if root_field == "metadataScan":
                state.scans.append(sorted(variables["input"]["paths"]))
                if state.scan_hook is not None:
                    await state.scan_hook()

        double.before = before
        yield state


@asynccontextmanager
async def processing(state: World, settings: Any = None) -> AsyncIterator[Kernel]:
    async with running_kernel([DownloadProcessor], state.tmp_path, settings=settings or state.settings()) as kernel:
        await kernel.supervisor.start(NAME)
        yield kernel


def status(kernel: Kernel) -> DaemonStatus:
    return kernel.supervisor.runner(NAME).status


def jobs_of(kernel: Kernel, job_type: str) -> list[Job]:
    return [job for job in kernel.jobs.values() if job.type == job_type]


def job_messages(kernel: Kernel) -> list[str]:
    """Every message a job publishes, as it publishes it (the hub itself keeps only the latest)."""
    messages: list[str] = []
    publish = kernel.hub.set_job

    def spy(job: Job) -> None:
        messages.append(job.message)
        publish(job)

    kernel.hub.set_job = spy  # type: ignore[method-assign]
    return messages


def video(path: Path, seconds: float, *, size: int = 96) -> Path:
    """A small real clip; distinct durations make distinct files (Stash would merge identical ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_video(path, width=size, height=size * 9 // 16 // 2 * 2, duration=seconds)


def sample(path: Path) -> Path:
    """A clip under MIN_SIZE, as the samples shipped in release folders are."""
    made = make_video(path, width=32, height=18, duration=0.2, fps=5)
    assert made.stat().st_size < MIN_SIZE, "the sample clip came out too big for the test's MIN_SIZE"
    return made


async def add(
    state: World, content: Path, *, category: str = "stash", tags: tuple[str, ...] = (), name: str | None = None
) -> str:
    """Seed `content` (a file or folder) as a torrent in qBittorrent and wait until it is complete."""
    torrent, infohash = make_torrent(content, name=name)
    client = state.client()
    try:
        await client.add_torrent(torrent, str(content.parent), category=category, tags=tags)
        await until_at_rest(client, infohash)
    finally:
        client.close()
    return infohash


async def tags_of(state: World, *infohashes: str) -> list[frozenset[str]]:
    client = state.client()
    try:
        found = [await client.torrent(infohash) for infohash in infohashes]
    finally:
        client.close()
    return [torrent.tags if torrent else frozenset({"<gone>"}) for torrent in found]


async def test_completed_torrents_of_the_category_are_placed_tagged_and_scanned(
    tmp_path: Path, nox: QbittorrentNox
) -> None:
    downloads = tmp_path / "downloads"
    async with world(tmp_path, nox) as state:
        single = await add(state, video(downloads / "Alpha Clip.mp4", 1.0))
        pack = downloads / "Bravo Pack"
        video(pack / "part one.mp4", 1.2)
        video(pack / "Extras" / "part two.MKV", 1.4)
        (pack / "release.nfo").write_text("not a video " * 1000)
        sample(pack / "sample.mp4")
        folder = await add(state, pack)
        other_category = await add(state, video(downloads / "Charlie.mp4", 1.6), category="other")
        synced = await add(state, video(downloads / "Delta.mp4", 1.8), tags=("synced",))
        failed = await add(state, video(downloads / "Echo.mp4", 2.0), tags=("error_syncing",))

        async with processing(state) as kernel:
            progress = job_messages(kernel)
            await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
            summary = status(kernel).message
            (process,) = jobs_of(kernel, "process_downloads")
            (scan,) = jobs_of(kernel, "stash_scan")
            kernel.supervisor.wake(NAME)  # a second cycle finds nothing new
            await kernel.until(lambda: status(kernel).message == "No new downloads in category stash", timeout=30)

        expected = ["Alpha Clip.mp4", "Bravo Pack/Extras/part two.MKV", "Bravo Pack/part one.mp4"]
        assert state.placed() == expected
        for relative in expected:
            source = downloads / relative
            assert source.exists(), "the download itself is never moved"
            assert (state.library / relative).stat().st_ino == source.stat().st_ino, "hard-linked, not copied"
        assert await tags_of(state, single, folder) == [frozenset({"synced"})] * 2
        assert await tags_of(state, other_category, synced, failed) == [
            frozenset(),
            frozenset({"synced"}),
            frozenset({"error_syncing"}),
        ]
        assert state.scans == [sorted(str(state.library / relative) for relative in expected)]
        assert scan.status is JobStatus.COMPLETED, "the scan is followed to its end in Stash"
        assert sorted(scene.path for scene in state.double.library.scenes.values()) == state.scans[0]
        assert process.status is JobStatus.COMPLETED and process.items_total == 2
        per_torrent = sorted(message for message in progress if message.startswith("Processing torrent"))
        assert [message.split(": ", 1)[1] for message in per_torrent] in (
            ["Alpha Clip.mp4", "Bravo Pack"],
            ["Bravo Pack", "Alpha Clip.mp4"],
        )
        assert [message.split(":")[0] for message in per_torrent] == [
            "Processing torrent 1/2",
            "Processing torrent 2/2",
        ]
        assert summary == "Processed 2 downloads: 3 linked"


async def test_across_filesystems_the_files_are_copied(tmp_path: Path, nox: QbittorrentNox) -> None:
    shm = Path(tempfile.mkdtemp(prefix="warden-downloads-", dir="/dev/shm"))
    try:
        assert os.stat(shm).st_dev != os.stat(tmp_path).st_dev, "the test needs /dev/shm on another filesystem"
        async with world(tmp_path, nox) as state:
            source = video(shm / "Foxtrot" / "clip.mp4", 1.0)
            infohash = await add(state, source.parent)
            async with processing(state) as kernel:
                await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
                summary = status(kernel).message
            copied = state.library / "Foxtrot" / "clip.mp4"
            assert copied.read_bytes() == source.read_bytes()
            assert copied.stat().st_ino != source.stat().st_ino
            assert state.placed() == ["Foxtrot/clip.mp4"], "no temporary file left behind"
            assert await tags_of(state, infohash) == [frozenset({"synced"})]
            assert summary == "Processed 1 download: 1 copied"
    finally:
        shutil.rmtree(shm)


def outside_the_library(state: World) -> dict[str, int]:
    """Every path under the test's folder but the library, qBittorrent's profile and Warden's database."""
    own = (str(state.library), str(state.nox.profile), str(state.tmp_path / "warden.db"))
    return {str(path): path.lstat().st_size for path in state.tmp_path.rglob("*") if not str(path).startswith(own)}


async def test_hostile_torrents_write_nothing_outside_the_library_and_get_the_error_tag(
    tmp_path: Path, nox: QbittorrentNox
) -> None:
    downloads = tmp_path / "downloads"
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"\0" * MIN_SIZE * 2)
    async with world(tmp_path, nox) as state:
        # A file renamed through the Web API to climb out of the torrent: qBittorrent reports "../escape.mp4".
        trick = downloads / "Trick"
        video(trick / "a.mp4", 1.0)
        video(trick / "b.mp4", 1.2)
        renamed = await add(state, trick)
        async with webui_session(nox) as session:
            form = {"hash": renamed, "oldPath": "Trick/a.mp4", "newPath": "Trick/../../escape.mp4"}
            async with session.post("/api/v2/torrents/renameFile", data=form) as response:
                assert response.status == 200, await response.text()
        client = state.client()
        try:
            names = [file.name for file in await client.files(renamed)]
        finally:
            client.close()
        assert "../escape.mp4" in names, names
        # A download whose file was swapped for a link to a file outside it, beside a good file.
        linked = downloads / "Linked"
        video(linked / "clip.mp4", 1.4)
        video(linked / "good.mp4", 1.6)
        swapped = await add(state, linked)
        (linked / "clip.mp4").unlink()
        (linked / "clip.mp4").symlink_to(secret)

        before = outside_the_library(state)
        async with processing(state) as kernel:
            await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
            summary = status(kernel).message
            (process,) = jobs_of(kernel, "process_downloads")
        after = outside_the_library(state)

        assert await tags_of(state, renamed, swapped) == [frozenset({"error_syncing"})] * 2
        assert state.placed() == []
        assert [path for path in state.library.rglob("*") if path.is_symlink()] == []
        assert after == before, "nothing written (or changed) outside the library"
        assert state.scans == [], "nothing placed, nothing to scan"
        assert set(process.result["failed"]) == {"Trick", "Linked"}
        assert "../escape.mp4" in process.result["failed"]["Trick"]
        assert "outside" in process.result["failed"]["Linked"]
        assert summary.startswith("Processed 2 downloads: no media files; 2 failed, tagged error_syncing (first: ")
        assert state.placed() == [], "a torrent that fails places none of its files, the good ones included"


async def test_qbittorrent_stopped_mid_cycle_leaves_no_tag_and_the_next_run_finishes(
    tmp_path: Path, nox: QbittorrentNox
) -> None:
    downloads = tmp_path / "downloads"
    async with world(tmp_path, nox) as state:
        first = await add(state, video(downloads / "One.mp4", 1.0))
        second = await add(state, video(downloads / "Two.mp4", 1.2))

        async def stop_qbittorrent_once() -> None:
            state.scan_hook = None
            await nox.stop()  # once the files are placed, before the torrents are tagged

        state.scan_hook = stop_qbittorrent_once
        async with processing(state) as kernel:
            unreachable = f"qBittorrent not reachable at {nox.url}"
            await kernel.until(lambda: status(kernel).problem and unreachable in status(kernel).message, timeout=60)
            await kernel.supervisor.stop(NAME)
            await nox.start()
            client = state.client()
            try:  # once qBittorrent has checked its resume data, the torrents count as completed again
                restored = [await until_at_rest(client, infohash) for infohash in (first, second)]
            finally:
                client.close()
            assert [torrent.tags for torrent in restored] == [frozenset()] * 2, "no tag while qBittorrent was down"
            (scan,) = jobs_of(kernel, "stash_scan")
            assert scan.status is JobStatus.COMPLETED, "Stash scanned; only the tagging met qBittorrent down"

            await kernel.supervisor.start(NAME)
            await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
            summary = status(kernel).message
        assert await tags_of(state, first, second) == [frozenset({"synced"})] * 2
        expected = [str(state.library / "One.mp4"), str(state.library / "Two.mp4")]
        assert state.scans == [expected, expected], "the files placed before the outage are scanned again"
        assert state.placed() == ["One.mp4", "Two.mp4"]
        assert summary == "Processed 2 downloads: 2 present"


async def test_a_refused_password_shows_plainly_tags_nothing_and_recovers(tmp_path: Path, nox: QbittorrentNox) -> None:
    downloads = tmp_path / "downloads"
    async with world(tmp_path, nox) as state:
        infohash = await add(state, video(downloads / "Golf.mp4", 1.0))
        wrong = "not-the-password-1234"
        # A short interval: right after its restart qBittorrent lists the torrent as completed only
        # once it has checked its resume data, so the first check after the restart may find nothing.
        async with processing(state, state.settings(password=wrong, interval=1)) as kernel:
            await kernel.until(
                lambda: status(kernel).problem and "refused the user name or password" in status(kernel).message,
                timeout=60,
            )
            assert wrong not in status(kernel).message
            assert await tags_of(state, infohash) == [frozenset()]
            assert state.placed() == []

            nox.password = wrong  # the user sets qBittorrent's password to the one Warden has
            await nox.restart()
            await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
        assert await tags_of(state, infohash) == [frozenset({"synced"})]
        assert state.placed() == ["Golf.mp4"]


async def test_a_scan_that_fails_in_stash_leaves_the_torrents_untagged_until_a_scan_succeeds(
    tmp_path: Path, nox: QbittorrentNox
) -> None:
    async with world(tmp_path, nox) as state:
        infohash = await add(state, video(tmp_path / "downloads" / "Hotel.mp4", 1.0))
        state.double.jobs.fail_next("the disk is on fire")
        tags_at_second_scan: list[list[frozenset[str]]] = []

        async def look_at_the_tags() -> None:
            if len(state.scans) == 2:
                tags_at_second_scan.append(await tags_of(state, infohash))

        state.scan_hook = look_at_the_tags
        async with processing(state) as kernel:
            await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
            scans = sorted(job.status for job in jobs_of(kernel, "stash_scan"))
        assert scans == [JobStatus.COMPLETED, JobStatus.FAILED]
        assert tags_at_second_scan == [[frozenset()]], "not tagged after the failed scan"
        assert await tags_of(state, infohash) == [frozenset({"synced"})]
        assert state.scans == [[str(state.library / "Hotel.mp4")]] * 2


async def test_every_category_min_duration_and_no_scan(tmp_path: Path, nox: QbittorrentNox) -> None:
    pack = tmp_path / "downloads" / "India Pack"
    video(pack / "long.mp4", 2.0)
    video(pack / "short.mp4", 1.0)
    async with world(tmp_path, nox) as state:
        infohash = await add(state, pack, category="other")
        settings = state.settings(stash=False, category="", min_duration=1.5, scan_after=False)
        async with processing(state, settings) as kernel:
            await kernel.until(lambda: status(kernel).message.startswith("Processed"), timeout=60)
            summary = status(kernel).message
        assert state.placed() == ["India Pack/long.mp4"]
        assert await tags_of(state, infohash) == [frozenset({"synced"})]
        assert state.scans == [] and summary == "Processed 1 download: 1 linked"


@pytest.mark.parametrize(
    ("destination", "problem"),
    [
        ("library", "is not an absolute path"),
        ("{tmp}/missing", "does not exist or is not a folder"),
        ("{tmp}/a-file", "does not exist or is not a folder"),
    ],
)
def test_a_destination_that_cannot_take_files_is_refused_by_the_settings(
    tmp_path: Path, destination: str, problem: str
) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValidationError, match=problem):
        DownloadProcessor.Config(destination=Path(destination.format(tmp=tmp_path)))
