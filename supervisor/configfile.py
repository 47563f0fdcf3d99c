"""ConfigFile: owns config/warden.yaml. Reads, validates, edits and watches it.

Every change (from the API or a hand edit) is validated as a whole file first: an invalid
file changes nothing, and each error names the key path and its line. Writes are atomic
(temp file, fsync, rename) and round-trip the YAML, so comments and key order survive.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

import structlog
from pydantic import BaseModel, SecretStr, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.tokens import (
    AliasToken,
    AnchorToken,
    BlockEntryToken,
    BlockMappingStartToken,
    BlockSequenceStartToken,
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
    KeyToken,
    TagToken,
    Token,
)

from supervisor.clock import Clock, sleep
from supervisor.config import WardenSettings

logger = structlog.get_logger("warden.config")


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str  # dotted key path, e.g. "daemons.stash_sync.interval"; "" for the whole file
    message: str
    line: int | None  # 1-based line in the file, when the key is in the file

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '(file)'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  {issue}" for issue in issues))


class ConfigConflict(Exception):
    """The file cannot take the edit: it changed since the version the edit was based on, or cannot be written."""


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, order and quoting
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


@dataclass(frozen=True, slots=True)
class Overlay:
    """Settings laid around the file without being written to it (demo mode's Stash, for one)."""

    defaults: dict[str, Any] = field(default_factory=dict)  # under the file: the file's values win
    overrides: dict[str, Any] = field(default_factory=dict)  # over the file and the environment

    def beneath(self, top: Overlay) -> Overlay:
        """This overlay and `top` as one, `top` winning where both set a key."""
        return Overlay(_merged(self.defaults, top.defaults), _merged(self.overrides, top.overrides))

    def override(self, settings: WardenSettings) -> WardenSettings:
        """`settings` (where the environment already beat the file) with the overrides on top.

        Section by section: validating a whole settings model again would read the environment again.
        """
        changed = {}
        for name, values in self.overrides.items():
            section = getattr(settings, name)
            changed[name] = type(section).model_validate(_merged(section.model_dump(), values))
        return settings.model_copy(update=changed)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def parse(
    text: str, model: type[WardenSettings], source: str, overlay: Overlay | None = None
) -> tuple[CommentedMap, WardenSettings]:
    """Parse and validate a whole config text; raises ConfigError naming keys and lines."""
    document = _parse_yaml(text, source)
    values = _sections(document)
    try:
        settings = model(**(_merged(overlay.defaults, values) if overlay else values))
        if overlay:
            settings = overlay.override(settings)
    except ValidationError as error:
        raise ConfigError(
            source, [_value_issue(document, item["loc"], item["msg"]) for item in error.errors()]
        ) from None
    return document, settings


#: Characters read in a config file. The shipped one has 8 KiB; round-trip parsing costs tens of µs a character.
MAX_TEXT = 64 * 1024
#: Brackets open at once. ruamel's scanner slows down steeply with the depth of flow collections.
MAX_DEPTH = 32
#: Values in the file once its aliases are expanded: a "billion laughs" is refused, never expanded.
MAX_VALUES = 100_000


def _parse_yaml(text: str, source: str) -> CommentedMap:
    """The YAML document (round-trip); raises ConfigError for syntax, a non-mapping file, or one too big to read."""
    if len(text) > MAX_TEXT:
        raise ConfigError(source, [_too_big(f"{len(text)} characters long; at most {MAX_TEXT} are read")])
    try:
        refused = _refused_token(text)
        if refused is not None:
            raise ConfigError(source, [refused])
        document = _yaml().load(text)
        values = _expanded_size(document, {})
    except MarkedYAMLError as error:
        raise ConfigError(source, [_syntax_issue(error, text)]) from None
    except YAMLError as error:
        raise ConfigError(source, [ConfigIssue("", str(error), None)]) from None
    except RecursionError:  # indentation nested hundreds of levels deep
        raise ConfigError(source, [_too_big("nested too deeply")]) from None
    if values > MAX_VALUES:
        raise ConfigError(source, [_too_big(f"{values} values once its aliases are expanded; at most {MAX_VALUES}")])
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ConfigError(source, [ConfigIssue("", "the file must be a mapping of sections", 1)])
    return document


def _too_big(what: str) -> ConfigIssue:
    return ConfigIssue("", f"refused: the file is {what}", None)


#: Tokens that make a key a collection or an alias (which may name one): a config key is a plain value.
_NOT_PLAIN_KEY = (
    FlowSequenceStartToken,
    FlowMappingStartToken,
    BlockSequenceStartToken,
    BlockMappingStartToken,
    BlockEntryToken,
    AliasToken,
)


def _refused_token(text: str) -> ConfigIssue | None:
    """What the scanner's tokens show the file must not hold, read before anything is composed.

    Flow collections (brackets outside quotes and comments) nested deeper than MAX_DEPTH: the scan
    stops there, before ruamel slows down on them (its scanner looks at most 1,024 characters ahead).
    Any explicit tag, on a key or a value (`!!python/...`, `!!binary`, `!!str`, `!custom`): never
    constructed by the round-trip loader, but never meant either. A list, mapping or alias as a key:
    ruamel cannot even hash some of them.
    """
    depth = 0
    key: Token | None = None  # the key token whose value is next
    for token in _yaml().scan(text):
        line = token.start_mark.line + 1
        if isinstance(token, FlowSequenceStartToken | FlowMappingStartToken):
            depth += 1
            if depth > MAX_DEPTH:
                return replace(_too_big(f"nested more than {MAX_DEPTH} brackets deep"), line=line)
        elif isinstance(token, FlowSequenceEndToken | FlowMappingEndToken):
            depth -= 1
        if isinstance(token, TagToken):
            handle, suffix = token.value
            tag = f"!<{suffix}>" if handle is None else f"{handle}{suffix}"
            return ConfigIssue("", f"refused: a tag ({tag}) has no place in the config", line)
        if key is not None and isinstance(token, _NOT_PLAIN_KEY):
            return ConfigIssue("", "refused: a key must be a plain value, not a list, a mapping or an alias", line)
        if not isinstance(token, AnchorToken):
            key = token if isinstance(token, KeyToken) else None
    return None


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """The number of values in `node` with every alias expanded, counted once per distinct node (linear)."""
    if not isinstance(node, dict | list):
        return 1
    known = sizes.get(id(node))
    if known is None:
        children = node.values() if isinstance(node, dict) else node
        known = sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return known


def _value_issue(document: CommentedMap, loc: tuple[Any, ...], message: str) -> ConfigIssue:
    """An invalid value, blamed on the environment variable that set it, or on its line in the file."""
    path = ".".join(str(part) for part in loc)
    variable = "WARDEN_" + "__".join(str(part) for part in loc).upper()
    if any(name.upper() == variable for name in os.environ):
        return ConfigIssue(path, f"{message} (set by the environment variable {variable})", None)
    return ConfigIssue(path, message, _line_of(document, loc))


def _syntax_issue(error: MarkedYAMLError, text: str) -> ConfigIssue:
    """Where the parser gave up, and where what it was reading began (an unclosed bracket or quote)."""
    problem, context = error.problem_mark, error.context_mark
    line = problem.line + 1 if problem else None
    if context is not None and (line is None or line > len(text.splitlines())):
        line = context.line + 1  # it gave up at the end of the file: point at the opening instead
    opening = str(error.context or "")
    if opening and context is not None and context.line + 1 != line:
        opening += f" started on line {context.line + 1},"
    message = " ".join(part for part in (opening, str(error.problem or "")) if part)
    return ConfigIssue("", message, line)


def _sections(document: CommentedMap) -> dict[str, Any]:
    """The file's values. A section whose keys are all commented out is empty, not null."""
    values: dict[str, Any] = {key: {} if value is None else value for key, value in _plain(document).items()}
    daemons = values.get("daemons")
    if isinstance(daemons, dict):
        values["daemons"] = {name: {} if section is None else section for name, section in daemons.items()}
    return values


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


def _line_of(document: CommentedMap, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest key of `loc` present in the file (1-based)."""
    node: Any = document
    line = None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def dump(document: CommentedMap) -> str:
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    return buffer.getvalue()


MASK = "**********"  # what a secret looks like wherever config is shown (pydantic's SecretStr shows the same)


def secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every secret field (SecretStr) in the settings model."""
    paths = []
    for name, info in model.model_fields.items():
        for kind in (info.annotation, *get_args(info.annotation)):
            if kind is SecretStr:
                paths.append((*prefix, name))
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                paths.extend(secret_paths(kind, (*prefix, name)))
    return paths


def _at(document: Any, path: tuple[str, ...]) -> tuple[CommentedMap | None, str]:
    """The mapping holding the last key of `path`, if the file has it."""
    for key in path[:-1]:
        document = document.get(key) if isinstance(document, CommentedMap) else None
    return (document if isinstance(document, CommentedMap) else None), path[-1]


def _on_disk(document: CommentedMap, issue: ConfigIssue) -> ConfigIssue:
    """`issue` with the line of its key in `document`, or no line when the key is not there (an edit adds it)."""
    if issue.line is None:
        return issue  # not about a line of the file (e.g. set by an environment variable)
    loc = tuple(issue.path.split("."))
    holder, key = _at(document, loc)
    return replace(issue, line=_line_of(document, loc) if holder is not None and key in holder else None)


def etag_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ConfigFile:
    """The config file and the settings it holds. One writer at a time (an asyncio lock)."""

    def __init__(
        self, path: Path, model: type[WardenSettings], text: str, document: CommentedMap, settings: WardenSettings
    ) -> None:
        self.path = path
        self.model = model
        self.text = text
        self.settings = settings
        self._document = document
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[WardenSettings], Awaitable[None]]] = []
        self._status_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.last_error: ConfigError | None = None
        self.overlay = Overlay()
        self._last_read = text  # what the previous check of the file read (see reload_if_changed)

    @classmethod
    def load(cls, path: Path, model: type[WardenSettings]) -> ConfigFile:
        text = _read(path)
        document, settings = parse(text, model, str(path))
        return cls(path, model, text, document, settings)

    @property
    def etag(self) -> str:
        return etag_of(self.text)

    def masked_text(self) -> str:
        """The file as a person may see it: secret values replaced by MASK."""
        document = copy.deepcopy(self._document)
        for path in secret_paths(self.model):
            holder, key = _at(document, path)
            if holder is not None and holder.get(key) is not None:
                holder[key] = MASK
        return dump(document)

    async def replace_masked(self, text: str, expected_etag: str) -> WardenSettings:
        """`replace` for text edited from `masked_text`: a secret still masked keeps its value."""
        return await self.replace(await asyncio.to_thread(self._unmasked, text), expected_etag)

    def _unmasked(self, text: str) -> str:
        document = _parse_yaml(text, str(self.path))
        for path in secret_paths(self.model):
            holder, key = _at(document, path)
            if holder is not None and holder.get(key) == MASK:
                current, _ = _at(self._document, path)
                holder[key] = current.get(key) if current is not None else None
        return dump(document)

    def on_change(self, listener: Callable[[WardenSettings], Awaitable[None]]) -> None:
        """`listener(settings)` is awaited after every accepted change."""
        self._listeners.append(listener)

    def on_status(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """`listener(status)` hears the file's version and its last error, now and after every change."""
        self._status_listeners.append(listener)
        listener(self.status())

    def status(self) -> dict[str, Any]:
        error = self.last_error
        return {
            "etag": self.etag,
            "error": str(error) if error else None,
            "issues": [{"path": i.path, "message": i.message, "line": i.line} for i in error.issues] if error else [],
        }

    def _report(self) -> None:
        for listener in self._status_listeners:
            listener(self.status())

    async def update_daemon(self, name: str, values: dict[str, Any]) -> WardenSettings:
        """Set fields of one daemon's section (None removes a key, back to its default).

        Raises ConfigConflict when the file was edited by hand since it was last read.
        """
        async with self._lock:
            await self._refuse_unseen_edit()
            document = copy.deepcopy(self._document)
            sections = document.setdefault("daemons", CommentedMap())
            if sections is None:
                sections = document["daemons"] = CommentedMap()
            section = sections.get(name)
            if section is None:
                section = sections[name] = CommentedMap()
            for key, value in values.items():
                if value is None:
                    section.pop(key, None)
                elif section.get(key) != value:
                    section[key] = value
            try:
                return await self._accept(dump(document), "update")
            except ConfigError as invalid:
                # The edited text was never written: name lines of the file as it is.
                raise ConfigError(invalid.source, [_on_disk(self._document, i) for i in invalid.issues]) from None

    async def replace(self, text: str, expected_etag: str | None = None) -> WardenSettings:
        """Replace the whole file with `text` (validated first); `expected_etag` guards lost updates."""
        async with self._lock:
            if expected_etag is not None and expected_etag != self.etag:
                raise ConfigConflict(f"{self.path} changed since version {expected_etag}; reload and edit again")
            if expected_etag is not None:
                await self._refuse_unseen_edit()
            return await self._accept(text, "edit")

    async def _refuse_unseen_edit(self) -> None:
        """A hand edit not yet picked up (or rejected) would be lost by writing over it."""
        try:
            on_disk = await asyncio.to_thread(self.path.read_bytes)
        except OSError:
            return  # nothing readable to lose
        try:
            unseen = _decode(on_disk, str(self.path)) != self.text
        except ConfigError:
            unseen = True  # bytes that are not UTF-8 text are a hand edit all the same
        if unseen:
            raise ConfigConflict(f"{self.path} was edited by hand since Warden last read it; reload and edit again")

    async def add_overlay(self, overlay: Overlay) -> WardenSettings:
        """Lay `overlay` around the file from now on, over any laid before (the file itself is not touched)."""
        async with self._lock:
            overlay = self.overlay.beneath(overlay)
            document, settings = parse(self.text, self.model, str(self.path), overlay)
            self.overlay = overlay
            await self._adopt(self.text, document, settings, "overlay")
            return settings

    async def _accept(self, text: str, how: str) -> WardenSettings:
        # In a thread, as every parse of text Warden did not write: a large file takes seconds to parse.
        document, settings = await asyncio.to_thread(parse, text, self.model, str(self.path), self.overlay)
        try:
            await asyncio.to_thread(_atomic_write, self.path, text)
        except OSError as error:  # e.g. a folder where the file should be
            raise ConfigConflict(f"{self.path} cannot be written ({error.strerror}); nothing was changed") from None
        await self._adopt(text, document, settings, how)
        return settings

    async def _adopt(self, text: str, document: CommentedMap, settings: WardenSettings, how: str) -> None:
        self.text, self._document, self.settings = text, document, settings
        self.last_error = None
        self._report()
        logger.info("configuration changed", path=str(self.path), how=how)
        for listener in self._listeners:
            await listener(settings)

    async def watch(self, clock: Clock, interval: float) -> None:
        """Pick up hand edits of the file until cancelled. Nothing an edit does ends the watch (nor Warden with it)."""
        while True:
            await sleep(clock, interval)
            try:
                await self.reload_if_changed(settled=True)
            except Exception as error:  # e.g. a listener failed on the new settings: the next edit is still picked up
                logger.error("applying the edited config file failed", exc_info=error)

    async def reload_if_changed(self, *, settled: bool = False) -> bool:
        """Re-read the file; adopt it when it changed and is valid. True when adopted.

        With `settled`, a changed text is judged only once the previous check read the same:
        an editor that saves in place empties the file first, and a half-written file must
        neither become the running configuration nor be reported as broken.
        """
        async with self._lock:
            try:
                text = await asyncio.to_thread(_read, self.path)
                fresh, self._last_read = text != self._last_read, text
                if text == self.text:
                    if self.last_error is not None:  # e.g. a broken edit was undone
                        self.last_error = None
                        self._report()
                    return False
                if settled and fresh:
                    return False
                document, settings = await asyncio.to_thread(parse, text, self.model, str(self.path), self.overlay)
            except ConfigError as error:
                self._reject(error)
                return False
            except Exception as error:  # a defect in reading or checking the file: shown like an invalid file
                issue = ConfigIssue("", f"could not be checked ({type(error).__name__}: {error})", None)
                self._reject(ConfigError(str(self.path), [issue]), failure=error)
                return False
            await self._adopt(text, document, settings, "file edited")
            return True

    def _reject(self, error: ConfigError, failure: Exception | None = None) -> None:
        if self.last_error is None or self.last_error.issues != error.issues:
            logger.error(
                "config file rejected; the running configuration is unchanged", error=str(error), exc_info=failure
            )
        self.last_error = error
        self._report()


def _read(path: Path) -> str:
    """The file's text; ConfigError when it cannot be read (gone, a folder, a link loop...) or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read the file: {error.strerror}", None)]) from None
    return _decode(data, str(path))


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text with universal newlines (as a text-mode read gives); ConfigError naming the line otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        issue = ConfigIssue("", f"not UTF-8 text: byte 0x{data[error.start]:02x} cannot be read", line)
        raise ConfigError(source, [issue]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _atomic_write(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
