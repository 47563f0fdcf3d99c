"""Following a Stash job (a scan, a generate) as a Warden job, to its end in Stash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from daemons.stash.client import StashClient
from supervisor import Daemon, ExternalState, JobStatus, TransientError
from supervisor.jobs import ACTIVE, Job

#: Polls of a Stash job that may fail in a row (Stash restarting) before the job counts as lost.
POLL_MISSES = 5


async def launch_stash_job(
    daemon: Daemon, job_type: str, key: str, stash_job_id: str, *, interval: float, stop_timeout: float
) -> Job:
    """Mirror Stash job `stash_job_id` as a Warden job of `daemon`; `wait_for_job` it.

    Its polls and its stop request use a Stash client of their own, closed when the job ends:
    the job may outlive the daemon run that launched it (a restart, a stop that keeps jobs).
    """
    stash = StashClient.from_settings(daemon.settings.stash)
    try:
        job = await daemon.launch_external_job(
            job_type,
            key,
            stash_job_id,
            _poller(stash, stash_job_id),
            lambda: _stop(stash, stash_job_id),
            interval=interval,
            stop_timeout=stop_timeout,
        )
    except BaseException:
        stash.close()
        raise
    daemon.context.jobs.listen(job, lambda changed: stash.close() if changed.status not in ACTIVE else None)
    return job


def _poller(stash: StashClient, stash_job_id: str) -> Callable[[], Awaitable[ExternalState]]:
    misses = 0

    async def poll() -> ExternalState:
        nonlocal misses
        try:
            found = await stash.find_job(stash_job_id)
        except TransientError as error:
            misses += 1
            if misses >= POLL_MISSES:
                raise
            return ExternalState(JobStatus.RUNNING, message=f"Stash not answering ({error}); still waiting")
        misses = 0
        if found is None:
            return ExternalState(JobStatus.FAILED, error=f"Stash no longer knows job {stash_job_id}")
        return found.external_state()

    return poll


async def _stop(stash: StashClient, stash_job_id: str) -> None:
    await stash.stop_job(stash_job_id)
