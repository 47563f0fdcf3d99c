"""The CLI talking to a running Warden: status, commands, logs (and --follow), watch."""

from __future__ import annotations

import asyncio
import io

import pytest

from supervisor import Daemon
from supervisor.cli import main
from supervisor.models import DaemonState
from tests.daemons_for_tests import Worker
from tests.webharness import TOKEN, running_warden
from web.client import Client, ClientError, follow_logs, watch


class Chatty(Daemon):
    """Logs a numbered line each round; a wake starts the next round."""

    name = "chatty"
    title = "Chatty"

    async def run(self) -> None:
        n = 0
        while True:
            n += 1
            self.log.info(f"line {n}")
            await self.update_status(f"said {n} lines")
            await self.sleep(3600, "resting")


class Output(io.StringIO):
    """What a live command prints, with a way to wait for a text to appear."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def until(self, text: str) -> None:
        async with asyncio.timeout(5):
            while text not in self.getvalue():
                self.changed.clear()
                await self.changed.wait()


async def cli(warden, *args: str, token: str = TOKEN) -> int:
    # main() runs its own event loop, so it runs in a thread beside the server's loop.
    return await asyncio.to_thread(main, [*args, "--url", warden.url, "--token", token])


async def test_status_and_commands(tmp_path, capsys):
    async with running_warden(tmp_path, [Worker]) as warden:
        assert await cli(warden, "status") == 0
        out = capsys.readouterr().out
        assert "worker" in out and "running" in out and "Round 1" in out
        assert await cli(warden, "stop", "worker") == 0
        assert warden.supervisor.runner("worker").status.state is DaemonState.STOPPED
        assert await cli(warden, "start", "all") == 0
        assert warden.supervisor.runner("worker").status.state is DaemonState.RUNNING
        assert "running" in capsys.readouterr().out


async def test_status_marks_a_line_that_reports_a_problem(tmp_path, capsys):
    async with running_warden(tmp_path, [Worker]) as warden:
        daemon = warden.supervisor.runner("worker").daemon
        await daemon.update_status("Cannot reach Stash: connection refused", problem=True)
        assert await cli(warden, "status") == 0
        assert "  ! Cannot reach Stash: connection refused (sleeping " in capsys.readouterr().out
        await daemon.update_status("Connected to Stash")
        assert await cli(warden, "status") == 0
        assert "  Connected to Stash (sleeping " in capsys.readouterr().out


async def test_errors_are_short_and_exit_1(tmp_path, capsys):
    async with running_warden(tmp_path, [Worker]) as warden:
        assert await cli(warden, "start", "nobody") == 1
        assert "404: no daemon named 'nobody'" in capsys.readouterr().err
        assert await cli(warden, "status", token="wrong") == 1
        assert "401" in capsys.readouterr().err


async def test_logs_then_follow(tmp_path, capsys):
    async with running_warden(tmp_path, [Chatty]) as warden:
        await warden.supervisor.start("chatty")
        warden.hub.flush()
        await warden.writer.wait_saved(warden.hub.seq)
        assert await cli(warden, "logs", "chatty") == 0
        assert "chatty INFO    line 1" in capsys.readouterr().out
        out = Output()
        follower = asyncio.create_task(follow_logs(Client(warden.url, TOKEN), "chatty", out))
        try:
            await out.until("following chatty's log")
            warden.supervisor.wake("chatty")
            await out.until("chatty INFO    line 2")
        finally:
            follower.cancel()


async def test_follow_of_an_unknown_daemon_fails(tmp_path):
    async with running_warden(tmp_path, [Worker]) as warden:
        with pytest.raises(ClientError, match="daemon names"):
            await follow_logs(Client(warden.url, TOKEN), "nobody", Output())


async def test_watch_redraws_on_every_change(tmp_path):
    async with running_warden(tmp_path, [Worker]) as warden:
        out = Output()
        watcher = asyncio.create_task(watch(Client(warden.url, TOKEN), out))
        try:
            await out.until("Round 1")
            await warden.supervisor.stop("worker")
            await out.until("stopped")
        finally:
            watcher.cancel()
