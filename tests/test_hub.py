"""StatusHub: O(1) publishing, per-subscriber bounded queues that collapse states and count gaps."""

from __future__ import annotations

from supervisor.hub import StatusHub
from supervisor.models import Actor, DaemonState, DaemonStatus, Event, LogLine
from tests.fakeclock import settle


def status(name: str, message: str) -> DaemonStatus:
    return DaemonStatus(name, name.title(), DaemonState.RUNNING, message=message)


def log(name: str, n: int) -> LogLine:
    return LogLine(name, "info", f"line {n}", float(n))


async def test_pending_states_collapse_to_the_latest_per_daemon():
    hub = StatusHub()
    subscription = hub.subscribe()
    for n in range(1000):
        hub.set_status(status("a", f"a{n}"))
        hub.set_status(status("b", f"b{n}"))
        await settle(1)  # one flush per round: the subscriber still reads nothing
    batch = subscription.take()
    assert [d.data.message for d in batch.deltas] == ["a999", "b999"]
    assert batch.dropped == 0


async def test_sequence_numbers_increase_without_gaps_for_a_reader_that_keeps_up():
    hub = StatusHub()
    subscription = hub.subscribe()
    numbered, logs = [], []
    for n in range(50):
        hub.set_status(status("a", str(n)))
        hub.record_log(log("a", n))
        for delta in (await subscription.get()).deltas:
            (logs if delta.kind == "log" else numbered).append(delta.seq)
    assert numbered == list(range(1, 51))
    assert logs == numbered, "a log line is not numbered: it carries the number of the change before it"


async def test_history_serves_a_resume_or_says_it_cannot():
    hub = StatusHub(history=10)
    for n in range(30):
        hub.set_status(status("a", str(n)))
        hub.flush()
    assert [d.data.message for d in hub.since(25) or []] == ["25", "26", "27", "28", "29"]
    assert hub.since(30) == []
    assert hub.since(19) is None, "older than the history holds: the client needs a snapshot"
    assert hub.since(31) is None, "a sequence number from the future (another boot) gets a snapshot"


async def test_lines_beyond_the_bound_are_dropped_and_counted_but_states_are_not():
    hub = StatusHub()
    slow = hub.subscribe(max_lines=10)
    for n in range(100):
        hub.record_log(log("a", n))
        hub.set_status(status("a", f"state {n}"))
        await settle(1)
    batch = slow.take()
    lines = [d.data.message for d in batch.deltas if d.kind == "log"]
    assert lines == [f"line {n}" for n in range(90, 100)], "the newest lines are kept"
    assert batch.dropped == 90
    assert [d.data.message for d in batch.deltas if d.kind == "daemon"] == ["state 99"], "the final state is never lost"


async def test_a_stalled_subscriber_does_not_hold_back_another():
    hub = StatusHub()
    stalled = hub.subscribe(max_lines=5)
    reader = hub.subscribe(max_lines=5)
    received = []
    for n in range(200):
        hub.set_status(status("a", str(n)))
        hub.record_event(Event("a", "transition", Actor.USER, float(n)))
        received.extend((await reader.get()).deltas)
    assert len(received) == 400
    assert stalled.pending <= 6, "the stalled queue stays bounded"


async def test_log_filter_keeps_only_the_subscribed_daemons_logs():
    hub = StatusHub()
    subscription = hub.subscribe(log_filter=frozenset({"b"}))
    hub.record_log(log("a", 1))
    hub.record_log(log("b", 2))
    hub.record_event(Event("a", "hung", Actor.WATCHDOG, 3.0))
    batch = await subscription.get()
    assert [(d.kind, d.key) for d in batch.deltas] == [("log", "b"), ("event", "a")]


async def test_publishing_with_no_subscriber_and_after_unsubscribe():
    hub = StatusHub()
    hub.set_status(status("a", "x"))
    subscription = hub.subscribe()
    hub.unsubscribe(subscription)
    hub.set_status(status("a", "y"))
    await settle()
    assert subscription.pending == 0
    assert hub.states["a"].message == "y"
