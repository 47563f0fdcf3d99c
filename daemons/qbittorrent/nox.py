"""QbittorrentNox: a qbittorrent-nox of Warden's own, for the tests and demo mode.

    async with QbittorrentNox(tmp_path / "qbt") as nox:
        ...  # nox.url, nox.username, nox.password; torrents save to nox.downloads by default

It listens on 127.0.0.1 only and makes no outside traffic: no DHT, LSD, PeX, UPnP/NAT-PMP,
GeoIP download or added trackers. The profile folder is its own; the config file in it is
rewritten on every start, everything else (torrents, fastresume data, the log) is kept, so
`restart()` brings the same torrents back on the same ports. It runs in a process group of
its own, stopped by `stop()` (see daemons/children.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import aiohttp

from daemons import children
from daemons.children import HOST, free_port

__all__ = ["HOST", "NoxFailed", "NoxMissing", "QbittorrentNox", "free_port", "password_hash"]

logger = logging.getLogger(__name__)

EXECUTABLE = "qbittorrent-nox"
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 20


class NoxMissing(RuntimeError):
    """qbittorrent-nox is not installed."""


class NoxFailed(RuntimeError):
    """qbittorrent-nox did not come up (message includes the tail of its log file)."""


def password_hash(password: str) -> str:
    """The '@ByteArray(salt:key)' value qBittorrent 4.5 keeps in WebUI\\Password_PBKDF2."""
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100_000, dklen=64)
    return f"@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()})"


def _ini_string(text: str) -> str:
    """A QSettings INI string value: quoted, with a leading '@' doubled so it is not read as a type tag."""
    if text.startswith("@"):
        text = "@" + text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class QbittorrentNox(children.Child):
    name = EXECUTABLE

    def __init__(self, profile: Path, *, username: str = "admin", password: str | None = None) -> None:
        self.profile = profile
        self.username = username
        self.password = secrets.token_urlsafe(16) if password is None else password
        self.downloads = profile / "downloads"
        self.webui_port: int | None = None  # chosen on first start, kept across restarts
        self.torrent_port: int | None = None

    def __repr__(self) -> str:
        return f"<QbittorrentNox {self.profile} port={self.webui_port} pid={self.pid}>"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    @property
    def config_file(self) -> Path:
        return self.profile / "qBittorrent" / "config" / "qBittorrent.conf"

    @property
    def log_file(self) -> Path:
        return self.profile / "qBittorrent" / "data" / "logs" / "qbittorrent.log"

    async def start(self, timeout: float = 20) -> None:
        """Start it and return once it accepts our login; NoxFailed if it does not within `timeout`."""
        if self.running:
            raise RuntimeError(f"{self!r} is already started")
        executable = shutil.which(EXECUTABLE)
        if executable is None:
            raise NoxMissing(f"{EXECUTABLE} is not on PATH; install it with `apt-get install qbittorrent-nox`")
        if self.webui_port is None:
            self.webui_port = free_port()
        if self.torrent_port is None:
            self.torrent_port = free_port(besides=(self.webui_port,))
        self._write_config()

        started = time.monotonic()
        self._process = await children.spawn(
            executable,
            f"--profile={self.profile}",
            # With no TTY on stdin/stdout, 4.5.2 skips its legal-notice prompt (accepted in the config too).
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(timeout):
                problem = await self._wait_ready(self._process)
        except TimeoutError:
            problem = f"it did not accept a login within {timeout:g} s"
        except BaseException:
            await self.stop()
            raise
        if problem is not None:
            await self.stop()  # first, so the log file is complete
            tail = children.log_tail(self.log_file, LOG_TAIL_LINES)
            raise NoxFailed(f"{EXECUTABLE} did not come up at {self.url}: {problem}\n{tail}")
        logger.info("%s %d ready at %s in %.2f s", EXECUTABLE, self.pid, self.url, time.monotonic() - started)

    async def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL after `timeout`; does nothing if it is not running."""
        await self._end(timeout)

    async def restart(self) -> None:
        """Stop and start again on the same ports and profile."""
        await self.stop()
        await self.start()

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> str | None:
        """Log in until it works (None) or cannot work (what went wrong); refused connections mean not yet."""
        form = {"username": self.username, "password": self.password}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while process.returncode is None:
                try:
                    async with session.post(f"{self.url}/api/v2/auth/login", data=form) as response:
                        answer = await response.text()
                except (aiohttp.ClientConnectionError, TimeoutError):
                    await asyncio.sleep(POLL_INTERVAL)
                    continue
                if response.status == 200 and answer == "Ok.":
                    return None
                # Whatever answers on the port refuses our credentials, so it is not our qbittorrent-nox.
                return f"the login answered {response.status} {answer[:200]!r}"
        return f"it exited with status {process.returncode}"

    def _write_config(self) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.downloads.mkdir(parents=True, exist_ok=True)
        # Key names are those of qBittorrent 4.5.2. Besides keeping every socket on loopback:
        # PortForwardingEnabled and WebUI\UseUPnP default to on; ResolvePeerCountries downloads a
        # GeoIP database; a MaxAuthenticationFailCount of 0 turns off the WebUI's ban of an address
        # after failed logins, which would lock out tests that try wrong passwords.
        self.config_file.write_text(
            rf"""[LegalNotice]
Accepted=true

[Network]
PortForwardingEnabled=false

[BitTorrent]
Session\DHTEnabled=false
Session\LSDEnabled=false
Session\PeXEnabled=false
Session\AnonymousModeEnabled=true
Session\AddTrackersEnabled=false
Session\Interface=lo
Session\InterfaceName=lo
Session\InterfaceAddress={HOST}
Session\Port={self.torrent_port}
Session\DefaultSavePath={_ini_string(str(self.downloads))}
Session\QueueingSystemEnabled=false

[Preferences]
WebUI\Address={HOST}
WebUI\Port={self.webui_port}
WebUI\UseUPnP=false
WebUI\Username={_ini_string(self.username)}
WebUI\Password_PBKDF2="{password_hash(self.password)}"
WebUI\LocalHostAuth=true
WebUI\MaxAuthenticationFailCount=0
Connection\ResolvePeerCountries=false
General\Locale=en
""",
            encoding="utf-8",
        )
