"""Start and idle: process start to a ready /api/health, and the idle RSS of Warden and its children.

Start: `warden run` (as `python -m supervisor`) with the shipped config/warden.yaml, a fresh
data folder each time, so every start is a first run: it creates the database (schema and
migrations), serves the page, then (in demo mode) starts the built-in Stash (the Stash double,
a child process) and a qbittorrent-nox together, and auto-starts the daemons once both are up.
The clock starts just before the process is spawned and stops at the first 200 from GET
/api/health on 127.0.0.1 (polled every 10 ms; it answers 200 with "starting": true while the
demo services come up); median of --starts. Two modes: `demo` (no stash.url: what `make run`
does) and `no-demo` (stash.url set to a closed port, so no demo Stash or qBittorrent; the Stash
daemons show the outage and retry). The milestones are taken from Warden's own JSON log (its
timestamps against the spawn time). Modules are found compiled in a private bytecode cache
filled beforehand (Warden's modules and the Stash double's), as in an installation that has
run once; one more row shows demo starts with this environment's own bytecode setting (with
PYTHONDONTWRITEBYTECODE=1, Warden's own modules are compiled from source at every start). The
demo Stash builds Stash's real schema when ../shared/stash_schema (or STASH_SCHEMA_DIR) is
there, else its own small subset: it comes up later with the real one (reported).

Imports: the interpreter's start, `import supervisor.cli` (everything `warden run` loads),
and the packages that take longest under `python -X importtime`.

Idle: a fresh start per mode; in demo mode, first wait until the demo library's videos are
made (ffmpeg, in Warden's threads) and the demo download is added to qBittorrent; then wait
for a quiet window of --quiet seconds in which every daemon is running and sleeping and no
job is pending or running at any poll. Then read VmRSS (and VmHWM, RssAnon, RssFile) of the
Warden process from /proc, and separately of each of its child processes: in demo mode the
demo Stash (a Python process of its own) and qbittorrent-nox, and an ffmpeg if one is still
running. Gives up waiting after --settle seconds and measures anyway, saying so.

Every process started is stopped (SIGTERM, then SIGKILL of its process group and of the process
groups its children lead), also on error.
Prints tables and writes bench/results/start_idle.json (start_idle.tiny.json with --tiny).

    python -m bench.start_idle [--starts 5] [--modes demo no-demo] [--settle 600] [--quiet 25]
    python -m bench.start_idle --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import write_results
from daemons.children import free_port
from daemons.stash.double.schema import default_schema_dir, real_schema_files
from tests.test_process import child_env, warden_command

SHIPPED_CONFIG = Path(__file__).parent.parent / "config" / "warden.yaml"
TOKEN = "bench-start-idle-token-0123"
TARGET_READY_S = 1.5
TARGET_IDLE_RSS_MB = 80.0
POLL = 0.01
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
#: Environment on top of the shipped config, per mode (WARDEN_* variables override the file).
MODES = {"demo": {}, "no-demo": {"WARDEN_STASH__URL": "http://127.0.0.1:9"}}
MILESTONES = {
    "page served": "page served",
    "demo Stash up": "demo mode: built-in Stash running",
    "qbittorrent-nox up": "demo mode: qbittorrent-nox running",
    "daemons started": "Warden running",
}
#: How the demo Stash's process is told apart from Warden's other children (its command line).
DEMO_STASH_MODULE = "daemons.stash.double"
#: Demo mode's log events once its videos are made (ffmpeg) and its download is in qBittorrent.
DEMO_MADE = {"demo library ready", "demo download added"}
# Direct connections only: a proxy from the environment must not stand between us and loopback.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- one Warden process -----------------------------------------------------------------------


@dataclass
class WardenProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    spawned: float  # time.perf_counter() just before the spawn
    spawned_wall: float  # time.time() then, to place the log's timestamps

    def get(self, path: str) -> Any:
        """GET an API path; the JSON body, or None while Warden is not there or not ok yet."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with HTTP.open(request, timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError):  # refused, 503, not answering yet
            return None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"Warden exited ({self.process.returncode}); its log ends:\n{tail}")

    def log_events(self) -> dict[str, float]:
        """Each JSON log event's first time, in seconds after the spawn."""
        seen: dict[str, float] = {}
        for text in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                line = json.loads(text)
                at = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
                seen.setdefault(line["event"], at - self.spawned_wall)
        return seen

    def wait_for_events(self, events: set[str], timeout: float, poll: float = 0.1) -> bool:
        """Wait until all `events` are in the log; False when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not events <= self.log_events().keys():
            self.check_alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True


def with_bytecode(env: dict[str, str], cache: Path | None) -> dict[str, str]:
    """`env` reading and writing compiled modules in `cache`; None leaves this environment's own setting."""
    if cache is None:
        return env
    env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(cache)}


