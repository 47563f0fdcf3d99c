"""Placing a finished torrent's media files into the library by hard link, never writing outside it.

File names come from the torrent and are untrusted: each one is checked before it is joined to a
folder, the source must stay inside the torrent's save path, and every folder created under the destination
must be a real folder, not a link leading elsewhere. Synchronous: the daemon calls it in a thread.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TorrentFile:
    """One file of a torrent as qBittorrent reports it."""

    name: str  # path relative to the torrent's save path, '/'-separated; untrusted
    size: int  # bytes
    progress: float  # 0..1; 1 when the file is complete


class UnsafeFile(Exception):
    """A file of the torrent that must not be placed: the torrent gets the error tag. The message names the file."""


class DestinationError(Exception):
    """The destination folder itself failed (missing, not writable, full, read-only): not the torrent's fault."""


class Placement(enum.StrEnum):
    LINKED = "linked"  # hard link made
    COPIED = "copied"  # copied, because source and destination are on different filesystems
    PRESENT = "present"  # the destination already holds a file of the same size: nothing written


def relative_name(name: str) -> PurePosixPath:
    """The torrent-relative path of a file, or UnsafeFile when it could escape its folder."""
    parts = name.split("/")
    if "\x00" in name or any(part in ("", ".", "..") for part in parts):
        raise UnsafeFile(f"unsafe file name {name!r}: it is empty, absolute, or has '.', '..', empty or NUL parts")
    return PurePosixPath(*parts)


def select_media(files: Iterable[TorrentFile], extensions: Collection[str], min_size: int) -> list[TorrentFile]:
    """The complete files whose lowercased suffix is in `extensions` and whose size is at least min_size, in order."""
    return [
        file
        for file in files
        if file.progress >= 1 and file.size >= min_size and PurePosixPath(file.name).suffix.lower() in extensions
    ]


#: A hard link refused for these reasons can still be a copy: another filesystem, a link count at its
#: limit, a filesystem without hard links, or fs.protected_hardlinks (qBittorrent running as another user).
_COPY_INSTEAD = frozenset({errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})
#: Write failures that concern the whole destination, not one torrent: stop the cycle and retry later.
_DESTINATION_WIDE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.ENOENT})


def place(save_path: Path, name: str, destination: Path) -> tuple[Path, Placement]:
    """Put save_path/name at destination/name without writing outside `destination` or touching the source."""
    relative = relative_name(name)
    source, size = source_of(save_path, name)
    target = _folder(destination, relative, name) / relative.name
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return target, _already_there(target, size)
    except OSError as error:
        if error.errno not in _COPY_INSTEAD:
            raise _cannot_write(target, error) from error
        return target, _copy(source, size, target)
    return target, Placement.LINKED


def source_of(save_path: Path, name: str) -> tuple[Path, int]:
    """The real path and size of the torrent's file `name`, which must be a regular file inside the download."""
    relative = relative_name(name)
    try:
        real = (save_path / relative).resolve(strict=True)
        info = real.stat()
    except FileNotFoundError as error:
        raise UnsafeFile(f"{name} is missing from the download") from error
    # Python 3.11 reports a symlink loop as RuntimeError, later versions as OSError (ELOOP).
    except (OSError, RuntimeError) as error:
        raise UnsafeFile(f"{name} cannot be read in the download: {error}") from error
    if not real.is_relative_to(save_path.resolve()):
        raise UnsafeFile(f"{name} leads outside the download folder, to {real}")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{name} is not a regular file")
    return real, info.st_size


def _folder(destination: Path, relative: PurePosixPath, name: str) -> Path:
    """The target's folder, created one level at a time so a link inside the destination is refused before use."""
    if not destination.is_dir():
        problem = "is not a folder" if destination.exists() else "does not exist"
        raise DestinationError(f"the destination {destination} {problem}")
    folder = destination
    for part in relative.parent.parts:
        folder /= part
        try:
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            mode = folder.lstat().st_mode
        except OSError as error:
            raise _cannot_write(folder, error) from error
        if not stat.S_ISDIR(mode):
            raise UnsafeFile(f"cannot place {name}: {folder} is already there and is not a folder")
    return folder


def _already_there(target: Path, size: int) -> Placement:
    """PRESENT when the target is a regular file of the same size; anything else is never overwritten."""
    try:
        existing = target.lstat()
    except OSError as error:
        raise _cannot_write(target, error) from error
    if stat.S_ISREG(existing.st_mode) and existing.st_size == size:
        return Placement.PRESENT
    raise UnsafeFile(f"a different file already exists at {target}")


def _copy(source: Path, size: int, target: Path) -> Placement:
    """Copy to a hidden temporary file, then link it into place, so an existing target is never clobbered."""
    temp = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    # Opening the source apart from the copy tells the torrent's fault (unreadable) from the destination's.
    try:
        reader = source.open("rb")
    except OSError as error:
        raise UnsafeFile(f"{source} cannot be read: {error.strerror}") from error
    try:
        with reader, temp.open("xb") as writer:
            shutil.copyfileobj(reader, writer, _COPY_CHUNK)
        shutil.copystat(source, temp)
        # The kernel reports an existing target before EXDEV; this catches one that appeared during the copy.
        try:
            os.link(temp, target, follow_symlinks=False)
        except FileExistsError:
            return _already_there(target, size)
    except OSError as error:
        raise _cannot_write(target, error) from error
    finally:
        # The error that brought us here matters more than a leftover hidden file.
        with contextlib.suppress(OSError):
            temp.unlink()
    return Placement.COPIED


def _cannot_write(path: Path, error: OSError) -> DestinationError | UnsafeFile:
    """A destination-wide failure stops the cycle; any other (a name too long there, say) fails the torrent."""
    failure = DestinationError if error.errno in _DESTINATION_WIDE else UnsafeFile
    return failure(f"cannot write {path}: {error.strerror or error}")
