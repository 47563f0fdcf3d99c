"""WebSocket clients for tests/test_load.py, in a process of their own, driven over a pipe.

`followers`: connects `count` clients (each until its snapshot, as bench.fanout's clients do),
says how many are connected, then reads everything. Every client keeps the message of the last
`daemon` state it received, per daemon. Asked ("finals", {daemon: message}, timeout), it waits
until every client holds those final messages, or the timeout, and answers how many
(client, daemon) pairs do not, and how many connections the server ended.

`churn`: asked ("churn", total), it makes `total` connections, CONNECTING_AT_ONCE at a time. A third
wait for the snapshot and close properly; a third wait for it and drop the TCP connection without
a close frame (a tab killed, a laptop lid shut); a third drop it as soon as the upgrade is
answered, while the server is still sending. It answers how many of them failed.

`client_processes` is the test's side: the processes, and requests that wait in threads, so that
the Warden the test runs in its own event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bench.fanout import started
from bench.fanout_clients import CONNECT_TIMEOUT, CONNECTING_AT_ONCE, Address, connect, raise_open_files_limit

Handler = Callable[[Any], Any]  # a request from the pipe -> its answer (awaited when a coroutine)


# -- the test's side ---------------------------------------------------------------------------


class ClientProcesses:
    def __init__(self, pipes: list[Connection]) -> None:
        self._pipes = pipes

    async def ask(self, request: Any, timeout: float) -> list[Any]:
        """Send a request to every process and wait (in threads: the server runs in this event loop)
        for their answers."""
        return list(
            await asyncio.gather(*(asyncio.to_thread(_exchange, pipe, request, timeout) for pipe in self._pipes))
        )


def _exchange(pipe: Connection, request: Any, timeout: float) -> Any:
    pipe.send(request)
    if not pipe.poll(timeout):
        raise TimeoutError(f"a client process did not answer {request!r} within {timeout:g} s")
    return pipe.recv()


@asynccontextmanager
async def client_processes(target: Callable[..., None], *arguments: tuple[Any, ...]) -> AsyncIterator[ClientProcesses]:
    """bench.fanout's `started` processes, started and stopped in threads, so that the server in this
    event loop answers the clients connecting and closing meanwhile."""
    with ExitStack() as stack:
        pipes = await asyncio.to_thread(stack.enter_context, started(target, arguments))
        try:
            yield ClientProcesses(pipes)
        finally:
            await asyncio.to_thread(stack.close)


# -- the client process ------------------------------------------------------------------------


def followers(address: Address, count: int, control: Connection) -> None:
    """Entry point: `count` clients that keep the last state of every daemon."""
    raise_open_files_limit()
    asyncio.run(_followers(address, count, control))


def churn(address: Address, control: Connection) -> None:
    """Entry point: connections made and dropped on request."""
    raise_open_files_limit()
    asyncio.run(_churn(address, control))


async def _serve(control: Connection, handle: Handler) -> None:
    """Answer requests from the pipe until None (or the pipe closes)."""
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[Any] = asyncio.Queue()

    def receive() -> None:
        try:
            requests.put_nowait(control.recv())
        except EOFError:
            requests.put_nowait(None)

    loop.add_reader(control.fileno(), receive)
    try:
        while (request := await requests.get()) is not None:
            answer = handle(request)
            control.send(await answer if asyncio.iscoroutine(answer) else answer)
    finally:
        loop.remove_reader(control.fileno())


@dataclass
class Followers:
    """What every client saw: seen[i][daemon] is client i's last message of that daemon."""

    seen: list[dict[str, str]]
    closed: int = 0  # connections the server ended
    expected: dict[str, str] = field(default_factory=dict)
    missing: set[tuple[int, str]] = field(default_factory=set)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, client: int, text: str) -> None:
        message = json.loads(text)
        if message["type"] != "daemon":
            return
        name, status = message["daemon"]["name"], message["daemon"]["message"]
        self.seen[client][name] = status
        if self.expected.get(name) == status:
            self.missing.discard((client, name))
            if not self.missing:
                self.complete.set()

    async def finals(self, expected: dict[str, str], timeout: float) -> tuple[int, int]:
        """Wait until every client holds `expected` (or `timeout`): (pairs still missing, connections closed)."""
        self.expected = expected
        self.missing = {
            (client, name)
            for client, seen in enumerate(self.seen)
            for name, message in expected.items()
            if seen.get(name) != message
        }
        self.complete.clear()
        if self.missing:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.complete.wait(), timeout)
        return len(self.missing), self.closed


async def _followers(address: Address, count: int, control: Connection) -> None:
    state = Followers([{} for _ in range(count)])
    stopping = asyncio.Event()
    limit = asyncio.Semaphore(CONNECTING_AT_ONCE)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with limit:
                return await connect(session, address)

        async def follow(client: int, live: aiohttp.ClientWebSocketResponse) -> None:
            async for message in live:
                if message.type is aiohttp.WSMsgType.TEXT:
                    state.take(client, message.data)
            if not stopping.is_set():
                state.closed += 1

        async with asyncio.timeout(CONNECT_TIMEOUT):
            connections = await asyncio.gather(*(one() for _ in range(count)))
        readers = [asyncio.create_task(follow(i, live)) for i, live in enumerate(connections)]
        control.send(count)
        try:
            await _serve(control, lambda request: state.finals(*request[1:]))
        finally:
            stopping.set()
            await asyncio.gather(*(live.close() for live in connections), return_exceptions=True)
            await asyncio.gather(*readers, return_exceptions=True)


async def _churn(address: Address, control: Connection) -> None:
    limit = asyncio.Semaphore(CONNECTING_AT_ONCE)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:

        async def one(n: int) -> bool:
            async with limit:
                try:
                    if n % 3 == 2:  # gone at once after the upgrade, while the server sends hello and snapshot
                        live = await session.ws_connect(address.url, headers=address.headers)
                    else:
                        live = await connect(session, address)
                except (aiohttp.ClientError, ConnectionError):
                    return False
                if n % 3 == 0:
                    await live.close()
                else:  # gone without a close frame; then wait until the server lets go too
                    live.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
                    async for _ in live:
                        pass
                return True

        async def round_of(total: int) -> int:
            async with asyncio.timeout(CONNECT_TIMEOUT * 10):
                done = await asyncio.gather(*(one(n) for n in range(total)))
            return total - sum(done)

        control.send("ready")
        await _serve(control, lambda request: round_of(request[1]))
