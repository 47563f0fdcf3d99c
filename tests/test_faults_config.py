"""Config file faults on a running Warden: config/warden.yaml replaced by garbage, deleted, made
unreadable, or edited while a daemon is mid-job. Warden keeps running with the last good settings,
the API and the page's feed name the file (and the line, where there is one), a later good file is
picked up, and a job running across the change finishes with its result kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from supervisor import Daemon, DaemonConfig
from supervisor.app import Warden
from supervisor.jobs import JobContext, JobStatus
from supervisor.models import Actor, DaemonState
from tests.daemons_for_tests import Worker
from tests.test_config import WORKER_YAML, write_config
from tests.webharness import api_session, call, config_text, running_warden, saved, until

GOOD = config_text("  worker:\n    interval: 30\n")
FIXED = GOOD.replace("interval: 30", "interval: 45")


def garbage_text(path: Path) -> None:
    path.write_text("server:\n  port: 80\ndaemons: [worker\n  {{{ :: !!\n")


def garbage_bytes(path: Path) -> None:
    # Not UTF-8: a binary file saved over the config by mistake.
    path.write_bytes(b"server:\n  port: 80\n\x89PNG\r\n\x1a\n\xff\xfe\x00garbage\n")


def delete(path: Path) -> None:
    path.unlink()


# chmod 000 stops nobody when the tests run as root (as in CI): these make the file unreadable
# for root too.
def directory_in_its_place(path: Path) -> None:
    path.unlink()
    path.mkdir()


def symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)  # a link to itself: ELOOP on every read


def restore(path: Path, text: str) -> None:
    """The person puts a good file back, whatever was left in its place."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    path.write_text(text)


# fault -> (what the problem must say, the line it must name or None, the answer to an edit from the page:
# 409 where it would overwrite what the person left or cannot be written, 200 where the file can be written anew)
FAULTS: dict[str, tuple[Callable[[Path], None], str, int | None, int]] = {
    "replaced by garbage text": (garbage_text, "line 4", 4, 409),
    "replaced by binary garbage": (garbage_bytes, "UTF-8", 3, 409),
    "deleted": (delete, "cannot read the file", None, 200),
    "a directory in its place": (directory_in_its_place, "cannot read the file", None, 409),
    "a symlink loop in its place": (symlink_loop, "cannot read the file", None, 200),
}


def config_problem(warden: Warden) -> dict[str, Any]:
    """What the page's config banner shows (the `config` system state sent to every client)."""
    return warden.hub.system.get("config", {})


@pytest.mark.parametrize(("fault", "cause", "line", "edit"), FAULTS.values(), ids=FAULTS.keys())
async def test_a_broken_config_file_keeps_the_last_good_settings_until_a_good_one(
    tmp_path, tally, fault, cause, line, edit
):
    Worker.runs = 0
    async with running_warden(tmp_path, [Worker], yaml=GOOD) as warden, api_session(warden) as session:
        assert warden.supervisor is not None
        runner = warden.supervisor.runner("worker")
        settings, worker_config = warden.settings, runner.config
        path = warden.config.path
        fault(path)
        await until(warden, lambda: config_problem(warden).get("error") is not None)
        shown = config_problem(warden)
        health = await call(session, "GET", "api/health", status=200)
        # Warden runs on, with the settings it had: no daemon restarted or reconfigured.
        kept = (
            warden.supervising
            and warden.settings is settings
            and runner.config is worker_config
            and runner.status.state is DaemonState.RUNNING
            and Worker.runs == 1
        )
        left = path.read_bytes() if edit == 409 and path.is_file() else None
        await call(session, "PUT", "api/daemons/worker/config", status=edit, json={"max_restarts": 3})
        untouched = left is None or path.read_bytes() == left
        restore(path, FIXED)
        await until(warden, lambda: runner.config.interval == 45 and runner.status.state is DaemonState.RUNNING)
        cleared = (await call(session, "GET", "api/health"))["config"]
        kept_as_written = path.read_text() == FIXED  # applied, not rewritten
    # The person's own text: what they left in the file's place, and the good file they put back.
    lost = (not untouched) + (not kept_as_written)
    tally.record(
        "config",
        f"config file {next(k for k, v in FAULTS.items() if v[0] is fault)} while running",
        tries=1,
        outcome="last good settings kept, problem shown with the file"
        + (f" and line {line}" if line else "")
        + ", a later good file applied; none of the person's text overwritten",
        lost=lost,
    )
    assert str(path) in shown["error"] and cause in shown["error"]
    assert [issue["line"] for issue in shown["issues"]] == [line]
    assert health["config"]["ok"] is False and health["config"]["error"] == shown["error"]
    assert kept
    assert untouched, "an edit from the page never overwrites the person's own text"
    assert kept_as_written, "the good file is applied as the person wrote it"
    assert cleared == {"ok": True, "error": None} and config_problem(warden)["error"] is None
    assert lost == 0


