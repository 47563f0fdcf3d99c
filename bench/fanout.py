"""Status fan-out end to end: Warden beside the original design (bench/baseline.py), in one run.

Fan-out: for each number of WebSocket clients, a server (Warden, then the baseline) runs in a
process of its own with five daemons updating their status, and the clients read in other
processes. A step at 50 updates/s in all comes first, then steps at rising rates for as long
as they pass (p99 within 1 s, and no daemon more than 1 s behind its schedule), then "max":
each daemon updates, yields to the event loop once, and updates again. The sustained rate is
the best rate of a step that passed. Latency is from the daemon's update_status call to
receipt at a client.

Slow client: 100 clients, then the same with one more client that never reads (but pings, so
that no heartbeat takes it for dead): the others' latency, the update_status cost, and the
server's memory, sampled every second. It runs at 150 updates/s: the silent socket's loopback
send buffer (about 4 MB of kernel memory) takes about a minute to fill at 50/s, so a 60 s run
at 50/s would leave both servers unaware of it. A server still stuck 30 s after the run should
have ended is freed by closing the silent client; the row says how long it overran.

Prints a row per step as it is measured, then the ratios and the issue's targets, and writes
bench/results/fanout.json (fanout.tiny.json with --tiny).

    python -m bench.fanout [--clients 1 100 1000] [--seconds 10] [--ladder-seconds 5]
                           [--slow-rate 150] [--slow-seconds 60] [--client-processes N]
    python -m bench.fanout --tiny    # about 15 s, so that it cannot rot
"""

from __future__ import annotations

import argparse
import array
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench import fanout_clients, fanout_server, write_results
from bench.fanout_clients import Address
from bench.fanout_report import HEADER, REFERENCE_RATE, StepResult, print_summary, ratios, show, targets
from bench.fanout_server import Step, StepReport

KINDS = ("warden", "baseline")
LADDER = (150, 500, 1500, 5000, 15_000, 50_000, 150_000)
CLIENTS_PER_PROCESS = 500
START_TIMEOUT = 120.0
SLOW_RATE = 150.0
STALL_GRACE = 30.0  # past a step's end, a server still busy is stalled (on the client that never reads)
SPAWN = multiprocessing.get_context("forkserver")
SPAWN.set_forkserver_preload(["bench.fanout_server", "bench.fanout_clients"])  # forks start warm


# -- processes ------------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, pipe: Connection, address: Address) -> None:
        self.pipe = pipe
        self.address = address

    def start(self, step: Step) -> None:
        self.pipe.send(step)

    def report(self, timeout: float) -> StepReport | None:
        return self.pipe.recv() if self.pipe.poll(timeout) else None


@contextmanager
def server_process(kind: str) -> Iterator[ServerProcess]:
    pipe, child = SPAWN.Pipe()
    process = SPAWN.Process(target=fanout_server.serve, args=(kind, child), name=f"fanout-{kind}", daemon=True)
    with stopping(process, pipe):
        child.close()
        if not pipe.poll(START_TIMEOUT):
            raise RuntimeError(f"the {kind} server did not start within {START_TIMEOUT:g} s")
        yield ServerProcess(pipe, pipe.recv())


class ClientProcesses:
    def __init__(self, pipes: list[Connection]) -> None:
        self.pipes = pipes

    def counts(self) -> tuple[int, int, float]:
        """Messages received, connections the server closed, CPU seconds: all processes together."""
        for pipe in self.pipes:
            pipe.send("count")
        answers = [pipe.recv() for pipe in self.pipes]
        return sum(a[0] for a in answers), sum(a[1] for a in answers), sum(a[2] for a in answers)

    def drain(self, quiet: float = 0.4, limit: float = 30.0) -> tuple[int, int, float]:
        """Wait until no message has arrived for `quiet` seconds (at most `limit`); the final counts."""
        end = time.monotonic() + limit
        counts = self.counts()
        while time.monotonic() < end:
            time.sleep(quiet)
            previous, counts = counts, self.counts()
            if counts[0] == previous[0]:
                break
        return counts

    def latencies(self, step: int) -> list[float]:
        samples: list[float] = []
        for pipe in self.pipes:
            pipe.send(("take", step))
            chunk = array.array("f")
            chunk.frombytes(pipe.recv())
            samples.extend(chunk)
        return samples