@contextlib.contextmanager
def bytecode_cache() -> Iterator[Path]:
    """A private cache of compiled modules, filled with everything `warden run` imports before anything is timed.

    Without it, where PYTHONDONTWRITEBYTECODE is set (as it may be on a CI machine), every start
    compiles Warden's own modules from source, which a user's installation does once only.
    """
    with tempfile.TemporaryDirectory() as folder:
        env = with_bytecode(dict(os.environ), Path(folder))
        fill = (
            "import supervisor.cli, supervisor.plugins, daemons.stash.demo, daemons.qbittorrent.demo, "
            "daemons.stash.double.__main__; supervisor.plugins.discover()"
        )
        subprocess.run([sys.executable, "-c", fill], env=env, check=True)
        yield Path(folder)


@contextlib.contextmanager
def started(mode: str, folder: Path, cache: Path | None) -> Iterator[WardenProcess]:
    """Spawn `warden run` with its data in `folder`; stop it and all its children when the block ends."""
    config = folder / "warden.yaml"
    shutil.copyfile(SHIPPED_CONFIG, config)  # a copy: nothing may write to the repository's file
    port = free_port()
    env = with_bytecode(child_env(folder), cache) | MODES[mode]
    env |= {"WARDEN_SERVER__PORT": str(port), "WARDEN_SERVER__TOKEN": TOKEN, "WARDEN_PATHS__DATA_DIR": str(folder)}
    log_path = folder / "warden.log"
    with log_path.open("wb") as log:
        spawned_wall, spawned = time.time(), time.perf_counter()
        # Its own process group: if it has to be killed, its ffmpeg runs go with it (see stop for the others).
        process = subprocess.Popen(
            warden_command("run", "--config", str(config)),
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield WardenProcess(process, port, log_path, spawned, spawned_wall)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (a graceful shutdown stops the demo Stash and qbittorrent-nox too); then SIGKILL
    Warden's process group and the groups its children lead (each of them has its own)."""
    leaders = [pid for pid in descendants(process.pid) if _leads_group(pid)] if process.poll() is None else []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
    for group in [process.pid, *leaders]:
        with contextlib.suppress(ProcessLookupError):  # nothing of the group left: the usual case
            os.killpg(group, signal.SIGKILL)
    process.wait()


def _leads_group(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError):
        return os.getpgid(pid) == pid
    return False


def wait_ready(warden: WardenProcess) -> float:
    """Seconds from the spawn until GET /api/health answers 200."""
    deadline = time.monotonic() + READY_TIMEOUT
    while warden.get("api/health") is None:
        warden.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"/api/health not ready within {READY_TIMEOUT} s")
        time.sleep(POLL)
    return time.perf_counter() - warden.spawned


# -- start ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartResult:
    mode: str
    bytecode: str  # "cached", or "environment" (this environment's PYTHONDONTWRITEBYTECODE and __pycache__)
    ready_s: list[float]
    milestones_s: dict[str, float]  # median seconds after the spawn

    @property
    def median_s(self) -> float:
        return statistics.median(self.ready_s)


def measure_starts(mode: str, starts: int, cache: Path | None) -> StartResult:
    ready, events = [], []
    for _ in range(starts):
        with tempfile.TemporaryDirectory() as folder, started(mode, Path(folder), cache) as warden:
            ready.append(round(wait_ready(warden), 3))
            warden.wait_for_events({MILESTONES["daemons started"]}, READY_TIMEOUT)
            events.append(warden.log_events())
    milestones = {
        label: round(statistics.median(seen[event] for seen in events), 3)
        for label, event in MILESTONES.items()
        if all(event in seen for seen in events)
    }
    return StartResult(mode, "cached" if cache else "environment", ready, milestones)


# -- imports ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    interpreter_s: float  # `python -c pass`, median of the repeats
    import_cli_s: float  # `import supervisor.cli` in a fresh interpreter, median of the repeats
    rss_after_import_mb: float
    top_packages_s: dict[str, float]  # self time under -X importtime, summed per top-level package


IMPORT_CLI = (
    "import time; started = time.perf_counter(); import supervisor.cli; elapsed = time.perf_counter() - started; "
    "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]; print(elapsed, rss)"
)


