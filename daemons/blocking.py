"""BlockingConnection: a synchronous client library's connection, used from asyncio.

stashapi and qbittorrent-api are built on requests: every call blocks, and their sessions
are not meant to be shared between threads. Here one thread owns the connection; each call
runs there under a hard timeout, so a server that accepts and never answers cannot hold a
daemon. After a timeout the thread and the connection are replaced whole: the stuck one
finishes (or times out) on its own while later calls go to the new one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

C = TypeVar("C")
T = TypeVar("T")

_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class BlockingConnection(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], C],
        disconnect: Callable[[C], None],
        timeout: float,
        thread_name: str,
        *,
        translate: Callable[[Exception], Exception],
        reconnect_after: tuple[type[Exception], ...],
    ) -> None:
        self._connect = connect
        self._disconnect = disconnect
        self._timeout = timeout
        self._thread_name = thread_name
        self._translate = translate
        self._reconnect_after = reconnect_after
        self._worker = _Worker(connect, disconnect, thread_name)

    async def call(self, request: Callable[[C], T]) -> T:
        """Run `request(connection)` in the connection's thread, connecting first when needed.

        Every failure is raised as `translate(error)` (a hard timeout as `translate(TimeoutError())`);
        after one of the `reconnect_after` kinds the next call connects afresh.
        """
        worker = self._worker
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.get_running_loop().run_in_executor(worker.executor, worker.run, request)
        except TimeoutError:
            if worker is self._worker:
                self._worker = _Worker(self._connect, self._disconnect, self._thread_name)
                worker.close()
            raise self._translate(TimeoutError()) from None
        except Exception as error:
            failure = self._translate(error)
            if isinstance(failure, self._reconnect_after):
                worker.forget()  # the server may have restarted, or the credentials changed
            raise failure from None

    def close(self) -> None:
        """Disconnect in the background; calls already queued still run. Never blocks."""
        self._worker.close()


class _Worker(Generic[C]):
    """One thread and the connection only it uses."""

    def __init__(self, connect: Callable[[], C], disconnect: Callable[[C], None], thread_name: str) -> None:
        self._connect = connect
        self._disconnect = disconnect
        self._connection: C | None = None
        self._closed = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    def run(self, request: Callable[[C], T]) -> T:
        if self._connection is None:
            self._connection = self._connect()
        return request(self._connection)

    def forget(self) -> None:
        if not self._closed:
            self.executor.submit(self._drop)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.executor.submit(self._drop)
            self.executor.shutdown(wait=False)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._disconnect(connection)


def failure_reason(error: BaseException) -> str:
    """The OS-level reason inside requests' wrapped errors ("Connection refused")."""
    match = _ERRNO_TEXT.search(str(error))
    return match.group(1).strip() if match else type(error).__name__