@contextmanager
def client_processes(address: Address, count: int, processes: int) -> Iterator[ClientProcesses]:
    arguments = [(address, share) for share in shares(count, processes)]
    with started(fanout_clients.clients, arguments) as pipes:
        yield ClientProcesses(pipes)


@contextmanager
def started(target: Callable[..., None], arguments: Iterable[tuple[Any, ...]]) -> Iterator[list[Connection]]:
    """Run `target(*args, pipe)` in a process for each tuple of `arguments`; once every one has
    answered its first message (it is ready), yield their pipes. At the end each is stopped (`stopping`)."""
    with ExitStack() as stack:
        pipes = []
        for index, args in enumerate(arguments):
            pipe, child = SPAWN.Pipe()
            process = SPAWN.Process(target=target, args=(*args, child), name=f"{target.__name__}-{index}", daemon=True)
            stack.enter_context(stopping(process, pipe))
            child.close()
            pipes.append(pipe)
        for pipe in pipes:
            if not pipe.poll(START_TIMEOUT):
                raise RuntimeError(f"{target.__name__} did not start within {START_TIMEOUT:g} s")
            pipe.recv()
        yield pipes


@contextmanager
def stopping(process: BaseProcess, pipe: Connection) -> Iterator[None]:
    """Start `process`; at the end (also on error) ask it to stop, then terminate and kill if it must."""
    process.start()
    try:
        yield
    finally:
        with suppress(OSError):  # the process may be gone already
            pipe.send(None)
        process.join(15)
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        pipe.close()


def processes_for(clients: int, chosen: int | None) -> int:
    return chosen or max(1, min(4, math.ceil(clients / CLIENTS_PER_PROCESS)))


def shares(clients: int, processes: int) -> list[int]:
    """How many of the clients each process connects."""
    return [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]


# -- steps ----------------------------------------------------------------------------------


def run_step(
    kind: str,
    server: ServerProcess,
    group: ClientProcesses,
    clients: int,
    step: Step,
    on_stall: Callable[[], None] | None = None,
) -> StepResult:
    received, closed, client_cpu = group.counts()
    started = time.perf_counter()
    server.start(step)
    report = server.report(step.seconds + STALL_GRACE)
    stalled = 0.0
    if report is None and on_stall is not None:
        # Stuck on the client that never reads: that client gives up at last, which frees the server.
        stalled = time.perf_counter() - started - step.seconds
        on_stall()
        report = server.report(START_TIMEOUT)
    if report is None:
        raise RuntimeError(f"the {kind} server did not finish step {step.id}")
    received_after, closed_after, client_cpu_after = group.drain()
    elapsed = time.perf_counter() - started
    latencies = sorted(group.latencies(step.id))
    return StepResult(
        kind=kind,
        clients=clients,
        label="max" if step.rate is None else f"{step.rate:g}/s",
        target_rate=step.rate,
        updates_per_s=report.updates / report.seconds,
        max_lag_ms=report.max_lag_ms,
        latency_ms=percentiles(latencies),
        delivered_per_s=(received_after - received) / report.seconds,
        delivered_share=(received_after - received) / max(1, report.updates * clients),
        call_us=report.call_us,
        server_cpu_pct=100 * report.cpu_seconds / report.seconds,
        clients_cpu_pct=100 * (client_cpu_after - client_cpu) / elapsed,
        transactions_per_s=report.transactions / report.seconds,
        on_disk_ms=report.on_disk_ms,
        peak_rss_mib=report.peak_rss_mib,
        clients_closed=closed_after - closed,
        closed_slow_total=report.closed_slow,
        stalled_s=round(stalled, 1),
        memory_mib=report.memory_mib,
    )


def percentiles(sorted_ms: list[float]) -> dict[str, float]:
    if not sorted_ms:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}

    def at(share: float) -> float:
        return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * share))]

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": sorted_ms[-1]}


