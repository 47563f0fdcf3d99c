"""QbittorrentNox against the real qbittorrent-nox: login, loopback only, a torrent that completes, stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from daemons import children
from daemons.qbittorrent.client import AT_REST
from daemons.qbittorrent.nox import NoxFailed, NoxMissing, QbittorrentNox
from tests.qbtfixtures import add_torrent, make_torrent, nox, torrent_info, webui_session
from tests.webharness import eventually

__all__ = ["nox"]  # the fixture: imported for pytest to find, and used by name only

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
TCP_LISTEN = "0A"
# With skip_checking, progress is 1 from the start, while content_path is still relative: wait for seeding too.


async def login(nox: QbittorrentNox, password: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{nox.url}/api/v2/auth/login", data={"username": nox.username, "password": password}) as response,
    ):
        return await response.text()


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    return inodes


def proc_net_address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """'0100007F:1F90', or the 32-digit IPv6 form, from /proc/net/*: each 32-bit word is in host order."""
    host, port = hex_address.split(":")
    raw = b"".join(int(host[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(host), 8))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, int(port, 16)
    return address, int(port, 16)


def bound_sockets(pid: int) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(protocol, address, port) of the process's listening TCP sockets and all of its UDP sockets."""
    inodes = socket_inodes(pid)
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        rows = Path(f"/proc/{pid}/net/{protocol}").read_text().splitlines()[1:]
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in inodes and (protocol.startswith("udp") or state == TCP_LISTEN):
                found.append((protocol, *proc_net_address(local)))
    return found


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_logs_in_with_its_generated_password_and_refuses_a_wrong_one(nox: QbittorrentNox) -> None:
    assert nox.running
    assert len(nox.password) >= 16
    assert await login(nox, nox.password) == "Ok."
    # More wrong passwords than qBittorrent's default ban threshold (5): the ban is off, so the right one still works.
    for _ in range(8):
        assert await login(nox, "adminadmin") == "Fails."
    assert await login(nox, nox.password) == "Ok."


async def test_listens_on_loopback_only_with_discovery_and_upnp_off(nox: QbittorrentNox) -> None:
    assert nox.pid is not None
    sockets = bound_sockets(nox.pid)
    expected = {("tcp", nox.webui_port), ("tcp", nox.torrent_port), ("udp", nox.torrent_port)}  # udp: uTP
    assert expected <= {(protocol, port) for protocol, _, port in sockets}
    assert [entry for entry in sockets if entry[1] != LOOPBACK] == []

    async with webui_session(nox) as session, session.get("/api/v2/app/preferences") as response:
        preferences = await response.json()
    flags = {key: preferences[key] for key in ("dht", "lsd", "pex", "upnp", "web_ui_upnp")}
    assert flags == dict.fromkeys(flags, False)
    assert preferences["web_ui_address"] == "127.0.0.1"
    assert preferences["current_interface_address"] == "127.0.0.1"


async def test_a_torrent_of_a_local_file_completes(nox: QbittorrentNox, tmp_path: Path) -> None:
    clip = tmp_path / "media" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(os.urandom(1 << 20))
    torrent, infohash = make_torrent(clip)

    async with webui_session(nox) as session:
        await add_torrent(session, torrent, clip.parent, category="stash")

        async def complete() -> bool:
            info = await torrent_info(session, infohash)
            return info is not None and info["progress"] == 1 and info["state"] in AT_REST

        await eventually(complete, timeout=30, poll=0.05)
        info = await torrent_info(session, infohash)
    assert info is not None
    assert (info["category"], info["content_path"], info["save_path"]) == ("stash", str(clip), str(clip.parent))


async def test_stop_ends_the_process_and_restart_brings_it_back_with_its_torrents(
    nox: QbittorrentNox, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(os.urandom(1 << 16))
    torrent, infohash = make_torrent(clip, name="renamed.mp4")
    async with webui_session(nox) as session:
        await add_torrent(session, torrent, tmp_path)
        info = await torrent_info(session, infohash)
    assert info is not None
    assert info["name"] == "renamed.mp4"
    pid, url = nox.pid, nox.url
    assert pid is not None

    await nox.stop()
    assert not nox.running
    assert nox.pid is None
    assert not pid_exists(pid)
    await nox.stop()  # idempotent

    await nox.restart()
    assert nox.running
    assert nox.url == url
    async with webui_session(nox) as session:
        assert await torrent_info(session, infohash) is not None


async def test_a_taken_webui_port_fails_with_the_end_of_its_log(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:  # accepts connections, never answers
        nox = QbittorrentNox(tmp_path / "qbt")
        nox.webui_port = squatter.getsockname()[1]
        with pytest.raises(NoxFailed, match="did not accept a login within 2 s") as failure:
            await nox.start(timeout=2)
    assert "Web UI: Unable to bind" in str(failure.value)
    assert not nox.running


async def test_a_cancelled_start_leaves_no_process_behind(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:  # so the start cannot finish on its own
        nox = QbittorrentNox(tmp_path / "qbt")
        nox.webui_port = squatter.getsockname()[1]
        starting = asyncio.create_task(nox.start())

        async def spawned() -> bool:
            return nox.pid is not None

        try:
            await eventually(spawned)
            pid = nox.pid
            starting.cancel()
            await asyncio.wait({starting})
            assert starting.cancelled()
            assert pid is not None
            assert not pid_exists(pid)
        finally:
            starting.cancel()
            await nox.stop()  # only matters if the test failed


async def test_a_missing_executable_raises_nox_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    nox = QbittorrentNox(tmp_path / "qbt")
    with pytest.raises(NoxMissing, match="apt-get install qbittorrent-nox"):
        await nox.start()
    assert not nox.running


class RepeatingProbe:
    """A probe socket that is handed the ports of `ports` in turn, as the kernel may hand one out twice."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports

    def __call__(self) -> RepeatingProbe:
        return self

    def __enter__(self) -> RepeatingProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self._ports.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


async def test_the_torrent_port_is_never_the_webui_port_even_when_the_kernel_repeats_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as first, socket.socket() as second:  # two free ports, told apart while both are held
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        webui, other = first.getsockname()[1], second.getsockname()[1]
    # Only the port choice sees the repeating probe (children's own name for the socket module).
    monkeypatch.setattr(children, "socket", SimpleNamespace(socket=RepeatingProbe([webui, webui, other])))
    nox = QbittorrentNox(tmp_path / "qbt")
    async with nox:
        assert (nox.webui_port, nox.torrent_port) == (webui, other)
        assert await login(nox, nox.password) == "Ok."