class CountingDaemon(Daemon):
    """Runs one counting job, which ends when the test says; then reports its result and idles."""

    name = "counter"
    title = "Counter"
    release: ClassVar[asyncio.Event]

    class Config(DaemonConfig):
        step: int = Field(1, ge=1, le=100, description="What the job counts by.")

    async def run(self) -> None:
        step = self.config.step

        async def count(job: JobContext) -> dict[str, int]:
            job.progress(50, f"counting by {step}")
            await self.release.wait()
            return {"counted_by": step}

        await self.update_status(f"counting by {step}")  # never suspends: the job is joined before anyone sees it
        result = await self.run_job("count", "everything", count)
        await self.update_status(f"counted by {result['counted_by']}; now set to {self.config.step}")
        await self.sleep(3600, "done")


async def test_a_valid_edit_while_the_daemon_is_mid_job_keeps_the_job_and_its_result(tmp_path, tally):
    CountingDaemon.release = asyncio.Event()
    yaml = config_text("  counter:\n    step: 1\n")
    async with running_warden(tmp_path, [CountingDaemon], yaml=yaml) as warden, api_session(warden) as session:
        assert warden.supervisor is not None and warden.jobs is not None
        runner = warden.supervisor.runner("counter")
        await until(warden, lambda: runner.status.job_id is not None and runner.status.progress == 50)
        job_id = runner.status.job_id
        warden.config.path.write_text(yaml.replace("step: 1", "step: 2"))
        # The daemon restarts with the new value; the new instance joins the job still running.
        await until(warden, lambda: runner.status.message == "counting by 2")
        CountingDaemon.release.set()
        await until(warden, lambda: runner.status.message.startswith("counted by"))
        message = runner.status.message
        await saved(warden)
        jobs = await call(session, "GET", "api/jobs")
        events = await call(session, "GET", "api/events?daemon=counter")
    starts = [e["actor"] for e in reversed(events["events"]) if e["to_state"] == DaemonState.STARTING]
    ours = [job for job in jobs["jobs"] if job["type"] == "count"]
    finished = [job for job in ours if job["status"] == JobStatus.COMPLETED and job["result"] == {"counted_by": 1}]
    lost = abs(len(finished) - 1)  # the job's result missing, or kept twice
    tally.record(
        "config",
        "valid config edit while the daemon is mid-job",
        tries=1,
        outcome="daemon restarted with the new value, the running job finished once and its result reached "
        "the new instance",
        lost=lost,
    )
    assert message == "counted by 1; now set to 2"
    assert [job["id"] for job in ours] == [job_id], "one job, not a second one for the same work"
    assert starts == [Actor.AUTO_START, Actor.CONFIG], "one restart, for the config change"
    assert lost == 0


async def test_a_file_read_while_an_editor_still_writes_it_is_neither_taken_nor_reported(tmp_path, tally):
    # Saving in place empties the file, then writes it in pieces: each piece is what one check may read.
    config = write_config(tmp_path, WORKER_YAML)
    edited = WORKER_YAML.replace("interval: 30", "interval: 45")
    pieces = ["", edited[: edited.index("daemons:") + 3], edited[: edited.index("interval")]]
    taken_or_reported = 0
    for piece in pieces:
        config.path.write_text(piece)
        taken_or_reported += await config.reload_if_changed(settled=True)
        taken_or_reported += config.last_error is not None or config.text != WORKER_YAML
    config.path.write_text(edited)
    first = await config.reload_if_changed(settled=True)
    second = await config.reload_if_changed(settled=True)
    lost = taken_or_reported + (not second) + (config.settings.daemons.worker.interval != 45)
    tally.record(
        "config",
        "the file read while an editor saving in place still writes it (emptied, then in pieces)",
        tries=len(pieces),
        outcome="no piece taken or reported; the whole edit taken at the second check that reads it",
        lost=lost,
    )
    assert not first, "a text is taken only once two checks in a row read it"
    assert lost == 0
