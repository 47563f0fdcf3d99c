"""Placing a torrent's media files into the library: hard links, the copy fallback, and hostile names."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.downloads.files import (
    DestinationError,
    Placement,
    TorrentFile,
    UnsafeFile,
    place,
    relative_name,
    select_media,
)


def write(path: Path, data: bytes = b"video data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: a file's content, a link's target, or '<dir>'."""
    entries: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        for entry in (Path(folder) / name for name in dirs + files):
            key = str(entry.relative_to(root))
            if entry.is_symlink():
                entries[key] = f"-> {os.readlink(entry)}"
            else:
                entries[key] = "<dir>" if entry.is_dir() else entry.read_bytes()
    return entries


def assert_on_different_filesystems(one: Path, other: Path) -> None:
    assert os.stat(one).st_dev != os.stat(other).st_dev, "this test needs /dev/shm and tmp_path on two filesystems"


@pytest.fixture
def download(tmp_path: Path) -> Path:
    return tmp_path / "downloads"


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    return folder


@pytest.fixture
def shm_download() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_select_media_keeps_complete_media_files_of_the_minimum_size_in_order() -> None:
    files = [
        TorrentFile("Show/b.MP4", 100, 1.0),
        TorrentFile("Show/a.mkv", 100, 1.0),
        TorrentFile("Show/exact.mp4", 50, 1.0),
        TorrentFile("Show/small.mp4", 49, 1.0),
        TorrentFile("Show/partial.mp4", 100, 0.99),
        TorrentFile("Show/notes.txt", 100, 1.0),
        TorrentFile("Show/mp4", 100, 1.0),
    ]
    chosen = select_media(files, {".mp4", ".mkv"}, min_size=50)
    assert [file.name for file in chosen] == ["Show/b.MP4", "Show/a.mkv", "Show/exact.mp4"]


@pytest.mark.parametrize(("name", "parts"), [("Folder/sub/a.mp4", ("Folder", "sub", "a.mp4")), ("a.mp4", ("a.mp4",))])
def test_relative_name_accepts_plain_torrent_paths(name: str, parts: tuple[str, ...]) -> None:
    assert relative_name(name).parts == parts


@pytest.mark.parametrize("name", ["../x.mp4", "a/../../x.mp4", "/etc/x.mp4", "a//b.mp4", "./a.mp4", "a\x00.mp4", ""])
def test_relative_name_refuses_names_that_could_escape(name: str) -> None:
    with pytest.raises(UnsafeFile):
        relative_name(name)


def test_a_file_is_hard_linked_and_the_source_stays(download: Path, library: Path) -> None:
    source = write(download / "a.mp4")
    target, placement = place(download, "a.mp4", library)
    assert (target, placement) == (library / "a.mp4", Placement.LINKED)
    assert os.stat(target).st_ino == os.stat(source).st_ino
    assert source.read_bytes() == b"video data"


def test_the_torrent_folder_structure_is_kept(download: Path, library: Path) -> None:
    write(download / "Show/Season 1/e1.mkv", b"one")
    write(download / "Show/Season 2/e2.mkv", b"two")
    place(download, "Show/Season 1/e1.mkv", library)
    place(download, "Show/Season 2/e2.mkv", library)
    assert snapshot(library) == {
        "Show": "<dir>",
        "Show/Season 1": "<dir>",
        "Show/Season 2": "<dir>",
        "Show/Season 1/e1.mkv": b"one",
        "Show/Season 2/e2.mkv": b"two",
    }


def test_placing_again_finds_the_file_present_and_changes_nothing(download: Path, library: Path) -> None:
    write(download / "Show/a.mp4")
    target, _ = place(download, "Show/a.mp4", library)
    before, inode = snapshot(library), os.stat(target).st_ino
    assert place(download, "Show/a.mp4", library) == (target, Placement.PRESENT)
    assert snapshot(library) == before
    assert os.stat(target).st_ino == inode


