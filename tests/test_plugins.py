"""Finding daemons: the bundled ones, entry points of installed packages, and broken plugins reported
by name without taking the others (or the config file) down with them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.disk_space import DiskSpace
from supervisor.app import load_config
from supervisor.configfile import ConfigError
from supervisor.plugins import ENTRY_POINT_GROUP, Registry, discover

RUN = "async def run(self) -> None: await self.update_status('ok')"
FIELD = 'level: int = Field(1, ge=0, description="How loud.")'


def daemon_source(name: str, field: str = FIELD, run: str = RUN) -> str:
    """A plugin module with one daemon class, `Plugin`; the arguments break it in chosen ways."""
    return (
        "from pydantic import Field\n"
        "from supervisor import Daemon, DaemonConfig\n\n\n"
        "class Plugin(Daemon):\n"
        f"    name = {name!r}\n"
        "    title = 'A plugin'\n\n"
        "    class Config(DaemonConfig):\n"
        f"        {field}\n\n"
        f"    {run}\n"
    )


class Site:
    """A folder on sys.path that plays site-packages: plugin modules and their distributions."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def module(self, name: str, source: str) -> None:
        path = self.root / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")

    def distribution(self, name: str, entry_points: dict[str, str]) -> None:
        info = self.root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8")
        lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}", encoding="utf-8")
        importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(tmp_path)  # no .env of the working folder in the config tests below
    yield Site(root)
    # The plugin modules must not outlive the test: the next one writes its own under the same names.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]
    importlib.invalidate_caches()


def error_names(registry: Registry) -> dict[str, str]:
    return {error.name: error.error for error in registry.errors}


def test_bundled_disk_space_daemon_is_found():
    registry = discover()
    assert registry.daemons["disk_space"] is DiskSpace
    assert "disk_space" not in error_names(registry)


def test_entry_point_daemon_is_found_and_its_section_validated(site, tmp_path):
    site.module("wp_extra", daemon_source("extra"))
    site.distribution("warden_extra", {"extra": "wp_extra:Plugin"})
    registry = discover()
    assert registry.daemons["extra"].__module__ == "wp_extra"
    assert registry.daemons["disk_space"] is DiskSpace, "the bundled daemons still load"
    path = tmp_path / "warden.yaml"
    path.write_text("daemons:\n  extra:\n    level: 3\n")
    assert load_config(path, registry).settings.daemons.extra.level == 3
    path.write_text("daemons:\n  extra:\n    level: -1\n")
    with pytest.raises(ConfigError, match=r"line 3: daemons\.extra\.level"):
        load_config(path, registry)


BROKEN = {
    "import fails": ("raise ImportError('needs libfoo, which is not installed')", "ImportError: needs libfoo"),
    "invalid name": (daemon_source("Broken-Name"), "`name` must be lowercase"),
    "reserved name": (daemon_source("model_dump"), "is reserved"),
    "sync run": (daemon_source("broken", run="def run(self) -> None: pass"), "`run` must be an `async def` method"),
    "no run": (daemon_source("broken", run="pass"), "`run` must be an `async def` method"),
    "undocumented field": (daemon_source("broken", field="level: int = 1"), "without a description: level"),
    "default fails validation": (
        daemon_source("broken", field='level: int = Field(0, ge=1, description="How loud.")'),
        "Config() fails with its defaults",
    ),
    "no default": (
        daemon_source("broken", field='level: int = Field(description="How loud.")'),
        "Config() fails with its defaults",
    ),
}


@pytest.mark.parametrize(("source", "reason"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_entry_point_is_reported_by_name_and_isolated(site, tmp_path, source, reason):
    site.module("wp_extra", daemon_source("extra"))
    site.module("wp_broken", source)
    site.distribution("warden_extra", {"extra": "wp_extra:Plugin", "broken": "wp_broken:Plugin"})
    registry = discover()
    assert "broken" not in registry.daemons
    assert set(registry.daemons) >= {"extra", "disk_space"}, "the good plugins still load"
    [error] = [error for error in registry.errors if error.name == "broken"]
    assert reason in error.error
    assert "wp_broken:Plugin" in error.source
    # The file may keep the section of a plugin that failed: it is kept as is, not validated.
    path = tmp_path / "warden.yaml"
    path.write_text("daemons:\n  broken:\n    level: 99\n  extra:\n    level: 2\n")
    assert load_config(path, registry).settings.daemons.extra.level == 2


def test_entry_point_that_is_not_a_daemon_class_is_reported(site):
    site.module("wp_odd", "def Plugin() -> None:\n    pass\n")
    site.distribution("warden_odd", {"odd": "wp_odd:Plugin", "missing": "wp_odd:Nothing"})
    errors = error_names(discover())
    assert "is not a subclass of supervisor.Daemon" in errors["odd"]
    assert errors["missing"].startswith("AttributeError")


def test_plugin_cannot_take_a_bundled_daemons_name(site):
    site.module("wp_impostor", daemon_source("disk_space"))
    site.distribution("warden_impostor", {"disk_space": "wp_impostor:Plugin"})
    registry = discover()
    assert registry.daemons["disk_space"] is DiskSpace
    assert "already taken by daemons.disk_space" in error_names(registry)["disk_space"]


def test_broken_bundled_daemon_is_reported_under_its_section_name(site, tmp_path):
    # The config section is keyed by the daemon's `name`, not by its class or module name.
    site.module("wp_bundled.__init__", "")
    site.module("wp_bundled.good", daemon_source("good"))
    site.module("wp_bundled.undocumented", daemon_source("quiet", field="level: int = 1"))
    site.module("wp_bundled.crashes", "raise RuntimeError('no config for you')")
    registry = discover(bundled="wp_bundled", group="warden.none")
    assert list(registry.daemons) == ["good"]
    assert error_names(registry) == {
        "crashes": "RuntimeError: no config for you",
        "quiet": "Config fields without a description: level",
    }
    path = tmp_path / "warden.yaml"
    path.write_text("daemons:\n  crashes:\n    level: 1\n  quiet:\n    level: 1\n  good:\n    level: 4\n")
    assert load_config(path, registry).settings.daemons.good.level == 4
