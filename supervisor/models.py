"""The values Warden passes around: daemon states, actors, status snapshots, events, log lines."""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class DaemonState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"  # crashed; a restart is scheduled
    FATAL = "fatal"  # restart limit reached, or crashed with policy `never`; waits for a person
    DISABLED = "disabled"


#: States in which a daemon task exists (or is about to).
ACTIVE_STATES = frozenset({DaemonState.STARTING, DaemonState.RUNNING, DaemonState.STOPPING})


class Actor(enum.StrEnum):
    """Who or what caused a transition."""

    USER = "user"
    AUTO_START = "auto-start"
    CRASH = "crash"
    WATCHDOG = "watchdog"
    CONFIG = "config"
    SHUTDOWN = "shutdown"
    RECOVERY = "recovery"  # reconciling rows left behind by a process that died


class RestartPolicy(enum.StrEnum):
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(slots=True)
class DaemonStatus:
    """Everything a person needs to know about one daemon right now.

    Mutable for speed: its runner alone updates it in place, and the hub hands every
    subscriber an immutable-by-convention `snapshot()` taken once per flush.
    """

    name: str
    title: str
    state: DaemonState = DaemonState.STOPPED
    message: str = ""
    problem: bool = False  # the message reports a problem (a service unreachable, credentials refused)
    job_id: str | None = None
    job_type: str | None = None
    progress: float | None = None
    sleeping_until: float | None = None
    sleep_reason: str | None = None
    heartbeat_at: float | None = None
    started_at: float | None = None
    restarts: int = 0
    last_error: str | None = None
    next_restart_at: float | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def snapshot(self) -> DaemonStatus:
        return _copy_status(self)


def shallow_copier(cls: type[T]) -> Callable[[T], T]:
    """A shallow copy for a dataclass whose fields are all init fields: its constructor, given
    every field. The hub copies each changed state once per flush, and copy.copy (through
    __reduce_ex__) costs about six times as much."""
    values = operator.attrgetter(*(item.name for item in fields(cls)))
    return lambda item: cls(*values(item))


_copy_status = shallow_copier(DaemonStatus)


@dataclass(frozen=True, slots=True)
class Event:
    """A recorded fact about a daemon: a transition, a hang, a config change, a recovery."""

    daemon: str
    #: "transition", "hung", "loop-blocked", "interrupted", "config", "stop-timeout", "abandoned", "leftover-tasks"
    kind: str
    actor: Actor
    at: float
    message: str = ""
    from_state: DaemonState | None = None
    to_state: DaemonState | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LogLine:
    daemon: str
    level: str
    message: str
    at: float
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
