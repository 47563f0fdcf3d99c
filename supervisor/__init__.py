"""Warden's kernel: daemon lifecycle, status hub, jobs, store, config, CLI."""

from supervisor.config import DaemonConfig
from supervisor.daemon import Daemon
from supervisor.jobs import ExternalState, JobContext, JobFailed, JobStatus, TransientError
from supervisor.models import DaemonState, RestartPolicy

__all__ = [
    "Daemon",
    "DaemonConfig",
    "DaemonState",
    "ExternalState",
    "JobContext",
    "JobFailed",
    "JobStatus",
    "RestartPolicy",
    "TransientError",
]

__version__ = "0.1.0"