# -- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    clients: list[int]
    seconds: float
    ladder: list[float]
    ladder_seconds: float
    slow_clients: int
    slow_rate: float
    slow_seconds: float
    client_processes: int | None
    tiny: bool = False


def fan_out(kind: str, clients: int, options: Options) -> list[StepResult]:
    """The reference rate, then rising rates while they pass, then as fast as possible."""
    processes = processes_for(clients, options.client_processes)
    with server_process(kind) as server, client_processes(server.address, clients, processes) as group:
        steps = [Step(1, REFERENCE_RATE, options.seconds)]
        steps += [Step(2 + i, rate, options.ladder_seconds) for i, rate in enumerate(options.ladder)]
        results: list[StepResult] = []
        for step in steps:
            if results and not results[-1].passed:
                break
            results.append(show(run_step(kind, server, group, clients, step)))
        unpaced = Step(len(steps) + 1, None, options.ladder_seconds)
        results.append(show(run_step(kind, server, group, clients, unpaced)))
    return results


def slow_client(kind: str, options: Options) -> tuple[StepResult, StepResult]:
    """The same clients and rate, without and then with one more client that never reads."""
    clients = options.slow_clients
    processes = processes_for(clients, options.client_processes)
    with server_process(kind) as server, client_processes(server.address, clients, processes) as group:
        without = show(run_step(kind, server, group, clients, Step(1, options.slow_rate, options.slow_seconds, True)))
        silent = fanout_clients.SilentClient(server.address)
        try:
            step = Step(2, options.slow_rate, options.slow_seconds, True)
            with_silent = show(run_step(kind, server, group, clients, step, on_stall=silent.close))
        finally:
            silent.close()
    return without, with_silent


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--seconds", type=float, default=10, help="length of the 50/s step")
    parser.add_argument("--ladder", type=float, nargs="*", default=list(LADDER), help="rising rates, updates/s")
    parser.add_argument("--ladder-seconds", type=float, default=5, help="length of each rising and unpaced step")
    parser.add_argument("--slow-clients", type=int, default=100, help="reading clients beside the one that does not")
    parser.add_argument(
        "--slow-rate", type=float, default=SLOW_RATE, help="updates/s in the slow-client runs (see above)"
    )
    parser.add_argument("--slow-seconds", type=float, default=60, help="length of each slow-client run")
    parser.add_argument("--client-processes", type=int, help=f"default: one per {CLIENTS_PER_PROCESS} clients, 1-4")
    parser.add_argument("--tiny", action="store_true", help="2 clients, 0.5 s steps, one rising rate: seconds in all")
    options = parser.parse_args()
    if options.tiny:
        return Options([2], 0.5, [150], 0.5, 2, 50, 0.5, 1, tiny=True)
    return Options(
        options.clients,
        options.seconds,
        options.ladder,
        options.ladder_seconds,
        options.slow_clients,
        options.slow_rate,
        options.slow_seconds,
        options.client_processes,
    )


def load_average() -> tuple[float, ...]:
    return tuple(round(value, 2) for value in os.getloadavg())


def main() -> None:
    options = parse_options()
    load_before = load_average()
    print(HEADER, flush=True)
    fanout = [result for clients in options.clients for kind in KINDS for result in fan_out(kind, clients, options)]
    slow = {kind: slow_client(kind, options) for kind in KINDS}
    load_after = load_average()
    print_summary(fanout, slow, options.clients)
    # Everything here shares the machine's cores: other work running meanwhile shows in these.
    print(f"\nload average (1, 5, 15 min) before: {load_before}, after: {load_after}")
    result = {
        "options": asdict(options),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "fan_out": [asdict(r) | {"passed": r.passed} for r in fanout],
        "ratios": ratios(fanout, options.clients),
        "slow_client": {kind: [asdict(r) for r in pair] for kind, pair in slow.items()},
        "targets": targets(fanout, slow, options.clients),
    }
    write_results("fanout", result, tiny=options.tiny)


if __name__ == "__main__":
    main()
