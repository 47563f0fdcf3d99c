"""Stash's filter criteria (IntCriterionInput, StringCriterionInput, ...) as hashable predicates.

`compile_filter` turns a filter input (a SceneFilterType dict, say) into one Criterion, with
the meaning Stash's SQL gives each modifier. A criterion the double does not implement is an
error naming it, never a silent match-all. Criteria are frozen dataclasses, so a compiled
filter can key a cache of results.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal["int", "time", "text", "ids", "bool", "bool_text", "missing"]


class QueryError(ValueError):
    """A query Stash would refuse, or one the double does not implement."""


class Criterion(Protocol):
    def matches(self, item: Any) -> bool: ...


@dataclass(frozen=True)
class FilterField:
    """How one filter key reads an item. `expand` widens ids by hierarchy (tag children, `depth`)."""

    kind: Kind
    get: Callable[[Any], Any]
    expand: Callable[[Collection[str], int], Collection[str]] | None = None
    choices: Mapping[str, Callable[[Any], bool]] | None = None


@dataclass(frozen=True)
class Everything:
    def matches(self, item: Any) -> bool:
        return True


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Criterion, ...]

    def matches(self, item: Any) -> bool:
        return all(part.matches(item) for part in self.parts)


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Criterion, ...]

    def matches(self, item: Any) -> bool:
        return any(part.matches(item) for part in self.parts)


@dataclass(frozen=True)
class Not:
    part: Criterion

    def matches(self, item: Any) -> bool:
        return not self.part.matches(item)


@dataclass(frozen=True)
class Number:
    get: Callable[[Any], float | None]
    modifier: str
    value: float
    value2: float | None

    def matches(self, item: Any) -> bool:
        actual = self.get(item)
        if self.modifier in ("IS_NULL", "NOT_NULL"):
            return (actual is None) == (self.modifier == "IS_NULL")
        if actual is None:
            return False
        if self.modifier == "EQUALS":
            return actual == self.value
        if self.modifier == "NOT_EQUALS":
            return actual != self.value
        if self.modifier == "GREATER_THAN":
            return actual > self.value
        if self.modifier == "LESS_THAN":
            return actual < self.value
        assert self.value2 is not None
        inside = self.value <= actual <= self.value2  # SQL BETWEEN includes both ends
        return inside if self.modifier == "BETWEEN" else not inside


@dataclass(frozen=True)
class Text:
    """A StringCriterionInput. When the item has several texts (a tag's aliases), any one may match."""

    get: Callable[[Any], str | tuple[str, ...] | None]
    modifier: str
    value: str

    def matches(self, item: Any) -> bool:
        actual = self.get(item)
        if isinstance(actual, tuple):
            return any(self._matches_text(text) for text in actual) if actual else self._matches_text("")
        return self._matches_text(actual or "")

    def _matches_text(self, actual: str) -> bool:
        if self.modifier in ("IS_NULL", "NOT_NULL"):
            return (actual == "") == (self.modifier == "IS_NULL")
        if self.modifier in ("MATCHES_REGEX", "NOT_MATCHES_REGEX"):
            found = re.search(self.value, actual) is not None
            return found == (self.modifier == "MATCHES_REGEX")
        folded = actual.casefold()
        # Stash compares with SQL LIKE: case-insensitive, and INCLUDES/EXCLUDES look at each word.
        if self.modifier == "EQUALS":
            return folded == self.value.casefold()
        if self.modifier == "NOT_EQUALS":
            return folded != self.value.casefold()
        words = search_words(self.value)
        if self.modifier == "INCLUDES":
            return all(word in folded for word in words)
        return not any(word in folded for word in words)


@dataclass(frozen=True)
class IdSet:
    get: Callable[[Any], Collection[str]]
    modifier: str
    groups: tuple[frozenset[str], ...]  # one group per given id: the id and what it expands to
    excludes: frozenset[str]

    def matches(self, item: Any) -> bool:
        actual = set(self.get(item))
        if actual & self.excludes:
            return False
        if self.modifier == "IS_NULL":
            return not actual
        if self.modifier == "NOT_NULL":
            return bool(actual)
        if not self.groups:
            return True
        if self.modifier == "INCLUDES":
            return any(actual & group for group in self.groups)
        if self.modifier == "INCLUDES_ALL":
            return all(actual & group for group in self.groups)
        if self.modifier == "EXCLUDES":
            return not any(actual & group for group in self.groups)
        return actual == set().union(*self.groups)


@dataclass(frozen=True)
class Equals:
    get: Callable[[Any], object]
    value: object

    def matches(self, item: Any) -> bool:
        return self.get(item) == self.value


@dataclass(frozen=True)
class Words:
    """The free-text `q` of FindFilterType: every word appears in one of the item's searchable texts."""

    get: Callable[[Any], tuple[str | None, ...]]
    words: tuple[str, ...]

    def matches(self, item: Any) -> bool:
        texts = [text.casefold() for text in self.get(item) if text]
        return all(any(word in text for text in texts) for word in self.words)


_MODIFIERS: dict[Kind, frozenset[str]] = {
    "int": frozenset({"EQUALS", "NOT_EQUALS", "GREATER_THAN", "LESS_THAN", "BETWEEN", "NOT_BETWEEN"}),
    "time": frozenset({"EQUALS", "NOT_EQUALS", "GREATER_THAN", "LESS_THAN", "BETWEEN", "NOT_BETWEEN"}),
    "text": frozenset(
        {"EQUALS", "NOT_EQUALS", "INCLUDES", "EXCLUDES", "MATCHES_REGEX", "NOT_MATCHES_REGEX", "IS_NULL", "NOT_NULL"}
    ),
    "ids": frozenset({"INCLUDES", "INCLUDES_ALL", "EXCLUDES", "EQUALS", "IS_NULL", "NOT_NULL"}),
}
_COMBINATORS = ("AND", "OR", "NOT")


def search_words(text: str) -> tuple[str, ...]:
    """Words of a search string; a "quoted phrase" stays one word."""
    return tuple((phrase or word).casefold() for phrase, word in re.findall(r'"([^"]*)"|(\S+)', text) if phrase or word)


def compile_filter(
    given: Mapping[str, Any] | None,
    fields: Mapping[str, FilterField],
    where: str,
    parse_time: Callable[[str], float],
    default_upper_time: Callable[[], int],
) -> Criterion:
    if not given:
        return Everything()
    combinators = [name for name in _COMBINATORS if given.get(name) is not None]
    if len(combinators) > 1:
        raise QueryError(f"{where}: {' and '.join(combinators)} sub-filters cannot be combined at one level")
    own = []
    for key, value in given.items():
        if value is None or key in _COMBINATORS:
            continue
        spec = fields.get(key)
        if spec is None:
            raise QueryError(f"{where}.{key} is not supported by the Stash double")
        own.append(_compile_field(value, spec, f"{where}.{key}", parse_time, default_upper_time))
    mine: Criterion = AllOf(tuple(own)) if len(own) != 1 else own[0]
    if not combinators:
        return mine
    (combinator,) = combinators
    sub = compile_filter(given[combinator], fields, f"{where}.{combinator}", parse_time, default_upper_time)
    if combinator == "AND":
        return AllOf((mine, sub))
    if combinator == "OR":
        return AnyOf((mine, sub)) if own else sub
    return AllOf((mine, Not(sub)))


def _compile_field(
    value: Any,
    spec: FilterField,
    where: str,
    parse_time: Callable[[str], float],
    default_upper_time: Callable[[], int],
) -> Criterion:
    if spec.kind == "bool":
        return Equals(spec.get, bool(value))
    if spec.kind == "bool_text":
        if value not in ("true", "false"):
            raise QueryError(f"{where}: expected 'true' or 'false', got {value!r}")
        return Equals(spec.get, value == "true")
    if spec.kind == "missing":
        assert spec.choices is not None
        choice = spec.choices.get(value)
        if choice is None:
            raise QueryError(f"invalid is_missing field: {value} (the Stash double knows {', '.join(spec.choices)})")
        return Equals(choice, True)
    modifier = value["modifier"]
    if modifier not in _MODIFIERS[spec.kind] and modifier not in ("IS_NULL", "NOT_NULL"):
        raise QueryError(f"{where}: modifier {modifier} is not supported by the Stash double for this criterion")
    if spec.kind == "text":
        if modifier in ("MATCHES_REGEX", "NOT_MATCHES_REGEX"):
            try:
                re.compile(value["value"])
            except re.error as error:
                raise QueryError(f"{where}: invalid regular expression: {error}") from None
        return Text(spec.get, modifier, value["value"])
    if spec.kind == "ids":
        return _compile_ids(value, modifier, spec)
    if modifier in ("IS_NULL", "NOT_NULL"):
        return Number(spec.get, modifier, 0, None)
    if spec.kind == "int":
        low, high = value["value"], value.get("value2")
    else:
        try:
            low = parse_time(value["value"])
            if value.get("value2") is not None:
                high = parse_time(value["value2"])
            else:  # only BETWEEN reads it; leaving it out elsewhere keeps the criterion (a cache key) steady
                high = default_upper_time() if modifier in ("BETWEEN", "NOT_BETWEEN") else None
        except ValueError as error:
            raise QueryError(f"{where}: {error}") from None
    if modifier in ("BETWEEN", "NOT_BETWEEN") and high is None:
        raise QueryError(f"{where}: {modifier} needs value2")
    return Number(spec.get, modifier, low, high)


def _compile_ids(value: Mapping[str, Any], modifier: str, spec: FilterField) -> IdSet:
    given = [str(item) for item in value.get("value") or ()]
    depth = value.get("depth") or 0
    expand = spec.expand
    groups = tuple(frozenset(expand([item], depth) if expand else [item]) for item in given)
    excludes = frozenset(str(item) for item in value.get("excludes") or ())
    if expand and excludes:
        excludes = frozenset(expand(excludes, depth))
    return IdSet(spec.get, modifier, groups, excludes)
