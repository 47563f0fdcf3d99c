"""The live WebSocket of docs/protocol.md, with real clients (aiohttp, websockets) against a running Warden."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from yarl import URL

import supervisor
from supervisor.app import Warden
from tests.daemons_for_tests import Worker
from tests.webharness import (
    TOKEN,
    api_session,
    bearer,
    browser,
    call,
    config_text,
    daemon_of,
    eventually,
    metrics,
    running_warden,
)
from web import ws

Message = dict[str, Any]
Live = aiohttp.ClientWebSocketResponse
NUMBERED = ("daemon", "event", "system")  # the message types that carry a seq
FILLER = "x" * 4000  # long messages fill a socket fast (no client here negotiates compression)


class Other(Worker):
    """A second Worker under another name."""

    name = "other"
    title = "Other"


YAML = config_text("  worker:\n    interval: 3600\n  other:\n    interval: 3600\n")


@asynccontextmanager
async def warden_and_api(tmp_path: Path) -> AsyncIterator[tuple[Warden, aiohttp.ClientSession]]:
    async with running_warden(tmp_path, [Worker, Other], yaml=YAML) as warden, api_session(warden) as session:
        yield warden, session


@asynccontextmanager
async def live(session: aiohttp.ClientSession, query: str = "", **kwargs: Any) -> AsyncIterator[Live]:
    """An aiohttp WebSocket client on the session (its token or cookie)."""
    async with session.ws_connect(f"ws{query}", **kwargs) as client:
        yield client


async def receive(client: Live) -> Message:
    message = await client.receive()
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def read_until(client: Live, predicate: Callable[[Message], bool], timeout: float = 5.0) -> list[Message]:
    """Every message up to and including the first for which `predicate` holds."""
    messages: list[Message] = []
    async with asyncio.timeout(timeout):
        while not messages or not predicate(messages[-1]):
            messages.append(await receive(client))
    return messages


async def read_to_close(client: Live) -> list[Message]:
    """Every message until the server closes the connection."""
    messages = []
    while (message := await client.receive()).type is aiohttp.WSMsgType.TEXT:
        messages.append(json.loads(message.data))
    return messages


async def opening(client: Live) -> tuple[Message, Message]:
    """hello and the snapshot (or, after a resume, whatever comes first)."""
    hello = await receive(client)
    assert hello["type"] == "hello", hello
    return hello, await receive(client)


def seqs(messages: list[Message]) -> list[int]:
    return [m["seq"] for m in messages if m["type"] in NUMBERED]


def state_is(name: str, **fields: Any) -> Callable[[Message], bool]:
    """A `daemon` message for `name` whose state has these fields."""
    return lambda m: m["type"] == "daemon" and m["daemon"]["name"] == name and fields.items() <= m["daemon"].items()


def by_name(snapshot: Message) -> dict[str, Message]:
    return {d["name"]: d for d in snapshot["daemons"]}


def transitions(messages: list[Message]) -> list[tuple[str, str, str]]:
    events = [m["event"] for m in messages if m["type"] == "event" and m["event"]["kind"] == "transition"]
    return [(e["from_state"], e["to_state"], e["actor"]) for e in events]


async def ping(client: Live) -> list[Message]:
    """Send a ping and read up to its pong (what came before it is returned)."""
    await client.send_json({"type": "ping"})
    return await read_until(client, lambda m: m["type"] == "pong")


async def numbered_updates(warden: Warden, count: int, text: str) -> None:
    """`count` status updates of the worker, each flushed: each its own numbered change."""
    worker = daemon_of(warden, "worker")
    for n in range(count):
        await worker.update_status(f"{n} {text}")
        warden.hub.flush()


# -- the stream ------------------------------------------------------------------------------


async def test_hello_then_snapshot_then_every_change_in_order(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session), live(session) as client:
        hello, snapshot = await opening(client)
        assert hello == {"type": "hello", "protocol": 1, "server": supervisor.__version__, "boot": warden.boot_id}
        assert snapshot["type"] == "snapshot" and snapshot["seq"] == warden.hub.seq
        assert {d["name"]: d["state"] for d in snapshot["daemons"]} == {"worker": "running", "other": "running"}
        assert snapshot["daemons"][0]["enabled"] is True and snapshot["system"]["store"]["ok"] is True
        assert (await metrics(session))["warden_websocket_clients"] == 1

        await call(session, "POST", "api/daemons/worker/stop")
        await call(session, "POST", "api/daemons/worker/start")
        # A flush sends the new states first, then the events that led to them.
        messages = await read_until(client, lambda m: m["type"] == "event" and m["event"]["to_state"] == "running")
        assert any(state_is("worker", state="running", message="Round 1")(m) for m in messages)
        numbered = seqs(messages)
        assert numbered == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(numbered))), "no gaps"
        assert transitions(messages) == [
            ("running", "stopping", "user"),
            ("stopping", "stopped", "user"),
            ("stopped", "starting", "user"),
            ("starting", "running", "user"),
        ]
        for event in (m["event"] for m in messages if m["type"] == "event"):
            assert "id" not in event and event["daemon"] == "worker" and event["at"] > 0


async def test_resume_after_a_disconnect_gets_exactly_the_missed_changes(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session):
        async with live(session) as first:
            _, snapshot = await opening(first)
        await call(session, "POST", "api/daemons/worker/stop")
        await daemon_of(warden, "other").update_status("meanwhile")
        warden.hub.flush()
        missed = list(range(snapshot["seq"] + 1, warden.hub.seq + 1))
        async with live(session, f"?resume={snapshot['seq']}&boot={warden.boot_id}") as again:
            _, first_after = await opening(again)
            assert first_after["type"] != "snapshot"
            messages = [first_after, *await read_until(again, lambda m: m.get("seq") == missed[-1])]
            assert seqs(messages) == missed
            assert transitions(messages) == [("running", "stopping", "user"), ("stopping", "stopped", "user")]
            assert any(state_is("other", message="meanwhile")(m) for m in messages)
            assert await ping(again) == [{"type": "pong"}], "nothing more than the missed changes"


async def test_resume_falls_back_to_a_snapshot_when_it_cannot_be_exact(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session):
        boot, start = warden.boot_id, warden.hub.seq
        for query in (f"?resume={start}&boot=another-boot", f"?resume={start + 50}&boot={boot}", "?resume=x"):
            async with live(session, query) as client:
                _, snapshot = await opening(client)
                assert snapshot["type"] == "snapshot" and snapshot["seq"] == warden.hub.seq, query

        # Push the start out of the hub's history (it holds the last 10,000 changes).
        await numbered_updates(warden, 10_050, "step")
        async with live(session, f"?resume={start}&boot={boot}") as client:
            _, snapshot = await opening(client)
            assert snapshot["type"] == "snapshot" and snapshot["seq"] == warden.hub.seq
            assert by_name(snapshot)["worker"]["message"] == "10049 step"

            # The same through the `resume` message on an open connection.
            now = warden.hub.seq
            await client.send_json({"type": "resume", "seq": now - 2, "boot": boot})
            replayed = await read_until(client, lambda m: m.get("seq") == now)
            assert seqs(replayed) == [now - 1, now]
            await client.send_json({"type": "resume", "seq": now - 2, "boot": "another-boot"})
            [again] = await read_until(client, lambda m: m["type"] == "snapshot")
            assert again["seq"] == now


async def test_log_lines_arrive_only_for_subscribed_daemons(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session), live(session) as client:
        await opening(client)

        async def logged(subscribe: list[str], unsubscribe: list[str], marker: str) -> list[tuple[str, str]]:
            """Change the subscription, log a line on each daemon, return the (daemon, line) that arrived."""
            await client.send_json({"type": "subscribe_logs", "daemons": subscribe})
            await client.send_json({"type": "unsubscribe_logs", "daemons": unsubscribe})
            await ping(client)  # the server has handled both messages
            for name in ("worker", "other"):
                daemon_of(warden, name).log.info(f"{marker} from {name}")
            warden.hub.flush()  # the lines are numbered before the marker state below
            await daemon_of(warden, "worker").update_status(marker)
            messages = await read_until(client, state_is("worker", message=marker))
            return [(m["daemon"], m["line"]["message"]) for m in messages if m["type"] == "log"]

        assert await logged([], [], "none") == []
        assert await logged(["worker"], [], "one") == [("worker", "one from worker")]
        assert await logged(["other"], [], "both") == [("worker", "both from worker"), ("other", "both from other")]
        assert await logged([], ["worker"], "other") == [("other", "other from other")]
        assert await logged([], ["other"], "neither") == []


async def test_log_message_shape(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session), live(session) as client:
        await opening(client)
        await client.send_json({"type": "subscribe_logs", "daemons": ["worker"]})
        await ping(client)
        daemon_of(warden, "worker").log.warning("low on space", free=3)
        [line] = await read_until(client, lambda m: m["type"] == "log")
        assert line["daemon"] == "worker"
        assert line["line"]["level"] == "warning" and line["line"]["message"] == "low on space"
        assert line["line"]["fields"] == {"free": 3} and line["line"]["at"] > 0


async def test_a_problem_reaches_clients_the_api_and_the_metrics_until_the_next_status(tmp_path):
    refused = "Cannot reach Stash: connection refused"
    async with warden_and_api(tmp_path) as (warden, session), live(session) as client:
        _, snapshot = await opening(client)
        assert by_name(snapshot)["worker"]["problem"] is False
        worker = daemon_of(warden, "worker")

        await worker.update_status(refused, problem=True)
        await read_until(client, state_is("worker", message=refused, problem=True))
        assert (await call(session, "GET", "api/daemons/worker"))["problem"] is True
        samples = await metrics(session)
        assert samples['warden_daemon_problem{daemon="worker"}'] == 1
        assert samples['warden_daemon_problem{daemon="other"}'] == 0

        await worker.update_status("Connected to Stash")
        await read_until(client, state_is("worker", message="Connected to Stash", problem=False))
        assert (await call(session, "GET", "api/daemons/worker"))["problem"] is False
        assert (await metrics(session))['warden_daemon_problem{daemon="worker"}'] == 0


# -- slow and stuck clients -----------------------------------------------------------------------


@asynccontextmanager
async def stalled_client(warden: Warden, query: str = "") -> AsyncIterator[ClientConnection]:
    """A client that reads nothing until `read_again`: tiny receive buffer, no compression, so data piles up."""
    url = URL(warden.url or "")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (url.host, url.port))
    client = await connect(
        f"ws://{url.host}:{url.port}/ws{query}",
        sock=raw,
        additional_headers=bearer(),
        compression=None,
        max_queue=1,
        ping_interval=None,
    )
    try:
        yield client
    finally:
        client.transport.abort()  # no closing handshake: the server may have cut it off


def read_again(client: ClientConnection) -> None:
    """Let the stalled client take its backlog quickly (a 4 KiB window makes TCP crawl)."""
    client.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)


def completes_at_once(call: Coroutine[Any, Any, None]) -> bool:
    """True when the coroutine finishes without ever suspending (so it waited for no I/O)."""
    try:
        call.send(None)
    except StopIteration:
        return True
    call.close()
    return False


async def flood(warden: Warden, count: int) -> str:
    """`count` status updates, letting the loop run after every tenth; returns the last message.

    Every update must return without suspending: it never waits for a client.
    """
    worker = daemon_of(warden, "worker")
    for n in range(count):
        assert completes_at_once(worker.update_status(f"{n} {FILLER}")), "update_status waited"
        if n % 10 == 9:
            await asyncio.sleep(0)  # the hub flushes and every connection's writer sends
    return f"{count - 1} {FILLER}"


async def metric_is(session: aiohttp.ClientSession, name: str, value: float) -> None:
    async def check() -> bool:
        return (await metrics(session)).get(name) == value

    await eventually(check)


async def test_a_stalled_client_delays_nobody_and_is_closed_with_1013(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(ws, "CLOSE_TIMEOUT", 30)  # time to read the backlog, however slow this machine
    async with (
        warden_and_api(tmp_path) as (warden, session),
        live(session) as watcher,
        stalled_client(warden) as stalled,
    ):
        await opening(watcher)
        last = f"19999 {FILLER}"
        watching = asyncio.create_task(read_until(watcher, state_is("worker", message=last), timeout=30))
        assert await flood(warden, 20_000) == last
        async with asyncio.timeout(2):  # the watcher kept up while the stalled client's socket was full
            await watching

        await metric_is(session, "warden_websocket_closed_slow_total", 1)
        # Reading again, the stalled client finds the close frame behind what was queued for it.
        read_again(stalled)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await stalled.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await metric_is(session, "warden_websocket_clients", 1)
        assert await ping(watcher) == [{"type": "pong"}], "the watcher is still served"


async def test_a_client_that_never_reads_again_is_cut_off_and_does_not_hold_up_shutdown(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "SEND_TIMEOUT", 0.3)
    monkeypatch.setattr(ws, "CLOSE_TIMEOUT", 0.3)
    async with asyncio.timeout(10):
        async with warden_and_api(tmp_path) as (warden, session), stalled_client(warden):
            await flood(warden, 20_000)
            await metric_is(session, "warden_websocket_closed_slow_total", 1)
            await metric_is(session, "warden_websocket_clients", 0)  # its handler ended: nothing is held for it


def connections_served(port: int) -> int:
    """Open sockets on local TCP port `port`, the listening one aside (from /proc/net). A socket
    the kernel still finishes sending after its owner closed it has no inode: it is not counted."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                count += int(local.rsplit(":", 1)[1], 16) == port and state != "0A" and inode != "0"  # 0A: listening
    return count


