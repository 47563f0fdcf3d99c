"""Path traversal: in URLs (log downloads, static files), in config paths, and in torrent file names.

A request naming `..`, `%2e%2e` or an absolute path reads nothing outside what it names; a config
path that is relative, missing, a file, too long a name, or holds a NUL is refused and changes
nothing; and torrent file names drawn by hypothesis never make the download processor write
outside the library.
(tests/test_download_files.py and tests/test_download_processor.py have the named cases.)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from daemons.download_processor import DownloadProcessor
from daemons.downloads.files import DestinationError, UnsafeFile, place
from tests.daemons_for_tests import Worker
from tests.tally import TallyRecorder
from tests.test_download_files import snapshot, write
from tests.test_hostile_api import fingerprint
from tests.webharness import TOKEN, api_session, config_text, running_warden

TRAVERSALS = [
    "api/daemons/../../warden.yaml/logs/download",
    "api/daemons/%2e%2e/logs/download",
    "api/daemons/..%2F..%2Fwarden.yaml/logs/download",
    "api/daemons/%2Fetc%2Fpasswd/logs/download",
    "api/daemons//etc/passwd/logs/download",
    "api/daemons/worker/logs/download/../../../../../etc/passwd",
    "api/daemons/worker%2F..%2F..%2Fwarden.yaml/logs",
    "static/../app.py",
    "static/%2e%2e/app.py",
    "static/..%2fapp.py",
    "static/%2e%2e%2f%2e%2e%2fwarden.yaml",
    "static//etc/passwd",
    "static/..\\app.py",
    "static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
]
#: Bytes that only files outside what a request names hold.
OUTSIDE = [b"root:x:0:0", b"def create_app", TOKEN.encode()]


async def test_traversal_in_urls_reads_nothing_outside(tmp_path: Path, tally: TallyRecorder) -> None:
    leaked: list[str] = []
    async with running_warden(tmp_path, [Worker]) as warden, api_session(warden) as session:
        assert warden.url is not None
        for path in TRAVERSALS:
            # encoded=True: sent as written, not normalised by the client first.
            async with session.get(URL(warden.url + path, encoded=True)) as response:
                body = await response.read()
            if response.status < 300 or response.status >= 500 or any(secret in body for secret in OUTSIDE):
                leaked.append(f"{path}: {response.status}")
        async with session.get("api/daemons/worker/logs/download") as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"] == 'attachment; filename="worker.log"'
    tally.record(
        "paths",
        "'..', %2e%2e, %2F and absolute paths in log download and static URLs",
        tries=len(TRAVERSALS),
        outcome="404 or 400 for each, nothing outside read",
        lost=len(leaked),
    )
    assert leaked == []


def bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """A name → (dotted key, YAML value) of config paths that must be refused."""
    a_file = write(tmp_path / "a-file")
    return {
        "relative destination": ("daemons.download_processor.destination", "../library"),
        "missing destination": ("daemons.download_processor.destination", str(tmp_path / "nowhere")),
        "destination that is a file": ("daemons.download_processor.destination", str(a_file)),
        "destination with NUL": ("daemons.download_processor.destination", f'"{tmp_path}\\0x"'),
        "destination name over 255 characters": ("daemons.download_processor.destination", str(tmp_path / ("c" * 300))),
        "data_dir with NUL": ("paths.data_dir", '"data\\0/../../etc"'),
        "data_dir that is a file": ("paths.data_dir", str(a_file)),
        "data_dir name over 255 characters": ("paths.data_dir", str(tmp_path / ("a" * 300))),
        "database name over 255 characters": ("store.database", str(tmp_path / ("b" * 300))),
        "database that is a folder": ("store.database", str(tmp_path)),
    }


async def test_config_paths_that_cannot_be_used_are_refused_and_change_nothing(
    tmp_path: Path, tally: TallyRecorder
) -> None:
    yaml = config_text("  download_processor:\n    auto_start: false\n") + "store:\n  busy_timeout: 5\n"
    refused: list[str] = []
    cases = bad_paths(tmp_path)
    async with running_warden(tmp_path, [DownloadProcessor], yaml=yaml) as warden, api_session(warden) as session:
        for name, (key, value) in cases.items():
            before = await fingerprint(warden)
            section, field = key.rsplit(".", 1)
            text = before.config.decode()
            # Each value goes where its key belongs in the file running_warden wrote.
            old, new = {
                "daemons.download_processor": (
                    "    auto_start: false\n",
                    f"    auto_start: false\n    {field}: {value}\n",
                ),
                "paths": (f"  data_dir: {tmp_path / 'data'}\n", f"  data_dir: {value}\n"),
                "store": ("store:\n", f"store:\n  {field}: {value}\n"),
            }[section]
            text = text.replace(old, new)
            assert text != before.config.decode(), name
            async with session.put(
                "api/config", data=text.encode(), headers={"If-Match": f'"{warden.config.etag}"'}
            ) as response:
                body = await response.json()
            paths = [issue["path"] for issue in body.get("issues", [])]
            if response.status == 422 and paths == [key] and await fingerprint(warden) == before:
                refused.append(name)
    tally.record(
        "paths",
        "config paths: relative, missing, a file for a folder (and the reverse), a NUL character, "
        "a name longer than the filesystem allows",
        tries=len(cases),
        outcome="422 naming the key, nothing changed",
        lost=len(cases) - len(refused),
    )
    assert sorted(refused) == sorted(cases)


#: Parts of torrent file names: plain, climbing, absolute, odd.
PARTS = ["Show", "e1.mp4", "..", ".", "", "...", "..\\..", "\x00", "~", "%2e%2e", "Show\\..\\..", "é", "e1.mp4/"]
names = (
    st.sampled_from(["e1.mp4", "Show/e1.mp4"])  # real files of the download: placed
    | st.lists(st.sampled_from(PARTS), min_size=1, max_size=6).map("/".join)
    | st.text(max_size=40)
)


@pytest.mark.soak
def test_torrent_file_names_never_write_outside_the_library(tally: TallyRecorder, soak: bool) -> None:
    outcome = {"placed": 0, "refused": 0, "escaped": 0}

    @settings(max_examples=3000 if soak else 100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(name=names, absolute=st.booleans())
    def place_one(name: str, absolute: bool) -> None:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            download, library = root / "downloads", root / "library"
            library.mkdir()
            write(download / "Show" / "e1.mp4")
            write(download / "e1.mp4")
            write(root / "e1.mp4", b"outside")  # where a climbing name would land
            before = snapshot(root)
            try:
                place(download, f"{root}/{name}" if absolute else name, library)
                outcome["placed"] += 1
            except (UnsafeFile, DestinationError):
                outcome["refused"] += 1
            after = snapshot(root)
            outside = {k: v for k, v in after.items() if not k.startswith("library")}
            inside = [k for k in after if k.startswith("library/")]
            escaped = outside != {k: v for k, v in before.items() if not k.startswith("library")} or any(
                not (root / k).resolve().is_relative_to(library) for k in inside
            )
            outcome["escaped"] += escaped
            assert not escaped, name

    place_one()
    tally.record(
        "paths",
        "torrent file names drawn by hypothesis ('..', absolute, backslashes, NUL, encoded dots)",
        tries=outcome["placed"] + outcome["refused"],
        outcome=f"{outcome['placed']} placed inside the library, {outcome['refused']} refused; nothing written outside",
        lost=outcome["escaped"],
    )
    assert outcome["placed"] > 0 and outcome["refused"] > 0
    assert outcome["escaped"] == 0
