"""Finding daemons: the bundled ones in `daemons/`, others through the `warden.daemons` entry points.

A plugin that fails to import or breaks the daemon contract is reported by name and left
out; the others load as usual.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

from pydantic import BaseModel

from supervisor.config import DaemonConfig
from supervisor.daemon import Daemon

ENTRY_POINT_GROUP = "warden.daemons"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class PluginError:
    name: str  # the daemon's name when it declares a valid one (its config section), else module or entry point name
    source: str  # where it came from: "daemons.<module>" or "entry point <name> = <value>"
    error: str


@dataclass
class Registry:
    daemons: dict[str, type[Daemon]] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)

    def add(self, candidate: object, name: str, source: str) -> None:
        problem = contract_problem(candidate)
        if problem is None and candidate.name in self.daemons:  # type: ignore[attr-defined]
            problem = f"the name {candidate.name!r} is already taken by {self.daemons[candidate.name].__module__}"  # type: ignore[attr-defined]
        if problem is not None:
            declared = getattr(candidate, "name", None)
            if isinstance(declared, str) and _NAME.match(declared) and not _reserved(declared):
                name = declared  # its config section's name, so `unchecked` keeps that section valid
            self.errors.append(PluginError(name, source, problem))
            return
        assert isinstance(candidate, type) and issubclass(candidate, Daemon)
        self.daemons[candidate.name] = candidate


def contract_problem(candidate: object) -> str | None:
    """What is wrong with a would-be daemon class, or None."""
    if not (isinstance(candidate, type) and issubclass(candidate, Daemon)):
        return f"{candidate!r} is not a subclass of supervisor.Daemon"
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        return "`name` must be lowercase letters, digits and underscores, starting with a letter"
    if _reserved(name):
        return f"`name` {name!r} is reserved (it would shadow part of the settings model)"
    if not isinstance(getattr(candidate, "title", None), str) or not candidate.title.strip():
        return "`title` must be a non-empty string"
    config = candidate.Config
    if not (isinstance(config, type) and issubclass(config, DaemonConfig)):
        return "`Config` must subclass supervisor.DaemonConfig"
    undocumented = [n for n, f in config.model_fields.items() if not f.description]
    if undocumented:
        return f"Config fields without a description: {', '.join(undocumented)}"
    try:
        config()
    except Exception as error:
        return f"Config() fails with its defaults: {error}"
    if candidate.run is Daemon.run or not inspect.iscoroutinefunction(candidate.run):
        return "`run` must be an `async def` method"
    return None


def _reserved(name: str) -> bool:
    return name.startswith("model_") or hasattr(BaseModel, name)


def discover(bundled: str = "daemons", group: str = ENTRY_POINT_GROUP) -> Registry:
    registry = Registry()
    for module_name in _bundled_modules(bundled, registry):
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            registry.errors.append(PluginError(module_name.rsplit(".", 1)[-1], module_name, _describe(error)))
            continue
        for candidate in _daemon_classes(module):
            registry.add(candidate, candidate.__name__, module_name)
    for entry_point in entry_points(group=group):
        source = f"entry point {entry_point.name} = {entry_point.value}"
        try:
            candidate = entry_point.load()
        except Exception as error:
            registry.errors.append(PluginError(entry_point.name, source, _describe(error)))
            continue
        if candidate not in registry.daemons.values():
            registry.add(candidate, entry_point.name, source)
    return registry


def _bundled_modules(package_name: str, registry: Registry) -> list[str]:
    try:
        package = importlib.import_module(package_name)
    except Exception as error:
        registry.errors.append(PluginError(package_name, package_name, _describe(error)))
        return []
    return sorted(f"{package_name}.{info.name}" for info in pkgutil.iter_modules(package.__path__))


def _daemon_classes(module: ModuleType) -> list[type[Daemon]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Daemon) and value.__module__ == module.__name__
    ]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