async def test_a_client_the_heartbeat_gives_up_on_is_cut_off_with_its_backlog(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "HEARTBEAT", 2.0)  # its first ping goes once the flood has filled the buffers
    monkeypatch.setattr(ws, "SEND_TIMEOUT", 600)  # so that only the heartbeat notices the client
    async with running_warden(tmp_path, [Worker, Other], yaml=YAML) as warden, stalled_client(warden):
        port = URL(warden.url or "").port
        assert port is not None and connections_served(port) == 1
        await flood(warden, 20_000)

        async def cut_off() -> bool:
            return connections_served(port) == 0

        # Closing alone would keep the socket open, holding what the client never read, until it reads.
        await eventually(cut_off, timeout=10)


async def test_a_client_that_falls_behind_gets_the_latest_state_and_a_gap(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "QUEUE_LINES", 5)
    async with warden_and_api(tmp_path) as (warden, session), live(session) as client:
        _, snapshot = await opening(client)
        await client.send_json({"type": "subscribe_logs", "daemons": ["worker"]})
        await ping(client)
        worker = daemon_of(warden, "worker")
        # No await in between: the connection's writer gets no turn until all of it is published.
        for n in range(20):
            assert completes_at_once(worker.update_status(f"step {n}"))
            worker.log.info(f"line {n}")
            warden.hub.flush()
        messages = await read_until(client, lambda m: m["type"] == "gap")
        assert [m["line"]["message"] for m in messages if m["type"] == "log"] == [f"line {n}" for n in range(15, 20)]
        [state] = [m for m in messages if m["type"] == "daemon"]
        assert state["daemon"]["message"] == "step 19", "the final state is never lost"
        assert state["seq"] == warden.hub.seq > snapshot["seq"] + 1, "a jump in seq: the states in between collapsed"
        assert messages[-1] == {"type": "gap", "dropped": 15}
        assert (await metrics(session))["warden_websocket_dropped_total"] == 15

        # Keeping up again, it sees every change.
        await worker.update_status("caught up")
        [after] = await read_until(client, state_is("worker", message="caught up"))
        assert after["seq"] == state["seq"] + 1


