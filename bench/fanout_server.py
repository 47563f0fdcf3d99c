"""The server side of bench.fanout, in a process of its own: Warden or the baseline, with five daemons.

Started by bench.fanout with a pipe. It answers `Address` once serving, then runs each `Step`
it is sent: the daemons update their status at the step's rate (or as fast as the event loop
lets them), and it answers a `StepReport`: the cost of every update_status call, this
process's CPU time and memory, database transactions, and how long after the last update
the latest state was readable from the database file by another connection.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import math
import os
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import ClassVar

import aiohttp

from bench.baseline import running_baseline
from bench.fanout_clients import Address, raise_open_files_limit
from supervisor.app import Warden
from supervisor.daemon import Daemon
from tests.webharness import bearer, config_text, running_warden, until

DAEMONS = 5
NAMES = [f"bench_{i}" for i in range(DAEMONS)]  # the daemons, in the order of their share of the load
MAX_BURST = 1000  # updates a daemon makes in a row when behind, before it lets the loop run
PERCENTILE_SAMPLE = 100_000
MAX_LAG = 1.0  # seconds behind schedule at which a daemon gives up the rest of a paced step
READY = "bench ready"
Publish = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    id: int
    rate: float | None  # status updates per second, all daemons together; None: as fast as possible
    seconds: float
    sample_memory: bool = False


@dataclass
class DaemonRun:
    calls: array.array[int] = field(default_factory=lambda: array.array("q"))  # update_status ns
    last_text: str = ""
    last_stamp_ns: int = 0
    max_lag: float = 0.0  # seconds an update was made after it was due (paced steps)


@dataclass(frozen=True)
class StepReport:
    updates: int
    seconds: float
    call_us: dict[str, float]  # update_status cost: p50, p99, max, mean
    cpu_seconds: float
    peak_rss_mib: float
    transactions: int
    on_disk_ms: float | None  # polled once the step ends (an upper bound if it overran); None: not seen in 5 s
    max_lag_ms: float  # the furthest any daemon fell behind the step's schedule
    memory_mib: list[tuple[float, float]]  # (seconds into the step, VmRSS), when sampled
    closed_slow: int  # Warden only: clients closed for not reading, since start


class Load:
    """Hands each step to the daemons; each daemon drives its own share of the rate."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[tuple[Step, asyncio.Future[DaemonRun]]]] = [
            asyncio.Queue() for _ in range(DAEMONS)
        ]

    async def run(self, step: Step) -> list[DaemonRun]:
        loop = asyncio.get_running_loop()
        done = [loop.create_future() for _ in self._queues]
        for queue, future in zip(self._queues, done, strict=True):
            queue.put_nowait((step, future))
        return list(await asyncio.gather(*done))

    async def drive(self, index: int, publish: Publish) -> None:
        """A daemon's loop: every step it is handed, update the status at its share of the rate."""
        while True:
            step, done = await self._queues[index].get()
            done.set_result(await pace(step, index, publish))


async def pace(step: Step, index: int, publish: Publish) -> DaemonRun:
    """Call `publish` on schedule for `step.seconds`, returning right after the last call.

    Paced, the daemons take turns (daemon `index` is offset by `index` / rate), so that together
    they update at an even rate; one that falls behind catches up in bursts, and gives up the
    rest of the step once it is MAX_LAG behind. Unpaced, each call is followed by a bare yield
    to the event loop.
    """
    run = DaemonRun()
    paced = step.rate is not None
    per_second = step.rate / DAEMONS if step.rate else math.inf
    total = round(step.seconds * per_second) if paced else sys.maxsize
    offset = index / step.rate if step.rate else 0.0
    deadline = step.seconds + (MAX_LAG if paced else 0.0)
    start = time.perf_counter()
    sent = 0
    while sent < total and (now := time.perf_counter()) - start < deadline:
        due = math.floor((now - start - offset) * per_second) + 1 if paced else sent + 1
        if paced and due > sent:
            run.max_lag = max(run.max_lag, now - start - offset - sent / per_second)
        for _ in range(min(due, total, sent + MAX_BURST) - sent):
            sent += 1
            stamp = time.time_ns()
            run.last_text = f"bench {step.id} {stamp} {index}.{sent}"
            before = time.perf_counter_ns()
            await publish(run.last_text)
            run.calls.append(time.perf_counter_ns() - before)
            run.last_stamp_ns = stamp
        if sent < total:
            wait = start + offset + sent / per_second - time.perf_counter()
            await asyncio.sleep(max(0.0, wait))
    return run


