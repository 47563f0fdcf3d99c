"""Child processes of Warden's own (qbittorrent-nox, the demo Stash): started, stopped, their log read.

Each child leads a process group of its own, so that stopping it reaches whatever it started
too, and a terminal's Ctrl-C reaches Warden alone, which stops its children in its own order
(the daemons first, while the services they use are still there). Stopping is SIGTERM to the
group, then SIGKILL after a bound; a stop that is itself interrupted kills the group at once,
so that no child outlives the code that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port(*, besides: Collection[int | None] = ()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, and none of `besides`.

    `besides` holds ports chosen but not yet bound: the kernel may hand the same one out again.
    """
    while True:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port not in besides:
            return port


async def spawn(program: str, *args: str, **options: Any) -> asyncio.subprocess.Process:
    """Start `program` as the leader of a new process group; `options` as for asyncio.create_subprocess_exec."""
    return await asyncio.create_subprocess_exec(program, *args, process_group=0, **options)


def signal_group(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    """Send `signum` to the process group `process` leads; nothing once it has exited (its id may be reused)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(process.pid, signum)


async def stop(process: asyncio.subprocess.Process, name: str, timeout: float) -> None:
    """SIGTERM to its group and wait; SIGKILL to the group if it is still there after `timeout` seconds."""
    try:
        signal_group(process, signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            logger.warning("%s %d ignored SIGTERM for %g s; killing it", name, process.pid, timeout)
            signal_group(process, signal.SIGKILL)
            await process.wait()
    except BaseException:
        signal_group(process, signal.SIGKILL)  # interrupted while waiting: it must not outlive us
        raise


class Child:
    """One child process: whether it runs, its pid, and `async with` for start and stop.

    A subclass starts it in `start()` (spawn, then wait until it serves) and stops it with `_end`.
    """

    name = "child"
    _process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def _end(self, timeout: float) -> asyncio.subprocess.Process | None:
        """Stop it (see `stop` above) if it was started; the process it was, if any."""
        process, self._process = self._process, None
        if process is not None:
            await stop(process, self.name, timeout)
        return process

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a child's log file, introduced by its path, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"The end of {path}:\n" + "\n".join(text[-lines:])
