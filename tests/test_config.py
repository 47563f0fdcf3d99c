"""The config file: errors that name key and line, edits that change nothing unless valid, hand
edits that reach running daemons, and the environment overriding the file."""

from __future__ import annotations

import difflib
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar

import pytest
import structlog
from pydantic import Field

from supervisor import Daemon, DaemonConfig
from supervisor.app import load_config
from supervisor.cli import main
from supervisor.config import WardenSettings, settings_model
from supervisor.configfile import ConfigConflict, ConfigError, ConfigFile, Overlay, parse
from supervisor.models import Actor, DaemonState
from supervisor.plugins import discover
from tests.daemons_for_tests import Worker
from tests.harness import Kernel, running_kernel

S = DaemonState
REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "warden.yaml"


class Ticker(Daemon):
    """A second daemon, to show that a change to one section leaves the others alone."""

    name = "ticker"
    title = "Ticker"
    runs: ClassVar[int] = 0

    class Config(DaemonConfig):
        period: float = Field(60, ge=1, description="Seconds between ticks.")

    async def run(self) -> None:
        type(self).runs += 1
        while True:
            await self.update_status("tick")
            await self.sleep(self.config.period, "next tick")


MODEL = settings_model({"worker": Worker.Config, "ticker": Ticker.Config})

WORKER_YAML = """\
# test config
server:
  port: 8765      # web page
daemons:
  worker:
    interval: 30  # seconds between rounds
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither a .env in the working folder nor WARDEN_* variables of the person running the tests may leak in.
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.upper().startswith("WARDEN_")]:
        monkeypatch.delenv(name)
    Worker.runs = Worker.cleanups = Ticker.runs = 0


def write_config(tmp_path: Path, text: str, model: type[WardenSettings] = MODEL) -> ConfigFile:
    path = tmp_path / "warden.yaml"
    path.write_text(text, encoding="utf-8")
    return ConfigFile.load(path, model)


@asynccontextmanager
async def live_config(tmp_path: Path, text: str, *classes: type[Daemon]) -> AsyncIterator[tuple[ConfigFile, Kernel]]:
    """A kernel running `classes` whose settings come from a config file, wired like Warden does."""
    config = write_config(tmp_path, text, settings_model({cls.name: cls.Config for cls in classes}))
    async with running_kernel(list(classes), tmp_path, settings=config.settings) as kernel:
        config.on_change(kernel.supervisor.apply_settings)
        yield config, kernel


def transitions(kernel: Kernel, name: str) -> list[tuple[DaemonState | None, DaemonState | None, Actor]]:
    return [(e.from_state, e.to_state, e.actor) for e in kernel.events if e.daemon == name and e.kind == "transition"]


def changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines between two texts."""
    diff = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    return [line[2:] for line in diff if line.startswith("- ")], [line[2:] for line in diff if line.startswith("+ ")]


# -- validation errors name the key and its line ---------------------------------------------

INVALID_FILES = {
    "out of bounds": (
        "daemons:\n  worker:\n    interval: 5\n    watchdog_timeout: 0\n",
        "daemons.worker.watchdog_timeout",
        4,
    ),
    "unknown key": ("daemons:\n  worker:\n    intervall: 5\n", "daemons.worker.intervall", 3),
    "wrong type": ('server:\n  host: 0.0.0.0\n  port: "abc"\n', "server.port", 3),
    "unknown section": ("server:\n  port: 80\nservr:\n  port: 81\n", "servr", 3),
    "bad indentation": ("server:\n  port: 80\n   host: 0.0.0.0\nstash:\n  timeout: 3\n", "", 3),
    "duplicate key": ("server:\n  port: 80\n  port: 81\n", "", 3),
    # The parser notices an unclosed bracket at the next key; the message must still name the bracket's line.
    "unclosed bracket": ("daemons:\n  worker: {interval: 3\nstash:\n  timeout: 3\n", "", 3, "line 2"),
    "unclosed bracket at the end": ("server:\n  port: 80\ndaemons:\n  worker: {interval: 3\n", "", 4),
}


