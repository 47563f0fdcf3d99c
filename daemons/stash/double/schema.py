"""The GraphQL schema the Stash double serves: Stash's real SDL when present, else our subset.

The real schema (Stash v0.30.1, kept outside the project) is found through STASH_SCHEMA_DIR or
beside the repository in shared/stash_schema. `subset_mismatches` checks that subset.graphql
declares nothing the real schema would refuse.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    Undefined,
    build_schema,
)

SUBSET_SDL = Path(__file__).with_name("subset.graphql")
SCHEMA_DIR_ENV = "STASH_SCHEMA_DIR"

SchemaSource = Literal["real", "subset"]


@dataclass(frozen=True)
class LoadedSchema:
    schema: GraphQLSchema
    source: SchemaSource
    location: Path


def default_schema_dir() -> Path:
    """STASH_SCHEMA_DIR, else shared/stash_schema beside the repository (/work/main -> /work/shared)."""
    configured = os.environ.get(SCHEMA_DIR_ENV)
    if configured:
        return Path(configured)
    repository = Path(__file__).resolve().parents[3]
    return repository.parent / "shared" / "stash_schema"


def real_schema_files(directory: Path) -> list[Path]:
    """schema.graphql then types/*.graphql in name order; empty when the directory lacks them."""
    root = directory / "schema.graphql"
    if not root.is_file():
        return []
    return [root, *sorted((directory / "types").glob("*.graphql"))]


def load_schema(directory: Path | None = None) -> LoadedSchema:
    directory = default_schema_dir() if directory is None else directory
    if real_schema_files(directory):
        return LoadedSchema(_build_real(str(directory.resolve())), "real", directory)
    return LoadedSchema(_build_subset(), "subset", SUBSET_SDL)


def load_real_schema(directory: Path | None = None) -> GraphQLSchema | None:
    directory = default_schema_dir() if directory is None else directory
    return _build_real(str(directory.resolve())) if real_schema_files(directory) else None


def load_subset_schema() -> GraphQLSchema:
    return _build_subset()


# Building Stash's 306 types takes a noticeable fraction of a second; every double in a
# process shares one build per directory.
@functools.cache
def _build_real(directory: str) -> GraphQLSchema:
    sdl = "\n".join(path.read_text(encoding="utf-8") for path in real_schema_files(Path(directory)))
    return build_schema(sdl)


@functools.cache
def _build_subset() -> GraphQLSchema:
    return build_schema(SUBSET_SDL.read_text(encoding="utf-8"))


def subset_mismatches(subset: GraphQLSchema, real: GraphQLSchema) -> list[str]:
    """Everything in `subset` that the real schema lacks or types differently.

    Also reports real arguments and input fields that are required but missing from the
    subset, since a document omitting them would pass the subset and fail against Stash.
    """
    problems: list[str] = []
    for name, subset_type in subset.type_map.items():
        if name.startswith("__"):
            continue
        real_type = real.type_map.get(name)
        if real_type is None:
            problems.append(f"type {name} is not in the real schema")
        elif type(real_type) is not type(subset_type):
            problems.append(f"type {name} is a {_kind(subset_type)} here but a {_kind(real_type)} in the real schema")
        else:
            problems += _type_mismatches(name, subset_type, real_type)
    for operation in ("query_type", "mutation_type", "subscription_type"):
        mine, theirs = getattr(subset, operation), getattr(real, operation)
        if mine is not None and (theirs is None or mine.name != theirs.name):
            problems.append(f"root {operation} {mine.name} differs from the real schema")
    return problems


def _type_mismatches(name: str, mine: GraphQLNamedType, theirs: GraphQLNamedType) -> list[str]:
    if isinstance(mine, GraphQLObjectType | GraphQLInterfaceType):
        assert isinstance(theirs, GraphQLObjectType | GraphQLInterfaceType)
        problems = [
            f"{name} implements {interface.name} only here"
            for interface in mine.interfaces
            if interface.name not in {i.name for i in theirs.interfaces}
        ]
        for field_name, field in mine.fields.items():
            problems += _field_mismatches(f"{name}.{field_name}", field, theirs.fields.get(field_name))
        return problems
    if isinstance(mine, GraphQLInputObjectType):
        assert isinstance(theirs, GraphQLInputObjectType)
        return _value_mismatches(name, "input field", mine.fields, theirs.fields)
    if isinstance(mine, GraphQLEnumType):
        assert isinstance(theirs, GraphQLEnumType)
        return [
            f"enum value {name}.{value} is not in the real schema"
            for value in mine.values
            if value not in theirs.values
        ]
    if isinstance(mine, GraphQLUnionType):
        assert isinstance(theirs, GraphQLUnionType)
        members = {member.name for member in theirs.types}
        return [
            f"union {name} member {member.name} is not in the real schema"
            for member in mine.types
            if member.name not in members
        ]
    return []


def _field_mismatches(where: str, mine: GraphQLField, theirs: GraphQLField | None) -> list[str]:
    if theirs is None:
        return [f"field {where} is not in the real schema"]
    problems = []
    if str(mine.type) != str(theirs.type):
        problems.append(f"field {where} is {mine.type} here but {theirs.type} in the real schema")
    return problems + _value_mismatches(where, "argument", mine.args, theirs.args)


def _value_mismatches(
    where: str,
    kind: str,
    mine: dict[str, GraphQLArgument] | dict[str, GraphQLInputField],
    theirs: dict[str, GraphQLArgument] | dict[str, GraphQLInputField],
) -> list[str]:
    problems = []
    for name, value in mine.items():
        other = theirs.get(name)
        if other is None:
            problems.append(f"{kind} {where}.{name} is not in the real schema")
        elif str(value.type) != str(other.type):
            problems.append(f"{kind} {where}.{name} is {value.type} here but {other.type} in the real schema")
    for name, other in theirs.items():
        if name not in mine and _required(other):
            problems.append(f"{kind} {where}.{name} is required by the real schema but missing here")
    return problems


def _required(value: GraphQLArgument | GraphQLInputField) -> bool:
    return isinstance(value.type, GraphQLNonNull) and value.default_value is Undefined


def _kind(named: GraphQLNamedType) -> str:
    return type(named).__name__.removeprefix("GraphQL").removesuffix("Type").lower() or "scalar"
