"""StatusHub: the live state of every daemon, and its fan-out to subscribers.

Publishing is O(1) and never waits: a change is recorded in memory and one flush per
event-loop turn hands the batch to every subscriber. Each subscriber has a bounded
queue: pending states collapse to the latest per key (the final state is never lost),
lines (events, logs) beyond the bound are dropped and counted as a gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from supervisor.models import DaemonStatus, Event, LogLine

if TYPE_CHECKING:
    from supervisor.jobs import Job

#: Delta kinds that carry a full state: a newer one replaces an undelivered older one.
COLLAPSIBLE = frozenset({"daemon", "job", "system"})
#: Kinds whose data is a live object its owner mutates: subscribers get a copy taken at flush.
_SNAPSHOT = frozenset({"daemon", "job"})


@dataclass(slots=True, eq=False)
class Delta:
    """One change. States and events are numbered (`seq`); a log line carries the number of the
    change before it, so the numbered stream has no holes for clients that take no logs."""

    seq: int
    kind: str  # "daemon", "job", "system", "event", "log"
    key: str  # daemon name, or the system component for "system"
    data: Any  # DaemonStatus | Event | LogLine | dict
    wire: bytes | None = None  # the encoded message, made once and shared by every client


@dataclass(frozen=True, slots=True)
class Batch:
    deltas: list[Delta]
    dropped: int  # lines dropped since the previous batch because this subscriber fell behind


class SubscriptionClosed(Exception):
    pass


@dataclass(eq=False)
class Subscription:
    """One consumer's bounded view of the hub's deltas. Read it from one task."""

    max_lines: int
    log_filter: frozenset[str] | None = None  # daemons whose logs are wanted; None means all
    _latest: dict[tuple[str, str], Delta] = field(default_factory=dict)
    _lines: deque[Delta] = field(default_factory=deque)
    _dropped: int = 0
    _waiter: asyncio.Future[None] | None = None
    _poked: bool = False
    closed: bool = False

    @property
    def pending(self) -> int:
        return len(self._latest) + len(self._lines)

    def offer(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            if delta.kind in COLLAPSIBLE:
                key = (delta.kind, delta.key)
                self._latest.pop(key, None)
                self._latest[key] = delta
                continue
            if delta.kind == "log" and self.log_filter is not None and delta.key not in self.log_filter:
                continue
            self._lines.append(delta)
            if len(self._lines) > self.max_lines:
                self._lines.popleft()
                self._dropped += 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def poke(self) -> None:
        """Wake the reader even with nothing pending (it then gets an empty batch)."""
        self._poked = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Batch:
        """Wait until something is pending, then take it all."""
        while not (self._latest or self._lines or self._dropped or self._poked):
            if self.closed:
                raise SubscriptionClosed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take()

    def take(self) -> Batch:
        """Everything pending now (possibly nothing), in sequence order."""
        deltas = sorted([*self._latest.values(), *self._lines], key=lambda d: d.seq)
        dropped = self._dropped
        self._poked = False
        self._latest.clear()
        self._lines.clear()
        self._dropped = 0
        return Batch(deltas, dropped)


class StatusHub:
    """Owns the latest state of every daemon and the system, and the sequence of changes."""

    def __init__(self, history: int = 10_000) -> None:
        self.seq = 0
        self.states: dict[str, DaemonStatus] = {}
        self.system: dict[str, dict[str, Any]] = {}
        self.published = 0  # status changes accepted since start (for metrics)
        self._subscriptions: set[Subscription] = set()
        self._dirty: dict[tuple[str, str], Any] = {}
        self._lines: list[tuple[str, str, Any]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._history: deque[Delta] = deque(maxlen=history)  # numbered deltas, for resuming clients

    # -- publishing (all O(1), never wait) --------------------------------------------

    def set_status(self, status: DaemonStatus) -> None:
        """`status` changed (its runner updates it in place); subscribers get a snapshot."""
        self.states[status.name] = status
        self.published += 1
        self._dirty[("daemon", status.name)] = status
        self._schedule_flush()

    def set_job(self, job: Job) -> None:
        """`job` changed (the JobManager updates it in place); subscribers get a snapshot."""
        self._dirty[("job", job.id)] = job
        self._schedule_flush()

    def set_system(self, component: str, value: dict[str, Any]) -> None:
        self.system[component] = value
        self._dirty[("system", component)] = value
        self._schedule_flush()

    def record_event(self, event: Event) -> None:
        self._lines.append(("event", event.daemon, event))
        self._schedule_flush()

    def record_log(self, line: LogLine) -> None:
        self._lines.append(("log", line.daemon, line))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Number the pending changes and hand them to every subscriber."""
        self._flush_handle = None
        if not (self._dirty or self._lines):
            return
        deltas = []
        for (kind, key), data in self._dirty.items():
            self.seq += 1
            deltas.append(Delta(self.seq, kind, key, data.snapshot() if kind in _SNAPSHOT else data))
        for kind, key, data in self._lines:
            if kind != "log":
                self.seq += 1
            deltas.append(Delta(self.seq, kind, key, data))
        self._dirty = {}
        self._lines = []
        self._history.extend(delta for delta in deltas if delta.kind != "log")
        for subscription in self._subscriptions:
            subscription.offer(deltas)

    def since(self, seq: int) -> list[Delta] | None:
        """The numbered deltas after `seq`, or None when some of them are no longer held."""
        if seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self._history or self._history[0].seq > seq + 1:
            return None
        return [delta for delta in self._history if delta.seq > seq]

    # -- subscribing ----------------------------------------------------------------

    def subscribe(self, *, max_lines: int = 1000, log_filter: frozenset[str] | None = None) -> Subscription:
        """A new subscription; pair it with `unsubscribe` (or use `snapshot` first for state)."""
        subscription = Subscription(max_lines=max_lines, log_filter=log_filter)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        subscription.close()