@pytest.mark.parametrize("case", INVALID_FILES.values(), ids=INVALID_FILES.keys())
def test_invalid_file_names_key_and_line(tmp_path, case):
    text, key, line, *also = case
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, text)
    [issue] = raised.value.issues
    assert (issue.path, issue.line) == (key, line)
    assert all(extra in issue.message for extra in also)
    assert str(tmp_path / "warden.yaml") in str(raised.value)


def test_every_invalid_value_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, "server:\n  port: 70000\ndaemons:\n  worker:\n    interval: 0\n    restart: sometimes\n")
    assert {(i.path, i.line) for i in raised.value.issues} == {
        ("server.port", 2),
        ("daemons.worker.interval", 5),
        ("daemons.worker.restart", 6),
    }


def test_sections_with_every_key_commented_out_take_the_defaults(tmp_path):
    # The shipped file says "every key is optional": commenting out a whole section must stay valid.
    config = write_config(tmp_path, "server:\n  # port: 80\nstore:\ndaemons:\n  worker:\n    # interval: 5\n")
    assert config.settings.server.port == 8765
    assert config.settings.daemons.worker.interval == 30


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[Path], tuple[int, str]]]:
    """Run `warden check-config PATH`; returns (exit code, stderr)."""
    # main() points structlog at the captured stderr, which is closed after the test: restore the old setup.
    saved = structlog.get_config()

    def check_config(path: Path) -> tuple[int, str]:
        code = main(["check-config", str(path)])
        return code, capsys.readouterr().err

    yield check_config
    structlog.configure(**saved)


def test_check_config_reports_path_and_line(tmp_path, cli):
    path = tmp_path / "warden.yaml"
    path.write_text(REPO_CONFIG.read_text().replace("port: 8765", 'port: "abc"'))
    line = 1 + next(i for i, text in enumerate(path.read_text().splitlines()) if 'port: "abc"' in text)
    code, err = cli(path)
    assert code == 1
    assert str(path) in err
    assert f"line {line}: server.port" in err


def test_check_config_accepts_the_shipped_file(tmp_path, cli):
    path = tmp_path / "warden.yaml"
    shutil.copy(REPO_CONFIG, path)
    assert cli(path) == (0, "")


# -- edits through the API --------------------------------------------------------------------

INVALID_EDITS: dict[str, tuple[Callable[[ConfigFile], Awaitable[object]], str]] = {
    "update out of bounds": (
        lambda c: c.update_daemon("worker", {"watchdog_timeout": 0}),
        "daemons.worker.watchdog_timeout",
    ),
    "update unknown key": (lambda c: c.update_daemon("worker", {"intervall": 5}), "daemons.worker.intervall"),
    "update unknown daemon": (lambda c: c.update_daemon("nobody", {"enabled": False}), "daemons.nobody"),
    "replace broken yaml": (lambda c: c.replace("server:\n  port: [80\n"), ""),
    "replace wrong type": (lambda c: c.replace("server:\n  port: abc\n"), "server.port"),
}


@pytest.mark.parametrize(("edit", "key"), INVALID_EDITS.values(), ids=INVALID_EDITS.keys())
async def test_invalid_edit_changes_nothing(tmp_path, edit, key):
    config = write_config(tmp_path, WORKER_YAML)
    before, settings, etag = config.path.read_bytes(), config.settings, config.etag
    notified: list[WardenSettings] = []

    async def listener(new: WardenSettings) -> None:
        notified.append(new)

    config.on_change(listener)
    with pytest.raises(ConfigError) as raised:
        await edit(config)
    assert [issue.path for issue in raised.value.issues] == [key]
    assert config.path.read_bytes() == before
    assert config.settings is settings and config.etag == etag
    assert notified == []
    assert sorted(tmp_path.iterdir()) == [config.path], "no temporary file left behind"
    # The rejected change must not ride along with the next valid edit.
    await config.update_daemon("worker", {"max_restarts": 2})
    assert changed_lines(before.decode(), config.path.read_text()) == ([], ["    max_restarts: 2"])