def measure_imports(repeats: int, cache: Path, top: int = 10) -> ImportResult:
    env = with_bytecode(dict(os.environ), cache)

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True)

    interpreter = []
    for _ in range(repeats):
        begun = time.perf_counter()
        python("-c", "pass")
        interpreter.append(time.perf_counter() - begun)
    runs = [python("-c", IMPORT_CLI).stdout.split() for _ in range(repeats)]
    per_package: dict[str, float] = {}
    # Lines read "import time: <self µs> | <cumulative µs> | <indented module name>".
    for line in python("-X", "importtime", "-c", "import supervisor.cli").stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            per_package[package] = per_package.get(package, 0.0) + int(parts[0]) / 1e6
    ranked = sorted(per_package.items(), key=lambda item: item[1], reverse=True)[:top]
    return ImportResult(
        interpreter_s=round(statistics.median(interpreter), 3),
        import_cli_s=round(statistics.median(float(elapsed) for elapsed, _ in runs), 3),
        rss_after_import_mb=round(statistics.median(int(rss) for _, rss in runs) * 1024 / 1e6, 1),
        top_packages_s={package: round(seconds, 3) for package, seconds in ranked},
    )


# -- idle -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    name: str
    pid: int
    rss_mb: float
    peak_rss_mb: float  # VmHWM: the high-water mark since the process started
    anon_mb: float
    file_mb: float