# -- the two servers ------------------------------------------------------------------------


@dataclass
class Server:
    address: Address
    database: Path
    state_sql: str  # the current message of the daemon named or identified by the parameter
    keys: list[str]  # that parameter, for each daemon in order
    transactions: Callable[[], int]
    closed_slow: Callable[[], Awaitable[int]]


class BenchDaemon(Daemon):
    """A Warden daemon whose status updates the benchmark's load drives."""

    load: ClassVar[Load]
    index: ClassVar[int]

    async def run(self) -> None:
        await self.update_status(READY)
        await self.load.drive(self.index, self.update_status)


def bench_daemons(load: Load) -> list[type[Daemon]]:
    BenchDaemon.load = load
    return [
        type(f"Bench{i}", (BenchDaemon,), {"name": name, "title": f"Bench {i}", "index": i})
        for i, name in enumerate(NAMES)
    ]


@contextlib.asynccontextmanager
async def bench_warden(folder: Path, load: Load) -> AsyncIterator[Warden]:
    """Warden (in this process) with the five daemons `load` drives, once each has said it is ready."""
    classes = bench_daemons(load)
    sections = "".join(f"  {cls.name}:\n    watchdog_timeout: 86400\n" for cls in classes)
    async with running_warden(folder, classes, yaml=config_text(sections)) as warden:
        await until(warden, lambda: _all_ready(warden))
        yield warden


@contextlib.asynccontextmanager
async def warden_server(folder: Path, load: Load) -> AsyncIterator[Server]:
    async with bench_warden(folder, load) as warden:
        assert warden.url is not None and warden.writer is not None
        writer = warden.writer
        yield Server(
            Address(warden.url + "ws", bearer(), []),
            warden.settings.database_path,
            "SELECT message FROM daemon_state WHERE name = ?",
            NAMES,
            lambda: writer.transactions,
            lambda: _closed_slow(warden),
        )


def _all_ready(warden: Warden) -> bool:
    assert warden.supervisor is not None
    return all(runner.status.message == READY for runner in warden.supervisor.runners.values())


async def _closed_slow(warden: Warden) -> int:
    """Read from /metrics, as an operator would."""
    assert warden.url is not None
    async with (
        aiohttp.ClientSession(headers=bearer()) as session,
        session.get(warden.url + "metrics") as response,
    ):
        for line in (await response.text()).splitlines():
            if line.startswith("warden_websocket_closed_slow_total "):
                return int(float(line.split()[1]))
    return 0


@contextlib.asynccontextmanager
async def baseline_server(folder: Path, load: Load) -> AsyncIterator[Server]:
    async with running_baseline(folder, NAMES) as baseline:
        path = baseline.path
        daemons = []
        for index, daemon_id in enumerate(baseline.daemon_ids):
            await path.update_status(daemon_id, READY)
            # Each daemon in its own task, which its broadcasts run in, as in the original.
            daemons.append(asyncio.create_task(load.drive(index, functools.partial(path.update_status, daemon_id))))
        try:
            yield Server(
                Address(baseline.url, {}, baseline.daemon_ids),
                baseline.database,
                "SELECT current_status FROM daemons WHERE id = ?",
                baseline.daemon_ids,
                lambda: path.transactions,
                _never_closed,
            )
        finally:
            for task in daemons:
                task.cancel()
            await asyncio.gather(*daemons, return_exceptions=True)


