"""Resolvers: the double's answers to each root field, and one generic resolver for every other field.

The generic resolver reads the field from the source object (attribute or dict key). A value
the double does not keep gets the empty value of its type when the type is non-null ([], "",
0, false, an empty object), so Stash clients that select every field (stashapi's default
fragments) get a valid answer. Time fields are rendered as Stash renders them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol

from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    get_named_type,
)

from daemons.stash.double import tasks
from daemons.stash.double.jobs import JobManager
from daemons.stash.double.library import Library
from daemons.stash.double.records import Tag, VideoFile
from daemons.stash.double.search import Page, Search
from daemons.stash.double.times import format_time, parse_timestamp

Args = dict[str, Any]


class DoubleState(Protocol):
    """What the resolvers need from the StashDouble serving the request."""

    library: Library
    search: Search
    jobs: JobManager
    api_key: str | None
    version: str
    version_hash: str
    build_time: str
    library_paths: list[str]
    probe: tasks.Probe
    zone: tzinfo

    def take_failure(self, root_field: str) -> str | None: ...

    def log(self, message: str) -> None: ...


# Root fields


def _version(state: DoubleState, args: Args) -> object:
    return {"version": state.version, "hash": state.version_hash, "build_time": state.build_time}


def _configuration(state: DoubleState, args: Args) -> object:
    stashes = [{"path": path, "excludeVideo": False, "excludeImage": False} for path in state.library_paths]
    # A fresh Stash has no saved scan/generate defaults: both are null.
    return {"general": {"apiKey": state.api_key or "", "stashes": stashes}, "defaults": {}}


def _find_scenes(state: DoubleState, args: Args) -> object:
    ids = args.get("ids") if args.get("ids") is not None else args.get("scene_ids")
    result = state.search.find_scenes(args.get("scene_filter"), Page.from_input(args.get("filter")), ids)
    return {"count": result.count, "duration": result.duration, "filesize": result.filesize, "scenes": result.scenes}


def _find_scene(state: DoubleState, args: Args) -> object:
    if args.get("id") is None:
        if args.get("checksum") is not None:
            raise GraphQLError("findScene by checksum is not supported by the Stash double (it keeps no md5)")
        return None
    return state.library.scenes.get(str(args["id"]))


def _find_tags(state: DoubleState, args: Args) -> object:
    page = Page.from_input(args.get("filter"))
    tags = state.search.find_tags(args.get("tag_filter"), page, args.get("ids"))
    return {"count": len(tags), "tags": page.take(tags)}


def _find_tag(state: DoubleState, args: Args) -> object:
    return state.library.tags.get(str(args["id"]))


def _find_scene_markers(state: DoubleState, args: Args) -> object:
    page = Page.from_input(args.get("filter"))
    markers = state.search.find_markers(args.get("scene_marker_filter"), page, args.get("ids"))
    return {"count": len(markers), "scene_markers": page.take(markers)}


def _job_queue(state: DoubleState, args: Args) -> object:
    # Stash builds this list from a nil slice: an empty queue is null, not [].
    return state.jobs.queue() or None


def _find_job(state: DoubleState, args: Args) -> object:
    return state.jobs.find(_job_id(args["input"]["id"]))


def _scene_update(state: DoubleState, args: Args) -> object:
    given = _only(
        args["input"], {"id", "clientMutationId", "title", "details", "organized", "tag_ids"}, "SceneUpdateInput"
    )
    changes = {key: given[key] for key in ("title", "details", "organized", "tag_ids") if key in given}
    return state.library.update_scene(str(given["id"]), **changes)


def _bulk_scene_update(state: DoubleState, args: Args) -> object:
    given = _only(
        args["input"], {"ids", "clientMutationId", "title", "details", "organized", "tag_ids"}, "BulkSceneUpdateInput"
    )
    scene_ids = [str(scene_id) for scene_id in given.get("ids") or ()]
    scenes = [state.library.scene(scene_id) for scene_id in scene_ids]  # all exist, or nothing changes
    tag_update = given.get("tag_ids")
    if tag_update is not None:
        state.library.update_scenes_tags(scene_ids, tag_update.get("ids") or (), tag_update["mode"])
    changes = {key: given[key] for key in ("title", "details", "organized") if given.get(key) is not None}
    for scene in scenes:
        state.library.update_scene(scene.id, **changes)
    return scenes


def _tag_create(state: DoubleState, args: Args) -> object:
    allowed = {"name", "sort_name", "description", "aliases", "ignore_auto_tag", "favorite", "parent_ids", "child_ids"}
    given = _only(args["input"], allowed, "TagCreateInput")
    options = {key: value for key, value in given.items() if key != "name" and value is not None}
    return state.library.add_tag(given["name"], **options)


def _scene_marker_create(state: DoubleState, args: Args) -> object:
    given = args["input"]
    return state.library.add_marker(
        str(given["scene_id"]),
        given["title"],
        given["seconds"],
        str(given["primary_tag_id"]),
        end_seconds=given.get("end_seconds"),
        tag_ids=given.get("tag_ids") or (),
    )


def _scene_marker_destroy(state: DoubleState, args: Args) -> object:
    state.library.delete_marker(str(args["id"]))
    return True


def _metadata_scan(state: DoubleState, args: Args) -> object:
    allowed = {"paths", "rescan", "filter", *tasks.SCAN_ASSET_FLAGS, *tasks.SCAN_IMAGE_FLAGS}
    given = _only(args["input"], allowed, "ScanMetadataInput")
    min_mod_time = (given.get("filter") or {}).get("minModTime")
    body = tasks.scan_job(
        state.library,
        given.get("paths") or state.library_paths,
        assets=tasks.scan_assets(given),
        rescan=bool(given.get("rescan")),
        min_mod_time=None if min_mod_time is None else _timestamp(state, min_mod_time),
        probe=state.probe,
        log=state.log,
    )
    return state.jobs.add("Scanning...", body).id


def _metadata_generate(state: DoubleState, args: Args) -> object:
    allowed = {"sceneIDs", *tasks.GENERATE_ASSETS, *tasks.GENERATE_OPTIONS}
    given = _only(args["input"], allowed, "GenerateMetadataInput")
    scene_ids = given.get("sceneIDs")
    body = tasks.generate_job(
        state.library,
        None if scene_ids is None else [str(scene_id) for scene_id in scene_ids],
        tasks.generate_assets(given),
        overwrite=bool(given.get("overwrite")),
    )
    return state.jobs.add("Generating...", body).id


def _stop_job(state: DoubleState, args: Args) -> object:
    state.jobs.stop(_job_id(args["job_id"]))
    return True


def _stop_all_jobs(state: DoubleState, args: Args) -> object:
    state.jobs.stop_all()
    return True


ROOT_FIELDS: dict[str, Callable[[DoubleState, Args], object]] = {
    "version": _version,
    "configuration": _configuration,
    "findScenes": _find_scenes,
    "findScene": _find_scene,
    "findTags": _find_tags,
    "findTag": _find_tag,
    "findSceneMarkers": _find_scene_markers,
    "jobQueue": _job_queue,
    "findJob": _find_job,
    "sceneUpdate": _scene_update,
    "bulkSceneUpdate": _bulk_scene_update,
    "tagCreate": _tag_create,
    "sceneMarkerCreate": _scene_marker_create,
    "sceneMarkerDestroy": _scene_marker_destroy,
    "metadataScan": _metadata_scan,
    "metadataGenerate": _metadata_generate,
    "stopJob": _stop_job,
    "stopAllJobs": _stop_all_jobs,
}


def _only(given: Mapping[str, Any], allowed: set[str], where: str) -> Mapping[str, Any]:
    unsupported = sorted(key for key, value in given.items() if key not in allowed and value is not None)
    if unsupported:
        raise GraphQLError(f"{where}: {', '.join(unsupported)} not supported by the Stash double")
    return given


def _job_id(given: object) -> str:
    text = str(given)
    if not text.isdigit():
        raise GraphQLError(f'strconv.Atoi: parsing "{text}": invalid syntax')  # Stash's own wording
    return text


def _timestamp(state: DoubleState, text: str) -> int:
    try:
        return parse_timestamp(text, now=state.library.now(), zone=state.zone)
    except ValueError as error:
        raise GraphQLError(str(error)) from None


# Fields of objects that the double computes rather than stores


def _tag_scene_count(tag: Tag, state: DoubleState, args: Args) -> int:
    tag_ids = state.library.tag_descendants([tag.id], args.get("depth") or 0)
    return len(set().union(*(state.library.scene_ids_tagged(tag_id) for tag_id in tag_ids)))


def _tag_marker_count(tag: Tag, state: DoubleState, args: Args) -> int:
    tag_ids = state.library.tag_descendants([tag.id], args.get("depth") or 0)
    return sum(1 for m in state.library.markers.values() if {m.primary_tag_id, *m.tag_ids} & tag_ids)


def _folder(file: VideoFile, state: DoubleState, args: Args) -> object:
    times = {"mod_time": file.mod_time, "created_at": file.created_at, "updated_at": file.created_at}
    return {"id": file.folder_id, "path": state.library.folder_path(file.folder_id), **times}


def _tags(ids: tuple[str, ...], state: DoubleState) -> list[Tag]:
    return [state.library.tags[tag_id] for tag_id in ids]


OBJECT_FIELDS: dict[tuple[str, str], Callable[[Any, DoubleState, Args], object]] = {
    ("Scene", "tags"): lambda scene, state, args: _tags(scene.tag_ids, state),
    ("Scene", "scene_markers"): lambda scene, state, args: state.library.markers_of(scene.id),
    ("VideoFile", "parent_folder"): _folder,
    ("VideoFile", "fingerprint"): lambda file, state, args: file.fingerprint(args["type"]),
    ("SceneMarker", "scene"): lambda marker, state, args: state.library.scenes[marker.scene_id],
    ("SceneMarker", "primary_tag"): lambda marker, state, args: state.library.tags[marker.primary_tag_id],
    ("SceneMarker", "tags"): lambda marker, state, args: _tags(marker.tag_ids, state),
    ("Tag", "parents"): lambda tag, state, args: _tags(tag.parent_ids, state),
    ("Tag", "children"): lambda tag, state, args: _tags(tag.child_ids, state),
    ("Tag", "parent_count"): lambda tag, state, args: len(tag.parent_ids),
    ("Tag", "child_count"): lambda tag, state, args: len(tag.child_ids),
    ("Tag", "scene_count"): _tag_scene_count,
    ("Tag", "scene_marker_count"): _tag_marker_count,
    ("Job", "status"): lambda job, state, args: job.status.value,
    ("Job", "subTasks"): lambda job, state, args: job.sub_tasks,
    ("Job", "addTime"): lambda job, state, args: job.add_time,
    ("Job", "startTime"): lambda job, state, args: job.start_time,
    ("Job", "endTime"): lambda job, state, args: job.end_time,
}

_EMPTY_SCALARS: dict[str, object] = {"String": "", "ID": "0", "Int": 0, "Int64": 0, "Float": 0.0, "Boolean": False}
_TIME_SCALARS = frozenset({"Time", "Timestamp"})


@dataclass(frozen=True, slots=True)
class _Plan:
    root: Callable[[DoubleState, Args], object] | None
    computed: Callable[[Any, DoubleState, Args], object] | None
    is_time: bool
    empty: object


class FieldResolver:
    """graphql-core's field resolver for one double; plans each (type, field) once, then reuses it."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        self._plans: dict[tuple[str, str], _Plan] = {}

    def __call__(self, source: Any, info: GraphQLResolveInfo[DoubleState], **args: Any) -> object:
        key = (info.parent_type.name, info.field_name)
        plan = self._plans.get(key) or self._plan(key, info)
        state = info.context
        if plan.root is not None:
            failure = state.take_failure(info.field_name)
            if failure is not None:
                raise GraphQLError(failure)
            value = plan.root(state, args)
        elif plan.computed is not None:
            value = plan.computed(source, state, args)
        elif isinstance(source, Mapping):
            value = source.get(info.field_name)
        else:
            value = getattr(source, info.field_name, None)
        if value is None:
            return plan.empty
        if plan.is_time and isinstance(value, int | float):
            return format_time(value, self._zone)
        return value

    def _plan(self, key: tuple[str, str], info: GraphQLResolveInfo[DoubleState]) -> _Plan:
        schema = info.schema
        is_root = info.parent_type in (schema.query_type, schema.mutation_type)
        root = ROOT_FIELDS.get(info.field_name) if is_root else None
        if is_root and root is None:
            raise GraphQLError(f"{info.field_name} is not implemented by the Stash double")
        plan = _Plan(
            root=root,
            computed=OBJECT_FIELDS.get(key),
            is_time=get_named_type(info.return_type).name in _TIME_SCALARS,
            empty=self._empty(info.return_type),
        )
        self._plans[key] = plan
        return plan

    def _empty(self, field_type: GraphQLOutputType) -> object:
        if not isinstance(field_type, GraphQLNonNull):
            return None
        inner = field_type.of_type
        if isinstance(inner, GraphQLList):
            return []
        if isinstance(inner, GraphQLEnumType):
            return next(iter(inner.values))
        if isinstance(inner, GraphQLScalarType):
            if inner.name in _TIME_SCALARS:
                return format_time(0, self._zone)
            return _EMPTY_SCALARS.get(inner.name, {})
        return {}