@dataclass(frozen=True)
class IdleResult:
    mode: str
    settled: bool  # False: --settle ran out and the numbers were taken anyway
    library_made_before: bool | None  # demo: the videos were all made (ffmpeg done) before the measurement
    seconds_to_quiet: float  # after ready
    cpu_percent_quiet: float  # Warden's CPU over the quiet window
    warden: Memory
    demo_stash: Memory | None  # the demo Stash's own process (demo mode)
    children: list[Memory] = field(default_factory=list)  # the other children: qbittorrent-nox, an ffmpeg run
    messages: dict[str, str] = field(default_factory=dict)  # each daemon's status when measured


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def memory(pid: int, name: str | None = None) -> Memory:
    """The memory figures of `pid`, named `name` (else by its executable)."""
    status = proc_status(pid)

    def mb(key: str) -> float:
        return round(int(status[key].split()[0]) * 1024 / 1e6, 1)

    return Memory(name or status["Name"], pid, mb("VmRSS"), mb("VmHWM"), mb("RssAnon"), mb("RssFile"))


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc; the parent is the field after the name)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def children_memory(pid: int) -> list[Memory]:
    """The memory of every process below `pid`; one that exits meanwhile (an ffmpeg run) is left out.
    The demo Stash is named so (its process is a Python like Warden's)."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, KeyError):  # gone, or a zombie without Vm*
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            found.append(memory(child, "demo Stash" if DEMO_STASH_MODULE.encode() in command else None))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def quiet_now(warden: WardenProcess) -> bool:
    """Every daemon running and sleeping, no job pending or running."""
    daemons = warden.get("api/daemons")
    if daemons is None or not all(d["state"] == "running" and d["sleeping_until"] for d in daemons["daemons"]):
        return False
    jobs = [warden.get(f"api/jobs?status={status}") for status in ("pending", "running")]
    return all(found is not None and not found["jobs"] for found in jobs)


def wait_quiet(warden: WardenProcess, quiet: float, deadline: float) -> tuple[bool, float]:
    """Wait for `quiet` seconds in a row of quiet polls, or until `deadline` (monotonic).

    Returns whether they came, and Warden's CPU percent over them (over the whole wait if not).
    """
    pid = warden.process.pid

    def cpu_percent_since(began: float, cpu: float) -> float:
        return round(100 * (cpu_seconds(pid) - cpu) / (time.monotonic() - began), 1)

    began = since = time.monotonic()
    cpu_began = cpu_since = cpu_seconds(pid)
    while True:
        warden.check_alive()
        now = time.monotonic()
        if not quiet_now(warden):
            since, cpu_since = now, cpu_seconds(pid)
        elif now - since >= quiet:
            return True, cpu_percent_since(since, cpu_since)
        if now > deadline:
            return False, cpu_percent_since(began, cpu_began)
        time.sleep(0.25)


def measure_idle(mode: str, settle: float, quiet: float, cache: Path) -> IdleResult:
    with tempfile.TemporaryDirectory() as folder, started(mode, Path(folder), cache) as warden:
        wait_ready(warden)
        begun = time.monotonic()
        library_made = warden.wait_for_events(DEMO_MADE, settle, poll=0.5) if mode == "demo" else None
        settled, cpu_percent = wait_quiet(warden, quiet, begun + settle)
        pid = warden.process.pid
        daemons = (warden.get("api/daemons") or {"daemons": []})["daemons"]
        children = children_memory(pid)
        stash = [child for child in children if child.name == "demo Stash"]
        return IdleResult(
            mode=mode,
            settled=settled and library_made is not False,
            library_made_before=library_made,
            seconds_to_quiet=round(time.monotonic() - begun, 1),
            cpu_percent_quiet=cpu_percent,
            warden=memory(pid),
            demo_stash=stash[0] if stash else None,
            children=[child for child in children if child.name != "demo Stash"],
            messages={d["name"]: d["message"] for d in daemons},
        )


# -- report -----------------------------------------------------------------------------------


def print_starts(results: list[StartResult]) -> None:
    labels = list(MILESTONES)
    print(f"{'start: s after spawn':<32}{'ready':>7}{'min':>7}{'max':>7}" + "".join(f"{m:>20}" for m in labels))
    for result in results:
        label = f"{result.mode}, {result.bytecode} bytecode"
        cells = "".join(f"{result.milestones_s.get(m, '-'):>20}" for m in labels)
        print(f"{label:<32}{result.median_s:>7.3f}{min(result.ready_s):>7.3f}{max(result.ready_s):>7.3f}{cells}")
        verdict = "met" if result.median_s <= TARGET_READY_S else f"MISSED by {result.median_s - TARGET_READY_S:.2f} s"
        print(f"  ready {result.ready_s}; target <= {TARGET_READY_S} s: {verdict}")


def print_imports(result: ImportResult) -> None:
    print(f"\ninterpreter start {result.interpreter_s} s; import supervisor.cli {result.import_cli_s} s", end="")
    print(f" ({result.rss_after_import_mb} MB RSS after it)")
    print("slowest packages (self time under -X importtime, s): ", end="")
    print(", ".join(f"{name} {seconds}" for name, seconds in result.top_packages_s.items()))


def print_idle(results: list[IdleResult]) -> None:
    print(
        f"\n{'idle':<10}{'settled':>8}{'waited s':>9}{'cpu %':>7}{'RSS MB':>8}{'peak MB':>8}{'anon MB':>8}"
        f"{'demo Stash MB':>14}  other children"
    )
    for result in results:
        memory_ = result.warden
        stash = "-" if result.demo_stash is None else f"{result.demo_stash.rss_mb}"
        children = ", ".join(f"{c.name} {c.rss_mb} MB" for c in result.children) or "none"
        print(
            f"{result.mode:<10}{result.settled!s:>8}{result.seconds_to_quiet:>9}{result.cpu_percent_quiet:>7}"
            f"{memory_.rss_mb:>8}{memory_.peak_rss_mb:>8}{memory_.anon_mb:>8}{stash:>14}  {children}"
        )
        over = memory_.rss_mb - TARGET_IDLE_RSS_MB
        print(f"  target <= {TARGET_IDLE_RSS_MB:g} MB: {'met' if over <= 0 else f'MISSED by {over:.1f} MB'}", end="")
        if result.mode == "demo":
            made = "made before the measurement" if result.library_made_before else "NOT all made yet"
            print(f"; demo videos (ffmpeg) {made}", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5, help="starts per mode; the median is reported")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--settle", type=float, default=600, help="longest wait for the demo library and quiet")
    parser.add_argument("--quiet", type=float, default=25, help="seconds of quiet (the demo's longest interval is 20)")
    parser.add_argument("--import-repeats", type=int, default=3, help="fresh interpreters timed for the imports")
    parser.add_argument("--tiny", action="store_true", help="one no-demo start; demo idle after 2 s at most")
    options = parser.parse_args()
    start_modes = idle_modes = options.modes
    if options.tiny:
        # Each mode's code runs once: the demo's start is the slow one, so it is only the idle run.
        start_modes, idle_modes = ["no-demo"], ["demo"]
        options.starts, options.settle, options.quiet, options.import_repeats = 1, 2.0, 1.0, 1
    with bytecode_cache() as cache:
        starts = [measure_starts(mode, options.starts, cache) for mode in start_modes]
        if "demo" in start_modes and not options.tiny:  # for comparison: this environment's own bytecode setting
            starts.append(measure_starts("demo", options.starts, None))
        imports = measure_imports(options.import_repeats, cache)
        idle = [measure_idle(mode, options.settle, options.quiet, cache) for mode in idle_modes]
    schema = "real" if real_schema_files(default_schema_dir()) else "subset"
    print_starts(starts)
    print(f"the demo Stash builds the {schema} Stash schema")
    print_imports(imports)
    print_idle(idle)
    result = {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "demo_stash_schema": schema,
        "targets": {"ready_s": TARGET_READY_S, "idle_rss_mb": TARGET_IDLE_RSS_MB},
        "starts": [asdict(r) | {"median_s": r.median_s} for r in starts],
        "imports": asdict(imports),
        "idle": [asdict(r) for r in idle],
    }
    write_results("start_idle", result, tiny=options.tiny)


if __name__ == "__main__":
    main()
