"""StashDoubleProcess: the Stash double as a process of its own (demo mode's Stash). Its API key stays out of
`ps` and its environment, it leads its own process group, it is stopped with its context, and it does not
outlive a parent killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemons.stash.double_process import SOURCE_ROOT, DoubleFailed, StashDoubleProcess

API_KEY = "demo-key-3f9a1c7e5b"
VERSION = {"query": "query { version { version } }"}


def gone(pid: int) -> bool:
    """No such process, or only its zombie (ended, waiting to be reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def kill_group(pid: int) -> None:
    """For cleanup after a failed test: the double leads its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def post(url: str, body: dict[str, Any], api_key: str | None) -> tuple[int, Any]:
    headers = {"ApiKey": api_key} if api_key else {}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/graphql", json=body, headers=headers) as reply:
        return reply.status, (await reply.json() if reply.status == 200 else await reply.text())


async def test_serves_with_the_key_it_read_on_stdin_and_is_gone_with_its_context(tmp_path: Path) -> None:
    log = tmp_path / "stash.log"
    async with StashDoubleProcess(api_key=API_KEY, log_file=log, library_paths=[tmp_path / "videos"]) as double:
        pid = double.pid
        assert pid is not None and double.running
        assert double.url is not None and double.url.startswith("http://127.0.0.1:")
        assert await post(double.url, VERSION, API_KEY) == (200, {"data": {"version": {"version": "v0.30.1"}}})
        assert (await post(double.url, VERSION, None))[0] == 401
        assert (await post(double.url, VERSION, "wrong"))[0] == 401
        # The key is nowhere `ps` or another process's environment would show it.
        assert API_KEY.encode() not in proc_file(pid, "cmdline")
        assert API_KEY.encode() not in proc_file(pid, "environ")
        assert b"daemons.stash.double" in proc_file(pid, "cmdline")
        assert os.getpgid(pid) == pid, "it leads a process group of its own"
    assert not double.running and double.pid is None
    assert gone(pid)
    assert "schema:" in log.read_text(), "its output goes to its log file"
    assert API_KEY not in log.read_text()


async def test_exited_returns_when_it_ends_by_itself(tmp_path: Path) -> None:
    async with StashDoubleProcess(api_key=API_KEY, log_file=tmp_path / "stash.log") as double:
        assert double.pid is not None
        waiting = asyncio.create_task(double.exited())
        os.kill(double.pid, signal.SIGKILL)
        assert await asyncio.wait_for(waiting, 10) == -signal.SIGKILL
        assert not double.running


async def test_a_double_that_cannot_start_fails_with_the_end_of_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = "import sys; sys.stdin.readline(); print('no schema to load', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(StashDoubleProcess, "command", lambda self: [sys.executable, "-c", broken])
    double = StashDoubleProcess(api_key=API_KEY, log_file=tmp_path / "stash.log")
    with pytest.raises(DoubleFailed, match="it exited with status 3") as failure:
        await double.start()
    assert "no schema to load" in str(failure.value)
    assert not double.running and double.url is None


PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from daemons.stash.double_process import StashDoubleProcess

    async def main():
        double = StashDoubleProcess(api_key="k", log_file=Path(sys.argv[1]))
        await double.start()
        print(double.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_it_ends_by_itself_when_its_parent_is_killed(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(SOURCE_ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "stash.log")], stdout=subprocess.PIPE, env=env, text=True
    )
    pid = None
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())  # once the double is up
        assert not gone(pid)
        parent.kill()  # no chance to stop its child
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not gone(pid):
            assert time.monotonic() < deadline, "the double outlived its parent"
            time.sleep(0.02)
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and not gone(pid):
            kill_group(pid)