async def test_a_resume_that_takes_long_loses_nothing_published_meanwhile(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session):
        async with live(session) as first:
            _, snapshot = await opening(first)
        await numbered_updates(warden, 2_500, FILLER)  # ~10 MB to replay: more than the socket buffers hold
        async with stalled_client(warden, f"?resume={snapshot['seq']}&boot={warden.boot_id}") as slow:
            hello = json.loads(await slow.recv())
            assert hello["type"] == "hello"  # so the replay has started, and stopped on the full socket
            await daemon_of(warden, "other").update_status("during the replay")
            read_again(slow)
            async with asyncio.timeout(10):
                while not state_is("other", message="during the replay")(json.loads(await slow.recv())):
                    pass


# -- what clients send -----------------------------------------------------------------------------


async def test_invalid_messages_get_an_error_and_the_connection_stays(tmp_path):
    async with warden_and_api(tmp_path) as (_, session), live(session) as client:
        await opening(client)
        for invalid in (
            "{not json",
            json.dumps({"type": "dance"}),
            json.dumps([1, 2, 3]),
            json.dumps({"type": "subscribe_logs", "daemons": ["ghost"]}),
            json.dumps({"type": "subscribe_logs", "daemons": "worker"}),
            json.dumps({"type": "resume", "seq": "12", "boot": "x"}),
        ):
            await client.send_str(invalid)
            [error] = await read_until(client, lambda m: m["type"] == "error")
            assert error["message"], invalid
        await client.send_bytes(b"\x00\x01")
        [error] = await read_until(client, lambda m: m["type"] == "error")
        assert "binary" in error["message"]
        assert await ping(client) == [{"type": "pong"}]


