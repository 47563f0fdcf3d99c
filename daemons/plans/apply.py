"""Applying one planned change to Stash, so that applying it twice changes nothing.

Before each write the scene is read again: a tag already on the scene, or a marker with the
same primary tag within MARKER_TOLERANCE seconds, counts as applied. That is what lets a
plan interrupted between a write to Stash and the record of its outcome (a crash, a kill)
be finished later without a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from daemons.plans.store import Change, ChangeStatus
from daemons.stash.client import StashClient, StashError
from supervisor import TransientError

#: Seconds within which an existing marker with the same primary tag is the proposed one.
MARKER_TOLERANCE = 1.0
#: What `already_holds` needs to know of a scene.
SCENE_STATE = "id tags { id name aliases } scene_markers { id seconds primary_tag { id name aliases } }"


def already_holds(scene: dict[str, Any], field: str, action: str, value: Any) -> bool:
    """Whether the change is already true of the scene as Stash has it: the tag there (or gone, for
    a removal), a marker with the same primary tag within MARKER_TOLERANCE seconds. A tag is known
    by its name or any alias, as Stash finds it: the applier adds "Short" as the user's "Brief"
    when "Short" is an alias of it."""
    if field == "tags":
        name = str(value).casefold()
        present = any(name in _names(tag) for tag in scene.get("tags") or ())
        return present == (action == "add")
    if field == "markers" and action == "add":
        seconds, primary = float(value["seconds"]), str(value["primary_tag"]).casefold()
        return any(
            primary in _names(marker["primary_tag"]) and abs(float(marker["seconds"]) - seconds) <= MARKER_TOLERANCE
            for marker in scene.get("scene_markers") or ()
        )
    return False


def already_proposed(waiting: Iterable[Change], field: str, action: str, value: Any) -> bool:
    """Whether one of the scene's changes still waiting in a plan (`PlanStore.open_changes`) is this
    one: the same tag, or a marker with the same primary tag within MARKER_TOLERANCE seconds. Names
    are compared as written (ignoring case): the aliases Stash knows are checked once the change is
    applied (`already_holds`)."""
    for change in waiting:
        if (change.field, change.action) != (field, action):
            continue
        if field == "markers":
            if _same_marker(change.value, value):
                return True
        elif str(change.value).casefold() == str(value).casefold():
            return True
    return False


def _same_marker(one: Any, other: Any) -> bool:
    try:
        return (
            str(one["primary_tag"]).casefold() == str(other["primary_tag"]).casefold()
            and abs(float(one["seconds"]) - float(other["seconds"])) <= MARKER_TOLERANCE
        )
    except (KeyError, TypeError, ValueError):  # a malformed value waiting in a plan matches nothing
        return False


def _names(tag: dict[str, Any]) -> set[str]:
    return {name.casefold() for name in (tag["name"], *(tag.get("aliases") or ()))}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: ChangeStatus  # APPLIED, SKIPPED or FAILED
    error: str | None = None


@dataclass
class ChangeApplier:
    """Applies changes with one Stash client; tags are looked up (and created) once per name."""

    stash: StashClient
    _tag_ids: dict[str, str] = field(default_factory=dict)  # casefolded name -> id

    async def apply(self, change: Change) -> Outcome:
        """Apply `change`. Raises only a TransientError (Stash down or busy): worth retrying the whole plan for."""
        try:
            scene = await self.stash.find_scene(change.scene_id, SCENE_STATE)
            if scene is None:
                return Outcome(ChangeStatus.SKIPPED, "the scene no longer exists in Stash")
            if already_holds(scene, change.field, change.action, change.value):
                return Outcome(ChangeStatus.APPLIED)
            if change.field == "tags" and change.action in ("add", "remove"):
                await self._tag(scene, str(change.value), change.action)
            elif change.field == "markers" and change.action == "add":
                await self._marker(scene, change.value)
            else:
                return Outcome(ChangeStatus.FAILED, f"{change.action} of {change.field} is not supported")
        except TransientError:
            raise  # Stash down or busy: the whole plan waits and resumes
        except StashError as refused:  # this change alone: Stash refused it, or answered nonsense about it
            return Outcome(ChangeStatus.FAILED, str(refused))
        except (KeyError, TypeError, ValueError) as malformed:  # a value no analyser should have proposed
            return Outcome(ChangeStatus.FAILED, f"malformed change: {type(malformed).__name__}: {malformed}")
        return Outcome(ChangeStatus.APPLIED)

    async def _tag(self, scene: dict[str, Any], name: str, action: str) -> None:
        tag_id = await self._tag_id(name, create=action == "add")
        if tag_id is not None:  # None: removing a tag Stash does not have
            await self.stash.update_scene_tags([scene["id"]], [tag_id], "ADD" if action == "add" else "REMOVE")

    async def _marker(self, scene: dict[str, Any], marker: dict[str, Any]) -> None:
        primary = str(marker["primary_tag"])
        tag_id = await self._tag_id(primary, create=True)
        assert tag_id is not None
        await self.stash.create_marker(
            scene["id"], str(marker.get("title") or primary), float(marker["seconds"]), tag_id
        )

    async def _tag_id(self, name: str, *, create: bool) -> str | None:
        key = name.casefold()
        if key not in self._tag_ids:
            found = await self.stash.find_tag(name)
            if found is None and not create:
                return None
            self._tag_ids[key] = str((found or await self.stash.create_tag(name))["id"])
        return self._tag_ids[key]
