"""Warden's kernel: daemon lifecycle, status hub, store, config, CLI."""

from supervisor.config import DaemonConfig
from supervisor.daemon import Daemon
from supervisor.models import DaemonState, RestartPolicy

__all__ = ["Daemon", "DaemonConfig", "DaemonState", "RestartPolicy"]

__version__ = "0.1.0"