# Added lines are patterns: ruamel may re-pad a changed value, but the line's own comment must survive.
UPDATES = {
    "change a value": (
        {"interval": 120},
        ["    interval: 60              # seconds between checks"],
        [r"    interval: 120 +# seconds between checks"],
    ),
    "add a key": ({"max_restarts": 3}, [], [r"    max_restarts: 3"]),
    "remove a key": (
        {"min_free_percent": None},
        ["    min_free_percent: 5       # warn below this share of free space"],
        [],
    ),
    "same value": ({"interval": 60}, [], []),
}


@pytest.mark.parametrize(("values", "removed", "added"), UPDATES.values(), ids=UPDATES.keys())
async def test_update_daemon_keeps_comments_and_order(tmp_path, values, removed, added):
    path = tmp_path / "warden.yaml"
    shutil.copy(REPO_CONFIG, path)
    registry = discover()
    config = load_config(path, registry)
    old = path.read_text()
    await config.update_daemon("disk_space", values)
    got_removed, got_added = changed_lines(old, path.read_text())
    assert got_removed == removed
    assert len(got_added) == len(added) and all(map(re.fullmatch, added, got_added)), got_added
    assert config.settings.model_dump() == load_config(path, registry).settings.model_dump(), "memory matches disk"
    assert all(getattr(config.settings.daemons.disk_space, k) == v for k, v in values.items() if v is not None)


async def test_stale_etag_conflicts_and_changes_nothing(tmp_path):
    config = write_config(tmp_path, WORKER_YAML)
    stale = config.etag
    await config.update_daemon("worker", {"interval": 5})
    before, settings = config.path.read_bytes(), config.settings
    with pytest.raises(ConfigConflict):
        await config.replace("server:\n  port: 9000\n", expected_etag=stale)
    assert config.path.read_bytes() == before and config.settings is settings
    await config.replace("server:\n  port: 9000\n", expected_etag=config.etag)
    assert config.path.read_text() == "server:\n  port: 9000\n"
    assert config.settings.server.port == 9000 and config.settings.daemons.worker.interval == 30


API_EDITS = {
    "replace with etag": lambda c: c.replace("server:\n  port: 9000\n", expected_etag=c.etag),
    "update a daemon": lambda c: c.update_daemon("worker", {"interval": 5}),
}


@pytest.mark.parametrize("hand_edit", ["server:\n  port: 9001\n", "server:\n  port: [\n"], ids=["valid", "invalid"])
@pytest.mark.parametrize("edit", API_EDITS.values(), ids=API_EDITS.keys())
async def test_api_edit_never_overwrites_an_unseen_hand_edit(tmp_path, edit, hand_edit):
    # A person saved the file by hand and the poll has not picked it up (or rejected it): their text must survive.
    config = write_config(tmp_path, WORKER_YAML)
    config.path.write_text(hand_edit)
    with pytest.raises(ConfigConflict):
        await edit(config)
    assert config.path.read_text() == hand_edit


# -- hand edits reach the running daemons -------------------------------------------------------


async def test_hand_edit_restarts_the_daemon_with_the_new_value(tmp_path):
    async with live_config(tmp_path, WORKER_YAML, Worker) as (config, kernel):
        await kernel.supervisor.start("worker")
        config.path.write_text(WORKER_YAML.replace("interval: 30", "interval: 45"))
        assert await config.reload_if_changed() is True
        await kernel.until(lambda: (S.STARTING, S.RUNNING, Actor.CONFIG) in transitions(kernel, "worker"))
        assert transitions(kernel, "worker")[2:] == [
            (S.RUNNING, S.STOPPING, Actor.CONFIG),
            (S.STOPPING, S.STOPPED, Actor.CONFIG),
            (S.STOPPED, S.STARTING, Actor.CONFIG),
            (S.STARTING, S.RUNNING, Actor.CONFIG),
        ]
        runner = kernel.supervisor.runner("worker")
        assert runner.config.interval == 45
        assert runner.daemon is not None and runner.daemon.config.interval == 45, "the new instance runs with it"
        assert Worker.runs == 2 and Worker.cleanups == 1
        assert await config.reload_if_changed() is False, "an unchanged file is not applied twice"


def break_by_invalid_value(path: Path) -> None:
    path.write_text(WORKER_YAML.replace("interval: 30", "interval: -1"))


