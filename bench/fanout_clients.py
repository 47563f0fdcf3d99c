"""The WebSocket clients of bench.fanout: many in one process, and the one that never reads.

A client process connects its share of the clients to the server's `Address`, each waiting
until the server has it subscribed (Warden: the snapshot; the baseline: every subscription
confirmed), says how many are ready, then reads. For each status message it records the
receipt time minus the time the daemon stamped into the message (the same machine's wall
clock), by step. The pipe asks for the count so far (to know when a step has drained) and
for a step's latencies.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import os
import re
import resource
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from urllib.parse import urlsplit

import aiohttp

#: A status message the load made: "bench <step> <wall-clock ns> <daemon>.<n>".
STAMP = re.compile(r'"bench (\d+) (\d+)')
CONNECTING_AT_ONCE = 50  # the server's listen backlog is 128
CONNECT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Address:
    """How clients reach the server's WebSocket, and what they must send to get every daemon's status."""

    url: str
    headers: dict[str, str]
    subscribe: list[str]  # baseline: the daemon ids to subscribe to; Warden sends everything


@dataclass
class Tally:
    """What this process's clients received, per step."""

    latencies_ms: defaultdict[int, array.array[float]]
    received: int = 0
    closed: int = 0  # connections the server ended while the benchmark ran

    def take(self, text: str) -> None:
        match = STAMP.search(text)
        if match is not None:
            latency = (time.time_ns() - int(match[2])) / 1e6
            self.latencies_ms[int(match[1])].append(latency)
            self.received += 1


async def connect(session: aiohttp.ClientSession, address: Address) -> aiohttp.ClientWebSocketResponse:
    """Connect and wait until subscribed: Warden's snapshot, or the baseline's confirmation of every daemon."""
    live = await session.ws_connect(address.url, headers=address.headers, max_msg_size=0)
    for daemon_id in address.subscribe:
        await live.send_json({"command": "subscribe", "daemon_id": daemon_id})
    awaited = "subscription_confirmed" if address.subscribe else "snapshot"
    remaining = len(address.subscribe) or 1
    while remaining:
        message = await live.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"the server ended the connection while subscribing: {message}")
        if json.loads(message.data).get("type") == awaited:
            remaining -= 1
    return live


async def read(live: aiohttp.ClientWebSocketResponse, tally: Tally, stopping: asyncio.Event) -> None:
    async for message in live:
        if message.type is aiohttp.WSMsgType.TEXT:
            tally.take(message.data)
    if not stopping.is_set():
        tally.closed += 1


async def run(address: Address, count: int, control: Connection) -> None:
    tally = Tally(defaultdict(lambda: array.array("f")))
    stopping = asyncio.Event()
    limit = asyncio.Semaphore(CONNECTING_AT_ONCE)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with limit:
                return await connect(session, address)

        async with asyncio.timeout(CONNECT_TIMEOUT):
            connections = await asyncio.gather(*(one() for _ in range(count)))
        readers = [asyncio.create_task(read(live, tally, stopping)) for live in connections]
        loop = asyncio.get_running_loop()
        loop.add_reader(control.fileno(), answer, control, tally, stopping)
        control.send(count)
        try:
            await stopping.wait()
        finally:
            loop.remove_reader(control.fileno())
            await asyncio.gather(*(live.close() for live in connections), return_exceptions=True)
            await asyncio.gather(*readers, return_exceptions=True)


def answer(control: Connection, tally: Tally, stopping: asyncio.Event) -> None:
    """One request from bench.fanout: "count", ("take", step), or None to stop (so does a closed pipe)."""
    try:
        request = control.recv()
    except EOFError:
        request = None
    if request is None:
        stopping.set()
    elif request == "count":
        control.send((tally.received, tally.closed, time.process_time()))
    else:
        _, step = request
        control.send(tally.latencies_ms.pop(step, array.array("f")).tobytes())


def raise_open_files_limit() -> None:
    """A thousand sockets need more descriptors than some default soft limits allow."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def clients(address: Address, count: int, control: Connection) -> None:
    """The process's entry point."""
    raise_open_files_limit()
    asyncio.run(run(address, count, control))


# -- the client that never reads ------------------------------------------------------------

KEEPALIVE = 5.0  # seconds between the silent client's pings; the servers' heartbeats ping after 20 s of silence


class SilentClient:
    """A connected, subscribed WebSocket that is never read, with a receive buffer as small as the
    kernel allows. It sends a ping now and then, as a page whose tab is stuck would, so that it
    is never taken for dead: what happens is up to the server's handling of a client that does
    not read. `close` ends it (the server then sees a reset)."""

    def __init__(self, address: Address) -> None:
        self.sock = _handshake(address)
        for daemon_id in address.subscribe:
            self.sock.sendall(masked_text_frame(json.dumps({"command": "subscribe", "daemon_id": daemon_id}).encode()))
        self._closed = threading.Event()
        self._pinger = threading.Thread(target=self._keep_alive, name="silent-client", daemon=True)
        self._pinger.start()

    def _keep_alive(self) -> None:
        ping = masked_text_frame(b'{"type": "ping"}')
        while not self._closed.wait(KEEPALIVE):
            try:
                self.sock.sendall(ping)
            except OSError:
                return  # the server ended the connection

    def close(self) -> None:
        self._closed.set()
        self._pinger.join()
        self.sock.close()


def _handshake(address: Address) -> socket.socket:
    parts = urlsplit(address.url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((parts.hostname, parts.port))
    headers = "".join(f"{name}: {value}\r\n" for name, value in address.headers.items())
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n".encode()
    )
    response = sock.recv(4096)
    if not response.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"WebSocket handshake refused: {response[:200]!r}")
    return sock


def masked_text_frame(payload: bytes) -> bytes:
    """A client's text frame (RFC 6455 §5.2: clients mask what they send); payloads under 126 bytes."""
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