async def _never_closed() -> int:
    return 0  # the original never closes a client for being slow


# -- measuring a step -----------------------------------------------------------------------


async def measure(server: Server, load: Load, step: Step) -> StepReport:
    transactions, cpu, started = server.transactions(), time.process_time(), time.perf_counter()
    async with sampling_memory(started, step.sample_memory) as memory:
        runs = await load.run(step)
        seconds = time.perf_counter() - started
        transactions = server.transactions() - transactions
        cpu = time.process_time() - cpu
    last = {key: run.last_text for key, run in zip(server.keys, runs, strict=True) if run.last_text}
    seen_ns = await asyncio.to_thread(wait_on_disk, server.database, server.state_sql, last)
    last_stamp = max(run.last_stamp_ns for run in runs)
    return StepReport(
        updates=sum(len(run.calls) for run in runs),
        seconds=seconds,
        call_us=summarise_calls(runs),
        cpu_seconds=cpu,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        transactions=transactions,
        on_disk_ms=None if seen_ns is None else max(0.0, (seen_ns - last_stamp) / 1e6),
        max_lag_ms=max(run.max_lag for run in runs) * 1000,
        memory_mib=memory,
        closed_slow=await server.closed_slow(),
    )


def summarise_calls(runs: list[DaemonRun]) -> dict[str, float]:
    """Percentiles over at most PERCENTILE_SAMPLE calls taken evenly, so that sorting a fast step's
    million calls does not swell this process's memory (which the step reports); max and mean over all."""
    count = sum(len(run.calls) for run in runs)
    if not count:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    stride = max(1, count // PERCENTILE_SAMPLE)
    sample = sorted(ns for run in runs for ns in run.calls[::stride])
    return {
        "p50": sample[len(sample) // 2] / 1000,
        "p99": sample[min(len(sample) - 1, int(len(sample) * 0.99))] / 1000,
        "max": max(max(run.calls, default=0) for run in runs) / 1000,
        "mean": sum(sum(run.calls) for run in runs) / count / 1000,
    }


def wait_on_disk(database: Path, sql: str, expected: dict[str, str], deadline: float = 5.0) -> int | None:
    """Poll the database from a connection of its own until every daemon's last message is there."""
    connection = sqlite3.connect(database, timeout=deadline)
    try:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if all(connection.execute(sql, (key,)).fetchone() == (text,) for key, text in expected.items()):
                return time.time_ns()
            time.sleep(0.001)
        return None
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def sampling_memory(started: float, sample: bool = True) -> AsyncIterator[list[tuple[float, float]]]:
    """This process's RSS once a second while the block runs (if `sample`): (seconds since `started`, MiB).
    The sampler ends with the block, also when the block raises."""
    samples: list[tuple[float, float]] = []
    sampler = asyncio.create_task(_sample_memory(samples, started)) if sample else None
    try:
        yield samples
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)


async def _sample_memory(samples: list[tuple[float, float]], started: float) -> None:
    while True:
        samples.append((round(time.perf_counter() - started, 1), vm_rss_mib()))
        await asyncio.sleep(1)


def vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the process ----------------------------------------------------------------------------


def serve(kind: str, control: Connection) -> None:
    """The process's entry point: serve until the pipe says None (or closes)."""
    raise_open_files_limit()
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- Warden prints its URL and logs there
    asyncio.run(_serve(kind, control))


async def _serve(kind: str, control: Connection) -> None:
    load = Load()
    start = warden_server if kind == "warden" else baseline_server
    with tempfile.TemporaryDirectory() as folder:
        async with start(Path(folder), load) as server:
            control.send(server.address)
            while (step := await asyncio.to_thread(_receive, control)) is not None:
                control.send(await measure(server, load, step))


def _receive(control: Connection) -> Step | None:
    try:
        step: Step | None = control.recv()
    except EOFError:
        return None
    return step