def test_a_different_file_at_the_target_is_refused_and_kept(download: Path, library: Path) -> None:
    write(download / "a.mp4", b"the new video")
    write(library / "a.mp4", b"older")
    with pytest.raises(UnsafeFile, match="different file"):
        place(download, "a.mp4", library)
    assert (library / "a.mp4").read_bytes() == b"older"


def test_a_symlink_in_the_download_leading_outside_is_refused(tmp_path: Path, download: Path, library: Path) -> None:
    secret = write(tmp_path / "outside/secret.mp4")
    download.mkdir()
    (download / "a.mp4").symlink_to(secret)
    before = snapshot(library)
    with pytest.raises(UnsafeFile, match="outside the download"):
        place(download, "a.mp4", library)
    assert snapshot(library) == before


def test_a_symlinked_folder_in_the_library_is_not_followed(tmp_path: Path, download: Path, library: Path) -> None:
    write(download / "Show/Season 1/e1.mkv")
    outside = tmp_path / "outside"
    outside.mkdir()
    (library / "Show").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeFile, match="not a folder"):
        place(download, "Show/Season 1/e1.mkv", library)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape.mp4", "{outside}/escape.mp4", "Show/../../escape.mp4"])
def test_hostile_names_write_nothing(tmp_path: Path, download: Path, library: Path, name: str) -> None:
    write(tmp_path / "escape.mp4")
    write(download / "escape.mp4")
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeFile):
        place(download, name.format(outside=tmp_path), library)
    assert snapshot(tmp_path) == before


def test_a_missing_source_is_the_torrents_problem(download: Path, library: Path) -> None:
    download.mkdir()
    with pytest.raises(UnsafeFile, match="missing from the download"):
        place(download, "a.mp4", library)


def test_a_source_that_is_not_a_regular_file_is_refused(download: Path, library: Path) -> None:
    (download / "a.mp4").mkdir(parents=True)
    os.mkfifo(download / "b.mp4")
    for name in ("a.mp4", "b.mp4"):
        with pytest.raises(UnsafeFile, match="not a regular file"):
            place(download, name, library)
    assert snapshot(library) == {}


def test_a_missing_destination_is_a_destination_error(tmp_path: Path, download: Path) -> None:
    write(download / "a.mp4")
    with pytest.raises(DestinationError, match="does not exist"):
        place(download, "a.mp4", tmp_path / "nowhere")


def test_a_destination_that_is_a_file_is_a_destination_error(tmp_path: Path, download: Path) -> None:
    write(download / "a.mp4")
    with pytest.raises(DestinationError, match="is not a folder"):
        place(download, "a.mp4", write(tmp_path / "library"))


def test_a_full_disk_is_a_destination_error_naming_the_path(
    download: Path, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(download / "a.mp4")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", disk_full)
    with pytest.raises(DestinationError) as raised:
        place(download, "a.mp4", library)
    assert str(library / "a.mp4") in str(raised.value)
    assert os.strerror(errno.ENOSPC) in str(raised.value)


def test_across_filesystems_the_file_is_copied(shm_download: Path, library: Path) -> None:
    video = os.urandom(3 * 1024 * 1024 + 7)  # more than one copy chunk
    source = write(shm_download / "Show/a.mp4", video)
    assert_on_different_filesystems(source, library)
    target, placement = place(shm_download, "Show/a.mp4", library)
    assert placement == Placement.COPIED
    assert target.read_bytes() == video
    assert os.stat(target).st_ino != os.stat(source).st_ino
    assert [path.name for path in target.parent.iterdir()] == ["a.mp4"]  # no temporary file left
    assert source.read_bytes() == video


def test_across_filesystems_a_file_of_the_same_size_is_present(shm_download: Path, library: Path) -> None:
    source = write(shm_download / "a.mp4", b"new video")
    write(library / "a.mp4", b"old video")
    assert_on_different_filesystems(source, library)
    assert place(shm_download, "a.mp4", library) == (library / "a.mp4", Placement.PRESENT)
    assert snapshot(library) == {"a.mp4": b"old video"}