def break_by_deleting(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("breakage", "reported"),
    [(break_by_invalid_value, "line 6: daemons.worker.interval"), (break_by_deleting, "cannot read the file")],
    ids=["invalid", "deleted"],
)
async def test_broken_hand_edit_changes_nothing_and_is_reported(tmp_path, breakage, reported):
    async with live_config(tmp_path, WORKER_YAML, Worker) as (config, kernel):
        await kernel.supervisor.start("worker")
        runner, settings = kernel.supervisor.runner("worker"), config.settings
        config_before = runner.config
        statuses: list[dict] = []
        config.on_status(statuses.append)  # what the page's config banner shows
        breakage(config.path)
        assert await config.reload_if_changed() is False
        assert config.last_error is not None and reported in str(config.last_error)
        assert statuses[-1]["error"] is not None and reported in statuses[-1]["error"]
        assert config.settings is settings and runner.config is config_before
        assert kernel.state("worker") is S.RUNNING and Worker.runs == 1
        # Repairing the file (back to the running text) clears the error without a restart.
        config.path.write_text(WORKER_YAML)
        assert await config.reload_if_changed() is False
        assert config.last_error is None and statuses[-1]["error"] is None
        assert kernel.state("worker") is S.RUNNING and Worker.runs == 1, "no restart"


async def test_change_to_one_section_leaves_other_daemons_alone(tmp_path):
    text = WORKER_YAML + "  ticker:\n    period: 60\n"
    async with live_config(tmp_path, text, Worker, Ticker) as (config, kernel):
        await kernel.supervisor.start_all()
        ticker = kernel.supervisor.runner("ticker")
        ticker_config, ticker_daemon = ticker.config, ticker.daemon
        await config.update_daemon("worker", {"interval": 45})
        await kernel.until(lambda: (S.STARTING, S.RUNNING, Actor.CONFIG) in transitions(kernel, "worker"))
        assert Worker.runs == 2
        assert Ticker.runs == 1 and ticker.daemon is ticker_daemon and ticker.config == ticker_config
        assert [e for e in kernel.events if e.daemon == "ticker" and e.actor is Actor.CONFIG] == []


async def test_disable_and_enable_through_the_config(tmp_path):
    async with live_config(tmp_path, WORKER_YAML, Worker) as (config, kernel):
        await kernel.supervisor.start("worker")
        await config.update_daemon("worker", {"enabled": False})
        assert kernel.state("worker") is S.DISABLED
        assert Worker.cleanups == 1 and kernel.supervisor.runner("worker").task.done()
        await config.update_daemon("worker", {"enabled": None})  # back to the default: enabled, auto_start
        assert kernel.state("worker") is S.RUNNING and Worker.runs == 2
        await kernel.until(lambda: len(transitions(kernel, "worker")) == 8)
        assert transitions(kernel, "worker")[2:] == [
            (S.RUNNING, S.STOPPING, Actor.CONFIG),
            (S.STOPPING, S.STOPPED, Actor.CONFIG),
            (S.STOPPED, S.DISABLED, Actor.CONFIG),
            (S.DISABLED, S.STOPPED, Actor.CONFIG),
            (S.STOPPED, S.STARTING, Actor.CONFIG),
            (S.STARTING, S.RUNNING, Actor.CONFIG),
        ]


async def test_enabling_without_auto_start_leaves_the_daemon_stopped(tmp_path):
    text = WORKER_YAML + "    enabled: false\n    auto_start: false\n"
    async with live_config(tmp_path, text, Worker) as (config, kernel):
        assert kernel.state("worker") is S.DISABLED
        await config.update_daemon("worker", {"enabled": True})
        assert kernel.state("worker") is S.STOPPED and Worker.runs == 0


# -- the environment and .env override the file --------------------------------------------------


def test_environment_overrides_single_keys_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_SERVER__PORT", "9000")
    monkeypatch.setenv("WARDEN_DAEMONS__WORKER__INTERVAL", "7")
    config = write_config(tmp_path, "server:\n  host: 0.0.0.0\n  port: 8000\ndaemons:\n  worker:\n    interval: 30\n")
    settings = config.settings
    assert settings.server.port == 9000 and settings.daemons.worker.interval == 7
    assert settings.server.host == "0.0.0.0", "the rest of the section still comes from the file"