async def test_an_oversized_message_closes_only_that_connection(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session), live(session) as bystander, live(session) as client:
        await opening(bystander)
        await opening(client)
        await client.send_str(json.dumps({"type": "ping", "pad": "x" * (64 * 1024)}))
        async with asyncio.timeout(5):
            await read_to_close(client)
        assert client.close_code == 1009
        await daemon_of(warden, "worker").update_status("still here")
        await read_until(bystander, state_is("worker", message="still here"))
        assert await ping(bystander) == [{"type": "pong"}]


# -- access and shutdown ------------------------------------------------------------------------------


async def test_the_handshake_needs_the_token_and_a_same_origin_page(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session):
        for token in (None, "wrong-token"):
            async with api_session(warden, token=token) as stranger:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await stranger.ws_connect("ws")
                assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect("ws", origin="http://evil.example")
        assert refused.value.status == 403
        own = str(URL(warden.url or "").origin())
        async with live(session, origin=own) as client:
            await opening(client)

        # A browser: the cookie from logging in is enough.
        async with browser(warden) as page:
            await call(page, "POST", "api/login", json={"token": TOKEN})
            async with live(page, origin=own) as client:
                _, snapshot = await opening(client)
                assert snapshot["type"] == "snapshot"


async def test_compression_offered_by_a_client_is_declined(tmp_path):
    # Deflating each small message costs the server more per client than the bytes it saves.
    async with running_warden(tmp_path, [Worker, Other], yaml=YAML) as warden:
        url = URL(warden.url or "")
        async with connect(f"ws://{url.host}:{url.port}/ws", additional_headers=bearer()) as client:
            assert "permessage-deflate" in (client.request.headers.get("Sec-WebSocket-Extensions") or "")
            assert client.response.headers.get("Sec-WebSocket-Extensions") is None
            assert json.loads(await client.recv())["type"] == "hello"


