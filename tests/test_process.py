"""Warden as a real process: signals, SIGKILL recovery and the CLI, checked through its SQLite file.

Each test runs `python -m supervisor` in a subprocess. The test daemons reach it the way a
third-party plugin would: a module plus a `.dist-info` folder declaring `warden.daemons` entry
points, on PYTHONPATH. The database is read with a read-only connection, so the test never
recovers or checkpoints the WAL in Warden's place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemons.children import free_port
from supervisor.plugins import discover

T = TypeVar("T")

STARTUP_TIMEOUT = 20.0  # a cold interpreter importing pydantic/aiohttp on a loaded CI machine
STOP_TIMEOUT = 5.0  # the busy daemons' stop_timeout
POLL = 0.02

PLUGIN_SOURCE = textwrap.dedent(
    '''
    """Test daemons shipped as a third-party plugin. Each proves its cleanup ran by writing a marker file."""

    import asyncio
    from pathlib import Path

    from pydantic import Field

    from supervisor import Daemon, DaemonConfig


    class MarkerConfig(DaemonConfig):
        marker: str = Field("", description="File written by the daemon's finally block.")


    class SpinA(Daemon):
        name = "spin_a"
        title = "Spin A"
        Config = MarkerConfig

        async def run(self):
            step = 0
            try:
                while True:
                    step += 1
                    await self.update_status(f"step {step}")
                    # Yield every step; every 200th, idle a moment so Warden's database thread gets the GIL.
                    await asyncio.sleep(0.001 if step % 200 == 0 else 0)
            finally:
                Path(self.config.marker).write_text(self.name)


    class SpinB(SpinA):
        name = "spin_b"
        title = "Spin B"


    # Load: eight more daemons updating as fast as they can (spin_1 ... spin_8).
    globals().update(
        {f"Spin{i}": type(f"Spin{i}", (SpinA,), {"name": f"spin_{i}", "title": f"Spin {i}"}) for i in range(1, 9)}
    )


    class Sleeper(Daemon):
        name = "sleeper"
        title = "Sleeper"
        Config = MarkerConfig

        async def run(self):
            try:
                while True:
                    await self.update_status("napping")
                    await self.sleep(0.05, "short nap")
            finally:
                Path(self.config.marker).write_text(self.name)


    class Importer(Daemon):
        """Runs one endless job that reports progress all the time."""

        name = "importer"
        title = "Importer"

        async def run(self):
            async def work(context):
                tick = 0
                while True:
                    tick += 1
                    context.progress(progress=tick % 100, message=f"tick {tick}")
                    await asyncio.sleep(0.005)

            await self.update_status("importing")
            await self.run_job("import", "all", work)


    class Finisher(Daemon):
        """Runs short jobs one after another; each job's result names it."""

        name = "finisher"
        title = "Finisher"

        async def run(self):
            async def work(context):
                await asyncio.sleep(0.01)
                return f"done {context.job.id}"

            batch = 0
            while True:
                batch += 1
                await self.update_status(f"batch {batch}")
                await self.run_job("batch", f"batch {batch}", work)


    class Stubborn(Daemon):
        name = "stubborn"
        title = "Stubborn"

        async def run(self):
            await self.update_status("ignoring cancellation")
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue  # the misbehaviour under test
    '''
)
DAEMON_CLASSES = {
    "spin_a": "SpinA",
    "spin_b": "SpinB",
    "sleeper": "Sleeper",
    "stubborn": "Stubborn",
    "importer": "Importer",
    "finisher": "Finisher",
    **{f"spin_{i}": f"Spin{i}" for i in range(1, 9)},
}
BUSY = ("spin_a", "spin_b", "sleeper")
LIFECYCLE = [
    ("transition", "stopped", "starting", "auto-start"),
    ("transition", "starting", "running", "auto-start"),
    ("transition", "running", "stopping", "shutdown"),
    ("transition", "stopping", "stopped", "shutdown"),
]


# -- setup ----------------------------------------------------------------------------------


def install_plugin(tmp_path: Path, names: tuple[str, ...]) -> Path:
    """A folder holding the plugin module and its dist-info, as pip would install it."""
    folder = tmp_path / "plugins"
    info = folder / "proc_daemons-1.0.dist-info"
    info.mkdir(parents=True)
    (folder / "proc_daemons.py").write_text(PLUGIN_SOURCE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: proc_daemons\nVersion: 1.0\n")
    entry_points = "".join(f"{name} = proc_daemons:{DAEMON_CLASSES[name]}\n" for name in names)
    (info / "entry_points.txt").write_text(f"[warden.daemons]\n{entry_points}")
    return folder


def write_config(tmp_path: Path, daemons: dict[str, dict[str, Any]]) -> Path:
    config = {
        "server": {"port": 0},  # any free port: the page is not under test here
        "paths": {"data_dir": str(tmp_path / "data")},
        "supervisor": {"watchdog_interval": 0.2, "shutdown_flush_timeout": 5},
        # A Stash URL keeps demo mode off (nothing listens there: the Stash daemons do not start).
        "stash": {"url": "http://127.0.0.1:9"},
        # The bundled daemons stay registered but idle, so only test daemons are active.
        "daemons": {**{name: {"auto_start": False} for name in discover().daemons}, **daemons},
    }
    path = tmp_path / "warden.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML, and quotes any tmp path safely
    return path


def busy_setup(tmp_path: Path) -> Path:
    """Plugin and config for the three busy daemons; returns the config path."""
    install_plugin(tmp_path, BUSY)
    return write_config(
        tmp_path, {name: {"marker": str(tmp_path / f"{name}.cleaned"), "stop_timeout": STOP_TIMEOUT} for name in BUSY}
    )


def stubborn_setup(tmp_path: Path, stop_timeout: float) -> Path:
    """Plugin and config for one daemon that ignores cancellation; returns the config path."""
    install_plugin(tmp_path, ("stubborn",))
    return write_config(tmp_path, {"stubborn": {"stop_timeout": stop_timeout}})


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WARDEN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "plugins"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # each log line is readable as soon as it is written
    return env


def warden_command(*args: str) -> list[str]:
    # --log-format belongs to the top-level parser: it must come before the subcommand.
    return [sys.executable, "-m", "supervisor", "--log-format", "json", *args]


# -- the process ------------------------------------------------------------------------------


@dataclass
class WardenProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (a partly written last line is skipped)."""
        lines = []
        for text in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(text))
        return lines

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def wait_for_log(self, event: str, timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
        return wait_until(
            lambda: next((line for line in self.log() if line.get("event") == event), None),
            f"log event {event!r}",
            self,
            timeout,
        )

    def wait_ready(self) -> str:
        """Wait for the "Warden running" line; returns this process's boot id."""
        return str(self.wait_for_log("Warden running")["boot"])

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"Warden still running {timeout} s later; log:\n{self.tail()}") from None


@contextlib.contextmanager
def running_warden(tmp_path: Path, config: Path, label: str) -> Iterator[WardenProcess]:
    """Start `warden run`; whatever the test does, the process is gone when the block ends."""
    # Output goes to a file, not a pipe: nothing to drain while waiting, and it is still there for failure messages.
    log_path = tmp_path / f"{label}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            warden_command("run", "--config", str(config)),
            cwd=tmp_path,
            env=child_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield WardenProcess(process, log_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_until(
    condition: Callable[[], T | None], what: str, warden: WardenProcess, timeout: float = STARTUP_TIMEOUT
) -> T:
    """Poll `condition` until it returns something truthy; fail early if Warden exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if warden.process.poll() is not None:
            raise AssertionError(f"Warden exited ({warden.process.returncode}) before {what}; log:\n{warden.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; log:\n{warden.tail()}")
        time.sleep(POLL)


# -- the database -------------------------------------------------------------------------------


def query(db: Path, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    # Read-only: after a SIGKILL, recovering the WAL is the next Warden's job, not the test's.
    connection = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def states(db: Path) -> dict[str, tuple[str, str, str]]:
    """daemon name -> (state, message, boot id)."""
    return {row[0]: row[1:] for row in query(db, "SELECT name, state, message, boot_id FROM daemon_state")}


def states_if_readable(db: Path) -> dict[str, tuple[str, str, str]]:
    """For polling while Warden creates the file: not there yet reads as no rows."""
    try:
        return states(db)
    except sqlite3.OperationalError:
        return {}


def wait_running(warden: WardenProcess, db: Path, boot: str, min_step: int = 0) -> dict[str, tuple[str, str, str]]:
    """Wait until every busy daemon's row says running in `boot` and spin_a is at `min_step` or past."""

    def busy() -> dict[str, tuple[str, str, str]] | None:
        rows = states_if_readable(db)
        running = all(name in rows and (rows[name][0], rows[name][2]) == ("running", boot) for name in BUSY)
        return rows if running and step_of(rows["spin_a"][1]) >= min_step else None

    return wait_until(busy, f"busy daemons running, spin_a at step {min_step}", warden)


def wait_recovered(warden: WardenProcess, db: Path, previous: str | None) -> str:
    """Wait until ready; after a kill, check the start recovered `previous` and auto-started again. Returns the boot."""
    boot = warden.wait_ready()
    if previous is not None:
        wait_running(warden, db, boot)
        # Exactly the daemons the killed process was running, recorded by this boot, each from `running`.
        wait_until(lambda: len(interrupted(db, previous)) >= len(BUSY), "interrupted events", warden)
        assert interrupted(db, previous) == dict.fromkeys(BUSY, ("running", "stopped", boot))
    return boot


def step_of(message: str) -> int:
    return int(message.removeprefix("step ")) if message.startswith("step ") else 0


def daemon_events(db: Path, name: str) -> list[tuple[str, str, str, str]]:
    return query(db, "SELECT kind, from_state, to_state, actor FROM events WHERE daemon = ? ORDER BY id", name)


def interrupted(db: Path, previous_boot: str) -> dict[str, tuple[str, str, str]]:
    """daemon -> (from_state, to_state, boot_id) of the recovery's `interrupted` events naming `previous_boot`."""
    rows = query(
        db,
        "SELECT daemon, from_state, to_state, boot_id FROM events "
        "WHERE kind = 'interrupted' AND actor = 'recovery' AND message LIKE ?",
        f"%(boot {previous_boot})%",
    )
    return {row[0]: row[1:] for row in rows}


def assert_intact(db: Path) -> None:
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


# -- tests ------------------------------------------------------------------------------------


def test_sigterm_stops_busy_daemons_cleanly_and_saves_their_final_state(tmp_path: Path) -> None:
    config = busy_setup(tmp_path)
    db = tmp_path / "data" / "warden.db"
    with running_warden(tmp_path, config, "warden") as warden:
        boot = warden.wait_ready()
        # Busy for real: every daemon's running row is committed and the spinners are well into their loops.
        wait_running(warden, db, boot, min_step=100)
        warden.send(signal.SIGTERM)
        assert warden.wait_exit(STOP_TIMEOUT + 10) == 0, warden.tail()

    final = states(db)
    for name in BUSY:
        assert final[name][0] == "stopped", (name, final[name])
        assert daemon_events(db, name) == LIFECYCLE, name
        assert (tmp_path / f"{name}.cleaned").read_text() == name, f"{name}'s finally block did not run"
    [(boot_id, pid, stopped_at)] = query(db, "SELECT id, pid, stopped_at FROM boots")
    assert (boot_id, pid) == (boot, warden.process.pid)
    assert stopped_at is not None, "the boot was not closed"
    assert_intact(db)


def test_second_signal_forces_exit_past_a_daemon_that_ignores_cancellation(tmp_path: Path) -> None:
    config = stubborn_setup(tmp_path, stop_timeout=30)
    with running_warden(tmp_path, config, "warden") as warden:
        warden.wait_ready()
        warden.send(signal.SIGTERM)
        warden.wait_for_log("shutting down: stopping every daemon", timeout=5)
        forced_at = time.monotonic()
        warden.send(signal.SIGTERM)
        code = warden.wait_exit(5)
        # > 0: Warden exited by itself (a negative code would mean the signal's default action killed it).
        assert code > 0, warden.tail()
        assert time.monotonic() - forced_at < 5, "the forced exit waited for stop_timeout"
        assert any(line.get("event") == "second signal: exiting now" for line in warden.log())


def test_one_signal_exits_without_a_daemon_that_outlives_its_stop_timeout(tmp_path: Path) -> None:
    # A daemon that outlives its stop_timeout must not keep Warden from exiting: cli._run leaves without it.
    stop_timeout = 0.5
    config = stubborn_setup(tmp_path, stop_timeout)
    db = tmp_path / "data" / "warden.db"
    with running_warden(tmp_path, config, "warden") as warden:
        boot = warden.wait_ready()
        warden.send(signal.SIGTERM)
        # stop_timeout, the stop command's own 1 s of slack, then a few seconds for the final write.
        assert warden.wait_exit(stop_timeout + 1 + 3) == 0, warden.tail()
        assert any(line.get("event") == "daemons did not stop; exiting without them" for line in warden.log())
    events = daemon_events(db, "stubborn")
    assert ("stop-timeout", None, None, "shutdown") in events
    assert ("abandoned", None, None, "shutdown") in events
    assert states(db)["stubborn"][0] == "stopped", "no stale 'stopping' is left for the next start to misread"
    assert query(db, "SELECT stopped_at IS NOT NULL FROM boots WHERE id = ?", boot) == [(1,)]


def test_sigkill_leaves_an_intact_database_and_the_next_start_recovers(tmp_path: Path) -> None:
    config = busy_setup(tmp_path)
    db = tmp_path / "data" / "warden.db"
    boots: list[str] = []
    # Kill as soon as the running rows are in, then ever deeper into the stream of writes.
    for cycle, kill_at_step in enumerate((0, 1_000, 5_000)):
        with running_warden(tmp_path, config, f"warden-{cycle}") as warden:
            boot = wait_recovered(warden, db, boots[-1] if boots else None)
            seen = step_of(wait_running(warden, db, boot, kill_at_step)["spin_a"][1])
            warden.process.kill()
            assert warden.wait_exit(5) == -signal.SIGKILL
        boots.append(boot)
        assert_intact(db)
        left = states(db)
        assert {name: (left[name][0], left[name][2]) for name in BUSY} == dict.fromkeys(BUSY, ("running", boot))
        assert step_of(left["spin_a"][1]) >= seen, "a committed write was lost"
        assert query(db, "SELECT stopped_at FROM boots WHERE id = ?", boot) == [(None,)]

    with running_warden(tmp_path, config, "warden-last") as warden:
        boots.append(wait_recovered(warden, db, boots[-1]))
        warden.send(signal.SIGTERM)
        assert warden.wait_exit(STOP_TIMEOUT + 10) == 0, warden.tail()
    assert_intact(db)
    assert {name: states(db)[name][0] for name in BUSY} == dict.fromkeys(BUSY, "stopped")
    assert query(db, "SELECT id, stopped_at IS NOT NULL FROM boots ORDER BY started_at") == [
        *((killed, 0) for killed in boots[:-1]),
        (boots[-1], 1),
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("supervisor:\n  watchdog_interval: 1\ndaemons:\n  disk_space:\n    interval: 0\n", 5),
        ("paths:\n  data_dir: var: x\nstore:\n  busy_timeout: 5\n", 2),
    ],
    ids=["invalid-value", "yaml-syntax"],
)
def test_check_config_rejects_an_invalid_file_naming_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "warden.yaml"
    path.write_text(text)
    result = run_to_end(tmp_path, "check-config", str(path))
    assert result.returncode == 1, result.stderr
    assert f"line {line}:" in result.stderr
    assert "Traceback" not in result.stderr, "an invalid file is reported, not crashed on"


def jobs(db: Path) -> list[tuple[str, str, str | None]]:
    """(id, status, error) of every job, oldest first."""
    try:
        return query(db, "SELECT id, status, error FROM jobs ORDER BY created_at")
    except sqlite3.OperationalError:  # not created yet
        return []


def relaunched(db: Path) -> list[tuple[str, str, str | None]] | None:
    """Both jobs, once the one after the restart runs."""
    rows = jobs(db)
    return rows if len(rows) == 2 and rows[1][1] == "running" else None


def test_a_job_killed_with_warden_is_marked_interrupted_and_the_daemon_relaunches_it(tmp_path: Path) -> None:
    install_plugin(tmp_path, ("importer",))
    config = write_config(tmp_path, {"importer": {}})
    db = tmp_path / "data" / "warden.db"
    with running_warden(tmp_path, config, "first") as warden:
        warden.wait_ready()
        [(killed_job, _, _)] = wait_until(
            lambda: [row for row in jobs(db) if row[1] == "running"] or None, "a running job on disk", warden
        )
        warden.process.kill()
        assert warden.wait_exit(5) == -signal.SIGKILL
    assert_intact(db)
    assert jobs(db) == [(killed_job, "running", None)], "the killed process left its job running"
    with running_warden(tmp_path, config, "second") as warden:
        warden.wait_ready()
        rows = wait_until(lambda: relaunched(db), "a new job", warden)
        assert rows[0] == (killed_job, "failed", "interrupted: Warden stopped unexpectedly")
        warden.send(signal.SIGTERM)
        assert warden.wait_exit(STOP_TIMEOUT + 5) == 0
    assert [status for _, status, _ in jobs(db)] == ["failed", "cancelled"], "shutdown cancelled the new job"


def run_to_end(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A warden command that ends by itself (a check, a refused start): its exit code and output."""
    return subprocess.run(
        warden_command(*args),
        cwd=tmp_path,
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )


def test_a_second_warden_on_the_same_database_or_port_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    config = busy_setup(tmp_path)
    db = tmp_path / "data" / "warden.db"
    with running_warden(tmp_path, config, "first") as first:
        boot = first.wait_ready()
        wait_running(first, db, boot)
        second = run_to_end(tmp_path, "run", "--config", str(config))
        assert second.returncode == 2 and "is in use by another Warden" in second.stderr, second.stderr
        assert query(db, "SELECT count(*) FROM events WHERE kind = 'interrupted'") == [(0,)], "nothing was touched"
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            other = json.loads(config.read_text())
            other["server"]["port"], other["paths"]["data_dir"] = port, str(tmp_path / "other-data")
            (tmp_path / "other.yaml").write_text(json.dumps(other))
            third = run_to_end(tmp_path, "run", "--config", str(tmp_path / "other.yaml"))
        assert third.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in third.stderr, third.stderr
        assert "Traceback" not in second.stderr + third.stderr
        first.send(signal.SIGTERM)
        assert first.wait_exit(STOP_TIMEOUT + 5) == 0


# -- what `warden run` loads, and demo mode's processes ----------------------------------------

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "warden.yaml"
TOKEN = "process-test-token-0123456789"
#: Modules only demo mode needs (graphql-core and the Stash double run in a child process even then).
DEMO_ONLY = ("daemons.stash.demo", "daemons.qbittorrent.demo", "torf")
NEVER_IN_WARDEN = ("graphql", "daemons.stash.double")
#: Runs Warden as `warden run` does; once its daemons are started, prints the modules it has loaded.
REPORTING_WARDEN = textwrap.dedent(
    """
    import json, sys, threading, time, urllib.request
    from supervisor import cli

    def report(port, token):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/health", headers={"Authorization": f"Bearer {token}"}
        )
        while True:
            try:
                with opener.open(request, timeout=5) as response:
                    if not json.load(response)["starting"]:
                        break
            except OSError:  # not listening yet, or 503
                pass
            time.sleep(0.02)
        print(json.dumps(sorted(sys.modules)), flush=True)

    threading.Thread(target=report, args=sys.argv[1:3], daemon=True).start()
    sys.exit(cli.main(["--log-format", "json", "run", "--config", sys.argv[3]]))
    """
)


def children_of(pid: int) -> dict[int, str]:
    """Live direct children of `pid`: their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended meanwhile
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def reporting_warden(tmp_path: Path, demo: bool) -> Iterator[tuple[subprocess.Popen[str], set[str]]]:
    """Warden on the shipped config (demo mode, or a Stash URL where nothing listens); yields the process and
    the modules it had loaded once its daemons were started. It and every child it had are gone afterwards."""
    config = tmp_path / "warden.yaml"
    config.write_text(SHIPPED_CONFIG.read_text())
    port = free_port()
    env = child_env(tmp_path) | {"WARDEN_SERVER__TOKEN": TOKEN, "WARDEN_PATHS__DATA_DIR": str(tmp_path / "data")}
    env |= {"WARDEN_SERVER__PORT": str(port)} | ({} if demo else {"WARDEN_STASH__URL": "http://127.0.0.1:9"})
    with (tmp_path / "warden.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", REPORTING_WARDEN, str(port), TOKEN, str(config)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    children: dict[int, str] = {}
    try:
        assert process.stdout is not None
        # Its own lines come first ("Warden is running: <url>"); the report once its daemons are started.
        line = next((line for line in process.stdout if line.startswith("[")), "")
        tail = (tmp_path / "warden.log").read_text(errors="replace")[-3000:]
        assert line.startswith("["), f"Warden exited ({process.poll()}) before its daemons started:\n{tail}"
        children.update(children_of(process.pid))
        yield process, set(json.loads(line))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for pid in children:
            if alive(pid):  # each child leads its own process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def test_warden_run_without_demo_mode_loads_nothing_of_it(tmp_path: Path) -> None:
    with reporting_warden(tmp_path, demo=False) as (process, modules):
        assert "daemons.stash_sync" in modules, "the bundled daemons are loaded"
        assert modules.isdisjoint(DEMO_ONLY + NEVER_IN_WARDEN), sorted(modules & {*DEMO_ONLY, *NEVER_IN_WARDEN})
        assert children_of(process.pid) == {}
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT + 10) == 0


def test_demo_mode_runs_its_stash_as_a_child_process_that_is_gone_when_warden_stops(tmp_path: Path) -> None:
    with reporting_warden(tmp_path, demo=True) as (process, modules):
        assert "daemons.stash.demo" in modules
        assert modules.isdisjoint(NEVER_IN_WARDEN), "the Stash double runs in Warden's process"
        children = children_of(process.pid)
        [double] = [pid for pid, command in children.items() if "-m daemons.stash.double" in command]
        assert "--parent-pipe" in children[double]
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT + 10) == 0
        assert [pid for pid in children if alive(pid)] == [], "a child of Warden outlived it"
