"""StashDoubleProcess: the Stash double in a process of its own, as demo mode's Stash.

    async with StashDoubleProcess(api_key="secret", log_file=folder / "stash.log") as stash:
        ...  # stash.url; `await stash.exited()` returns if it ends by itself

It runs `python -m daemons.stash.double` on 127.0.0.1, on a free port it picks itself and
prints as its first line. The API key reaches it on stdin, never on its command line (which
`ps` shows) or in its environment. That pipe stays open while it runs and it stops by itself
when the pipe closes, so it does not outlive a Warden killed with SIGKILL. Its log goes to
`log_file`, rewritten at each start. Like qbittorrent-nox it leads a process group of its own
and is stopped with SIGTERM, then SIGKILL (daemons/children.py).

This module does not import the double: graphql-core and Stash's schema live in the child only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import daemons
from daemons import children

logger = logging.getLogger(__name__)

NAME = "stash double"
LOG_TAIL_LINES = 20
#: The folder holding the `daemons` package, put on the child's PYTHONPATH so that it runs this very code.
SOURCE_ROOT = Path(daemons.__file__).resolve().parent.parent


class DoubleFailed(RuntimeError):
    """The double did not come up (the message ends with the tail of its log)."""


class StashDoubleProcess(children.Child):
    name = NAME

    def __init__(
        self,
        *,
        api_key: str | None,
        log_file: Path,
        step_delay: float = 0.01,
        library_paths: Iterable[str | Path] = (),
    ) -> None:
        self.api_key = api_key
        self.log_file = log_file
        self.step_delay = step_delay
        self.library_paths = [str(path) for path in library_paths]
        self.url: str | None = None
        self._output: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<StashDoubleProcess {self.url} pid={self.pid}>"

    def command(self) -> list[str]:
        """Its command line: everything but the API key."""
        paths = [arg for path in self.library_paths for arg in ("--library-path", path)]
        options = ["--parent-pipe", "--port", "0", "--step-delay", f"{self.step_delay}", *paths]
        return [sys.executable, "-m", "daemons.stash.double", *options]

    async def start(self, timeout: float = 60) -> None:
        """Start it and return once it listens; DoubleFailed if it does not within `timeout` seconds."""
        if self.running:
            raise RuntimeError(f"{self!r} is already started")
        started = time.monotonic()
        await asyncio.to_thread(self.log_file.parent.mkdir, parents=True, exist_ok=True)
        python_path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
        with self.log_file.open("wb") as log:
            self._process = process = await children.spawn(
                *self.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=os.environ | {"PYTHONPATH": python_path},
            )
        assert process.stdin is not None and process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                process.stdin.write(f"{self.api_key or ''}\n".encode())
                await process.stdin.drain()
                line = await process.stdout.readline()
        except TimeoutError:
            problem: str | None = f"it printed no URL within {timeout:g} s"
        except (BrokenPipeError, ConnectionResetError):
            problem = f"it exited with status {await process.wait()}"
        except BaseException:
            await self.stop()
            raise
        else:
            self.url = line.decode(errors="replace").strip()
            problem = None if self.url.startswith("http://") else f"it exited with status {await process.wait()}"
        if problem is not None:
            await self.stop()  # first, so the log file is complete
            self.url = None
            tail = children.log_tail(self.log_file, LOG_TAIL_LINES)
            raise DoubleFailed(f"the Stash double did not come up: {problem}\n{tail}")
        self._output = asyncio.create_task(self._pass_on(process.stdout), name="stash-double-output")
        logger.info("%s %d ready at %s in %.2f s", NAME, process.pid, self.url, time.monotonic() - started)

    async def exited(self) -> int:
        """Wait until it ends (by itself, or stopped); its exit status."""
        if self._process is None:
            raise RuntimeError(f"{self!r} is not started")
        return await self._process.wait()

    async def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout`; does nothing if it is not running."""
        try:
            process = await self._end(timeout)
        finally:
            if self._output is not None:
                self._output.cancel()
                self._output = None
        if process is not None and process.stdin is not None:
            process.stdin.close()

    async def _pass_on(self, output: asyncio.StreamReader) -> None:
        """Whatever it prints after its URL (it should print nothing more) goes to the log, so the pipe never fills."""
        while line := await output.readline():
            logger.info("%s says: %s", NAME, line.decode(errors="replace").rstrip())