async def test_shutdown_shows_the_daemons_stopping_then_closes_with_1001(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "CLOSE_TIMEOUT", 0.5)
    # The clients outlive Warden, so that Warden is the one to close.
    async with asyncio.timeout(10), aiohttp.ClientSession(headers=bearer()) as outside, AsyncExitStack() as clients:
        async with running_warden(tmp_path, [Worker, Other], yaml=YAML) as warden:
            await clients.enter_async_context(stalled_client(warden))
            client = await outside.ws_connect(f"{warden.url}ws")
            reading = asyncio.create_task(read_to_close(client))
            await flood(warden, 20_000)  # the stalled client's socket is full when Warden stops
        messages = await reading
        assert client.close_code == 1001
        assert ("running", "stopping", "shutdown") in transitions(messages), "the page saw the daemons stop"
        assert [m["daemon"]["state"] for m in messages if m["type"] == "daemon"][-2:] == ["stopped", "stopped"]


# -- jobs ------------------------------------------------------------------------------------


async def test_job_progress_reaches_a_client_in_order(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session):
        step = asyncio.Event()

        async def work(context):
            for n in range(1, 6):
                context.progress(done=n, total=5, message=f"item {n} of 5")
                warden.hub.flush()  # each report its own numbered change
                await step.wait()
                step.clear()
            return "imported 5"

        job = await warden.jobs.launch("import", "all", work)
        async with live(session) as client:
            _, snapshot = await opening(client)
            assert [j["id"] for j in snapshot["jobs"]] == [job.id], "active jobs are part of the snapshot"
            received = []
            for expected in (40.0, 60.0, 80.0, 100.0):
                step.set()
                received += await read_until(
                    client, lambda m, p=expected: m["type"] == "job" and m["job"]["progress"] == p
                )
            step.set()
            received += await read_until(client, lambda m: m["type"] == "job" and m["job"]["status"] == "completed")
        jobs = [m for m in received if m["type"] == "job"]
        assert [m["job"]["items_done"] for m in jobs] == [2, 3, 4, 5, 5]
        assert seqs(jobs) == sorted(seqs(jobs)) and jobs[-1]["job"]["result"] == "imported 5"
        async with session.get(f"api/jobs/{job.id}") as reply:
            assert (await reply.json())["status"] == "completed"


async def test_values_json_does_not_know_never_stop_the_stream(tmp_path):
    async with warden_and_api(tmp_path) as (warden, session), live(session) as client:
        await opening(client)
        await client.send_json({"type": "subscribe_logs", "daemons": ["worker"]})
        await ping(client)
        daemon_of(warden, "worker").log.info("wrote a file", path=Path("/srv/x.mkv"))

        async def odd_result(job):
            return {"when": datetime.now(UTC), "where": Path("/srv")}

        job = await warden.jobs.launch("odd", "result", odd_result)
        await warden.jobs.wait(job)
        messages = await read_until(client, lambda m: m["type"] == "job" and m["job"]["status"] == "completed")
        assert any(m["type"] == "log" and m["line"]["fields"]["path"] == "/srv/x.mkv" for m in messages)
        await ping(client)  # the stream is still alive
        async with session.get(f"api/jobs/{job.id}") as reply:
            assert reply.status == 200 and (await reply.json())["result"]["where"] == "/srv"