def test_invalid_environment_value_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_SERVER__PORT", "abc")
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, WORKER_YAML)
    [issue] = raised.value.issues
    assert issue.path == "server.port"
    assert issue.line is None and "WARDEN_SERVER__PORT" in issue.message, "blamed on the variable, not a file line"


def test_secret_from_the_environment_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_STASH__API_KEY", "sekrit")
    settings = write_config(tmp_path, WORKER_YAML).settings
    assert settings.stash.api_key is not None and settings.stash.api_key.get_secret_value() == "sekrit"
    for shown in (repr(settings), str(settings), str(settings.model_dump(mode="json")), settings.model_dump_json()):
        assert "sekrit" not in shown


def test_dotenv_supplies_secrets_and_ignores_unrelated_entries(tmp_path):
    # A .env is often shared with other tools (docker compose); their entries must not invalidate Warden's config.
    (tmp_path / ".env").write_text(
        "COMPOSE_PROJECT_NAME=media\nWARDEN_CONFIG=warden.yaml\nWARDEN_STASH__API_KEY=sekrit\n"
    )
    settings = write_config(tmp_path, WORKER_YAML).settings
    assert settings.stash.api_key is not None and settings.stash.api_key.get_secret_value() == "sekrit"


# -- an overlay (demo mode) lies around the file without touching it ---------------------------


async def test_an_overlay_sets_defaults_under_the_file_and_overrides_over_it(tmp_path):
    config = write_config(tmp_path, WORKER_YAML)
    changes = []

    async def heard(settings: WardenSettings) -> None:
        changes.append(settings)

    config.on_change(heard)
    overlay = Overlay(
        defaults={"daemons": {"worker": {"interval": 2, "log_level": "debug"}}},
        overrides={"stash": {"url": "http://127.0.0.1:4242", "api_key": "demo-key"}},
    )
    settings = await config.add_overlay(overlay)
    worker = settings.daemon_config("worker")
    assert (worker.interval, worker.log_level) == (30, "debug")  # the file's interval wins; the overlay fills the rest
    assert settings.stash.url == "http://127.0.0.1:4242"
    assert changes == [settings]
    assert (tmp_path / "warden.yaml").read_text() == WORKER_YAML  # never written to the file

    (tmp_path / "warden.yaml").write_text(WORKER_YAML.replace("interval: 30", "interval: 45"))
    assert await config.reload_if_changed()
    assert config.settings.daemon_config("worker").interval == 45
    assert (
        config.settings.daemon_config("worker").log_level == "debug"
        and config.settings.stash.url == "http://127.0.0.1:4242"
    )

    # A second overlay (demo mode's qBittorrent) lies over the first without undoing it.
    second = Overlay(
        defaults={"daemons": {"worker": {"log_level": "warning"}}},
        overrides={"qbittorrent": {"url": "http://127.0.0.1:4343"}},
    )
    settings = await config.add_overlay(second)
    assert settings.qbittorrent.url == "http://127.0.0.1:4343"
    assert settings.stash.url == "http://127.0.0.1:4242" and settings.stash.api_key is not None
    assert settings.daemon_config("worker").log_level == "warning"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9999/stash", "ftp://host:21", "127.0.0.1:9999", "http://me:pw@host:9999"]
)
def test_a_stash_url_with_a_path_or_no_http_scheme_is_refused(tmp_path, url):
    with pytest.raises(ConfigError, match=r"line 2: stash\.url"):
        write_config(tmp_path, f"stash:\n  url: {url}\n")


def test_overrides_beat_the_environment_too(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_STASH__URL", "http://192.0.2.1:9999")
    monkeypatch.setenv("WARDEN_STASH__API_KEY", "the-real-stash-key")
    _, settings = parse(
        "stash:\n  timeout: 5\n",
        MODEL,
        "test",
        Overlay(overrides={"stash": {"url": "http://127.0.0.1:4242", "api_key": "demo-key"}}),
    )
    assert settings.stash.url == "http://127.0.0.1:4242"
    assert settings.stash.api_key is not None and settings.stash.api_key.get_secret_value() == "demo-key"
    assert settings.stash.timeout == 5
