"""The live WebSocket (/ws): hello, snapshot, then deltas from the hub; see docs/protocol.md.

Only the handler task reads the socket; the connection's writer task sends every message (the
close at shutdown and aiohttp's heartbeat pings aside). The writer
takes batches from the client's own bounded hub subscription, so a slow client falls behind
alone (its states collapse, its lines are dropped with a `gap`), and a client whose send
stays blocked for `SEND_TIMEOUT` is closed with 1013 so that it resyncs. A client that does
not take even the close frame within `CLOSE_TIMEOUT` is cut off, so nothing waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

import supervisor
from supervisor.app import Warden
from supervisor.hub import Subscription
from supervisor.supervisor import Supervisor
from web import payload
from web.auth import same_origin
from web.keys import LIVE_STATS, SOCKETS, WARDEN, LiveStats

PROTOCOL = 1
MAX_MESSAGE = 64 * 1024
MAX_REPLIES = 100  # answers (pong, error) held for a client; more are dropped until it reads
QUEUE_LINES = 500  # events and log lines held per client before it counts as behind
SEND_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
HEARTBEAT = 20.0
logger = structlog.get_logger("warden.web")


@dataclass(eq=False)  # hashable by identity: the app keeps its connections in a WeakSet
class Connection:
    """One client: its socket, its subscription, and what its writer must send next."""

    socket: web.WebSocketResponse
    transport: asyncio.Transport | None
    warden: Warden
    subscription: Subscription
    stats: LiveStats
    last_seq: int = 0
    resync: tuple[int, str] | None = (-1, "")  # (seq, boot) to resume from; seq -1: a snapshot
    replies: list[dict[str, Any]] = field(default_factory=list)
    high_water: int = field(init=False, default=0)  # transport bytes past which a send may wait

    def __post_init__(self) -> None:
        if self.transport is not None:
            self.high_water = self.transport.get_write_buffer_limits()[1]

    def request(self, reply: dict[str, Any] | None = None, resync: tuple[int, str] | None = None) -> None:
        """Queue something for the writer (a reply, a resync) and wake it."""
        if reply is not None and len(self.replies) < MAX_REPLIES:  # a client that sends but never reads
            self.replies.append(reply)
        if resync is not None:
            self.resync = resync
        self.subscription.poke()

    async def write(self) -> None:
        """The only task that sends on this socket; a send blocked too long closes it (1013)."""
        try:
            await self._send(
                {"type": "hello", "protocol": PROTOCOL, "server": supervisor.__version__, "boot": self.warden.boot_id}
            )
            self.subscription.poke()  # the first round sends the snapshot (or the resumed deltas)
            while True:
                batch = await self.subscription.get()
                replies, self.replies = self.replies, []
                for reply in replies:
                    await self._send(reply)
                if self.resync is not None:
                    resync, self.resync = self.resync, None
                    await self._resync(*resync)
                for delta in batch.deltas:
                    if delta.kind == "log" or delta.seq > self.last_seq:
                        await self._send_frame(payload.wire(delta, self._supervisor))
                        self.last_seq = max(self.last_seq, delta.seq)
                if batch.dropped:
                    self.stats.dropped_lines_total += batch.dropped
                    await self._send({"type": "gap", "dropped": batch.dropped})
        except TimeoutError:
            self.stats.closed_stuck_total += 1
            logger.warning("closing a client that stopped reading", peer=self.socket.get_extra_info("peername"))
            await self.close(WSCloseCode.TRY_AGAIN_LATER, b"too slow; reconnect and resume")
        except ConnectionError:
            pass  # the client is gone (or was cut off): the handler's read loop ends too

    async def close(self, code: int, message: bytes) -> None:
        """Close with `code`; a client that has not taken the close frame within CLOSE_TIMEOUT is cut off."""
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                try:
                    await self.socket.close(code=code, message=message)
                    return
                except asyncio.CancelledError:
                    if task is not None and task.cancelling():
                        raise  # cancelled for real, or the timeout
                    # aiohttp's drain waiter is shared by the connection, and was cancelled with the send
                    # that timed out: the frame is queued all the same. Once the client has read it the
                    # connection closes and the handler cancels this wait.
                    await asyncio.sleep(CLOSE_TIMEOUT)
        except TimeoutError:
            pass
        # Neither aiohttp's close() nor closing the transport gives up on a client that reads nothing
        # (the heartbeat is off by then): abort, dropping what it never read; its read loop then ends.
        if self.transport is not None:
            self.transport.abort()

    @property
    def _supervisor(self) -> Supervisor:
        assert self.warden.supervisor is not None  # connections are served only once Warden runs
        return self.warden.supervisor

    async def _resync(self, seq: int, boot: str) -> None:
        hub = self.warden.hub
        hub.flush()  # number everything pending, so the snapshot and the stream meet exactly
        current = hub.seq  # what is published while this sends comes after: it must not be skipped
        missed = hub.since(seq) if seq >= 0 and boot == self.warden.boot_id else None
        if missed is None:
            daemons = [payload.daemon(status, self._supervisor) for status in hub.states.values()]
            jobs = [job.to_dict() for job in self.warden.jobs.active()] if self.warden.jobs else []
            snapshot = {"type": "snapshot", "seq": current, "daemons": daemons, "jobs": jobs, "system": hub.system}
            await self._send(snapshot)
        else:
            for delta in missed:
                await self._send_frame(payload.wire(delta, self._supervisor))
        self.last_seq = current

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_frame(payload.encode(message).encode())

    async def _send_frame(self, text: bytes) -> None:
        """Send one text message, already UTF-8 (encoded once for every client)."""
        # A send waits only once the transport holds more than its high-water mark. Below it, no
        # timer is armed: one per frame and client was a third of the fan-out's CPU time.
        if self.transport is not None and self.transport.get_write_buffer_size() + len(text) <= self.high_water:
            await self.socket.send_frame(text, WSMsgType.TEXT)
            return
        async with asyncio.timeout(SEND_TIMEOUT):
            await self.socket.send_frame(text, WSMsgType.TEXT)

    def handle(self, text: str) -> None:
        """One message from the client. Anything invalid gets an `error`; the connection stays."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested thousands deep
            self.request({"type": "error", "message": "not JSON"})
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            self.request({"type": "pong"})
        elif kind in ("subscribe_logs", "unsubscribe_logs"):
            self._change_logs(kind, message.get("daemons"))
        elif kind == "resume":
            seq, boot = message.get("seq"), message.get("boot")
            if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(boot, str):
                self.request({"type": "error", "message": "resume needs an integer seq and a boot id"})
            else:
                self.request(resync=(seq, boot))
        else:
            self.request({"type": "error", "message": f"unknown message type {kind!r}"})

    def _change_logs(self, kind: str, names: Any) -> None:
        known = self.warden.hub.states
        if not isinstance(names, list) or not all(isinstance(n, str) and n in known for n in names):
            self.request({"type": "error", "message": f"{kind} needs a list of daemon names"})
            return
        current = self.subscription.log_filter or frozenset()
        self.subscription.log_filter = current | set(names) if kind == "subscribe_logs" else current - set(names)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    if "Origin" in request.headers and not same_origin(request):
        raise web.HTTPForbidden(text='{"error": "cross-origin WebSocket refused"}', content_type="application/json")
    warden = request.app[WARDEN]
    # No permessage-deflate: it costs about 9 µs per small message and client, to save a
    # hundred bytes on a local network.
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_MESSAGE, compress=False)
    await socket.prepare(request)
    stats = request.app[LIVE_STATS]
    stats.connections_total += 1
    subscription = warden.hub.subscribe(max_lines=QUEUE_LINES, log_filter=frozenset())
    connection = Connection(socket, request.transport, warden, subscription, stats)
    connection.resync = _resume_from(request.query)
    request.app[SOCKETS].add(connection)
    writer = asyncio.create_task(connection.write(), name="ws-writer")
    try:
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                connection.handle(message.data)
            elif message.type is WSMsgType.BINARY:
                connection.request({"type": "error", "message": "binary frames are not understood; send JSON text"})
    finally:
        warden.hub.unsubscribe(subscription)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        request.app[SOCKETS].discard(connection)
        if socket.close_code == WSCloseCode.ABNORMAL_CLOSURE and connection.transport is not None:
            # The heartbeat gave up on the client and only closed the transport, which would then
            # hold what the client never read (and its kernel buffers) until it reads.
            connection.transport.abort()
    return socket


def _resume_from(query: Any) -> tuple[int, str]:
    try:
        return int(query["resume"]), str(query.get("boot", ""))
    except (KeyError, ValueError):
        return -1, ""


async def close_all(app: web.Application) -> None:
    """On shutdown: every client is told the server is going away (1001), all at once."""
    connections: weakref.WeakSet[Connection] = app[SOCKETS]
    await asyncio.gather(*(c.close(WSCloseCode.GOING_AWAY, b"Warden is shutting down") for c in list(connections)))
