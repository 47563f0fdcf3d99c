"""Demo mode's qBittorrent: a qbittorrent-nox of Warden's own, seeding a demo download.

When qbittorrent-nox is installed, demo mode starts one (127.0.0.1 only, a fresh profile
under <data_dir>/demo/qbittorrent) and adds a finished download of a few generated clips,
so that download_processor places them into the demo library and has the demo Stash scan
them. Without it, download_processor is pointed at a loopback port where nothing listens:
it shows "qBittorrent not reachable at ..." and retries, and the banner says why.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import torf

from daemons.demo import announce
from daemons.qbittorrent.client import QbittorrentClient
from daemons.qbittorrent.nox import NoxFailed, NoxMissing, QbittorrentNox, free_port
from daemons.stash.videos import make_video
from supervisor.configfile import Overlay

if TYPE_CHECKING:
    from supervisor.app import Warden

logger = structlog.get_logger("warden.demo")

DEMO_DOWNLOAD = "Warden Demo Pack"
DEMO_CATEGORY = "stash"
#: Demo clips are small; the sample in the pack is smaller still, and is left out.
DEMO_MIN_SIZE = 10_000
DEMO_SETTINGS = {"interval": 15, "min_size": DEMO_MIN_SIZE, "poll_interval": 1, "backoff_initial": 1, "backoff_max": 10}


@asynccontextmanager
async def demo_qbittorrent(warden: Warden) -> AsyncIterator[None]:
    """Run the demo qBittorrent beside Warden; download_processor uses it while this context is open."""
    if "download_processor" not in warden.registry.daemons:
        yield  # nobody to use it
        return
    announce(warden, "qbittorrent", "A demo qBittorrent is starting.")
    demo = (warden.settings.paths.data_dir / "demo").resolve()
    library = demo / "videos" / "downloads"  # inside the demo Stash's library
    await asyncio.to_thread(library.mkdir, parents=True, exist_ok=True)
    # The demo's own settings lie under the file's; its destination (the demo library) over them.
    defaults = {"daemons": {"download_processor": DEMO_SETTINGS}}
    destination = {"download_processor": {"destination": str(library)}}
    nox = QbittorrentNox(demo / "qbittorrent")
    await asyncio.to_thread(shutil.rmtree, nox.profile, ignore_errors=True)  # a fresh profile every run
    try:
        await nox.start()
    except (NoxMissing, NoxFailed) as error:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the daemon shows it plainly
        await warden.config.add_overlay(
            Overlay(defaults=defaults, overrides={"qbittorrent": {"url": url}, "daemons": destination})
        )
        reason = "qbittorrent-nox is not installed (apt-get install qbittorrent-nox)"
        if isinstance(error, NoxFailed):
            reason = f"qbittorrent-nox did not start ({str(error).splitlines()[0]})"
        announce(warden, "qbittorrent", f"No demo qBittorrent: {reason}, so download_processor has none to reach.")
        logger.warning("demo mode without qBittorrent", reason=reason)
        yield
        return
    try:
        qbittorrent = {"url": nox.url, "username": nox.username, "password": nox.password}
        await warden.config.add_overlay(
            Overlay(defaults=defaults, overrides={"qbittorrent": qbittorrent, "daemons": destination})
        )
        sentence = f"A demo qBittorrent at {nox.url} seeds “{DEMO_DOWNLOAD}” for download_processor."
        announce(warden, "qbittorrent", sentence)
        logger.info("demo mode: qbittorrent-nox running", qbittorrent=nox.url, profile=str(nox.profile))
        seeding = asyncio.create_task(_seed(nox, demo / "downloads", warden, sentence), name="demo-download")
        try:
            yield
        finally:
            seeding.cancel()
            await asyncio.gather(seeding, return_exceptions=True)
    finally:
        await nox.stop()


async def _seed(nox: QbittorrentNox, downloads: Path, warden: Warden, sentence: str) -> None:
    """Make the demo download and add it, finished, to qBittorrent. Never raises: the banner says what failed."""
    client = QbittorrentClient(nox.url, nox.username, nox.password, 30)
    try:
        torrent = await asyncio.to_thread(_make_download, downloads / DEMO_DOWNLOAD)
        await client.add_torrent(torrent, str(downloads), category=DEMO_CATEGORY)
        logger.info("demo download added", download=DEMO_DOWNLOAD)
    except Exception as error:  # anything at all: the demo is never worth stopping Warden for
        logger.error("demo download not added", error=f"{type(error).__name__}: {error}")
        announce(warden, "qbittorrent", f"{sentence} Its download could not be made: {error}")
    finally:
        client.close()


def _make_download(folder: Path) -> bytes:
    """Two clips, a sample too small to keep, and a text file: a typical release folder. Its torrent."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = [("Part 1.mp4", 320, 180, 5.0, 1), ("Part 2.mp4", 480, 270, 8.0, 2)]
    for name, width, height, duration, cuts in clips:
        if not (folder / name).exists():
            make_video(folder / name, width=width, height=height, duration=duration, cuts=cuts)
    sample = folder / "Sample" / "sample.mp4"
    if not sample.exists():
        sample.parent.mkdir(exist_ok=True)
        make_video(sample, width=32, height=18, duration=0.2, fps=5)
    (folder / f"{DEMO_DOWNLOAD}.nfo").write_text("Generated by Warden's demo mode.\n", encoding="utf-8")
    torrent = torf.Torrent(path=folder, private=True, created_by="Warden demo")
    torrent.generate()
    data: bytes = torrent.dump()
    return data
