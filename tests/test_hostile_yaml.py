"""Hostile YAML, as a raw config edit through the API and as a hand edit of the file: refused with a
clear error before it is expanded or executed; nothing changes, nothing runs, memory stays bounded.
Brackets inside quotes and comments are text, not nesting. A defect met while checking a hand edit
is shown as the config problem and the watch goes on: no edit ends Warden."""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor import configfile
from supervisor.configfile import MAX_TEXT
from tests.daemons_for_tests import Worker
from tests.tally import TallyRecorder
from tests.test_hostile_api import fingerprint
from tests.webharness import api_session, config_text, running_warden, until

YAML = config_text("  worker:\n    interval: 3600\n")
TAG = "has no place in the config"
PEAK_LIMIT = 64 * 1024 * 1024  # bytes the refusals may allocate at most; a billion laughs expanded needs gigabytes


def laughs(levels: int = 9) -> str:
    """A billion laughs: nine levels of nine aliases each, about 4e8 values once expanded, in under 1 KiB."""
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels + 1)]
    return YAML + "\n".join(lines) + "\n"


def hostile(marker: Path) -> dict[str, tuple[str, str]]:
    """name → (document, what the error must say)."""
    touch = f"['touch {marker}']"
    return {
        "billion laughs": (laughs(), "aliases are expanded"),
        "flow nesting 20,000 deep": (YAML + "x: " + "[" * 20_000 + "]" * 20_000 + "\n", "brackets deep"),
        "block nesting 5,000 deep": (YAML + "x:\n  " + "- " * 5_000 + "1\n", "nested too deeply"),
        "longer than 64 KiB": (YAML + "# padding\n" * (MAX_TEXT // 10), "characters long"),
        "duplicate keys": (YAML + "server:\n  port: 1\n", "duplicate key"),
        "python/object/apply tag": (YAML.replace("3600", f"!!python/object/apply:os.system {touch}"), TAG),
        "python/object/new tag": (YAML + f"stash: !!python/object/new:subprocess.Popen [{touch}]\n", TAG),
        "python/name tag": (YAML + "jobs:\n  concurrency: !!python/name:os.system\n", TAG),
        "python/module tag": (f"--- !!python/module:os\n{YAML}", TAG),
        "python tag on a key": (YAML + f"? !!python/object/apply:os.system {touch}\n: 1\n", TAG),
        "str tag on a key": (YAML.replace("interval:", "!!str interval:"), TAG),
        "binary tag": (YAML.replace("3600", "!!binary MzYwMA=="), TAG),
        "set tag": (YAML + "stash: !!set {url, timeout}\n", TAG),
        "timestamp tag": (YAML.replace("3600", "!!timestamp 2001-12-14"), TAG),
        "a list of lists as a key": (YAML + "? [[a]]\n: 1\n", "a key must be a plain value"),
        "a data_dir name over 255 characters": (
            YAML.replace("data_dir: data", f"data_dir: /tmp/{'a' * 300}"),
            "File name too long",
        ),
    }


async def test_hostile_yaml_is_refused_safely_by_the_api_and_in_the_file(tmp_path: Path, tally: TallyRecorder) -> None:
    marker = tmp_path / "executed"
    documents = hostile(marker)
    refused: list[str] = []
    async with running_warden(tmp_path, [Worker], yaml=YAML) as warden, api_session(warden) as session:
        changed = 0
        tracemalloc.start()
        try:
            for name, (text, says) in documents.items():
                before = await fingerprint(warden)
                async with asyncio.timeout(30):  # a guard: an expansion would never end
                    async with session.put(
                        "api/config", data=text.encode(), headers={"If-Match": f'"{warden.config.etag}"'}
                    ) as response:
                        body = await response.json()
                if response.status == 422 and says in " ".join(i["message"] for i in body["issues"]):
                    refused.append(f"api: {name}")
                changed += await fingerprint(warden) != before

                # The same text written by hand: the file watcher refuses it and keeps the running config.
                warden.config.path.write_text(text)
                async with asyncio.timeout(30):
                    await until(warden, lambda: warden.config.last_error is not None)
                if says in str(warden.config.last_error):
                    refused.append(f"file: {name}")
                warden.config.path.write_bytes(before.config)
                await until(warden, lambda: warden.config.last_error is None)
                # Only the config status moved (the error shown, then cleared): the hub's sequence says so.
                changed += replace(await fingerprint(warden), seq=before.seq) != before
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert warden.supervisor is not None and warden.supervisor.runner("worker").config.interval == 3600
    tries = 2 * len(documents)
    lost = tries - len(refused) + changed + marker.exists()
    tally.record(
        "yaml",
        "billion laughs, deep flow and block nesting, over 64 KiB, duplicate keys, tags on keys and values "
        "(python objects, !!str, !!binary, !!set, !!timestamp), a list as a key, a data_dir name over 255 characters",
        tries=tries,
        outcome=f"all refused with a clear error (API 422, file edit reported), nothing run or changed, "
        f"peak {peak // 2**20} MiB",
        lost=lost,
    )
    assert sorted(refused) == sorted(f"{where}: {name}" for where in ("api", "file") for name in documents)
    assert not marker.exists(), "a YAML tag ran a command"
    assert changed == 0
    assert peak < PEAK_LIMIT
    assert lost == 0


async def test_brackets_in_quotes_and_comments_are_text_not_nesting(tmp_path: Path, tally: TallyRecorder) -> None:
    password = "[" * 40 + "{" * 40
    edit = YAML + f"# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nqbittorrent:\n  password: '{password}'\n"
    async with running_warden(tmp_path, [Worker], yaml=YAML) as warden, api_session(warden) as session:
        text = warden.config.path.read_text()
        async with session.put(
            "api/config",
            data=(text + edit.removeprefix(YAML)).encode(),
            headers={"If-Match": f'"{warden.config.etag}"'},
        ) as response:
            status = response.status
        stored = warden.config.settings.qbittorrent.password
        kept = stored is not None and stored.get_secret_value() == password
    tally.record(
        "yaml",
        "a password of 80 brackets in quotes and a comment of brackets",
        tries=1,
        outcome="accepted as text (only brackets outside quotes and comments count as nesting)",
        lost=int(not kept),
    )
    assert status == 200
    assert kept


async def test_a_defect_met_checking_a_hand_edit_is_shown_and_the_watch_goes_on(
    tmp_path: Path, tally: TallyRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_parse = configfile.parse

    def parse(text: str, *args: Any) -> Any:
        if "interval: 7\n" in text:
            raise RuntimeError("a defect in checking")
        return real_parse(text, *args)

    monkeypatch.setattr(configfile, "parse", parse)
    failures = ["a defect in applying"]  # the listener fails once, on the first change it hears

    async def listener(_: Any) -> None:
        if failures:
            raise RuntimeError(failures.pop())

    async with running_warden(tmp_path, [Worker], yaml=YAML) as warden:
        assert warden.supervisor is not None
        worker = warden.supervisor.runner("worker")
        warden.config.on_change(listener)
        text = warden.config.path.read_text()
        with capture_logs() as logs:
            warden.config.path.write_text(text.replace("interval: 3600", "interval: 7"))
            await until(warden, lambda: warden.config.last_error is not None)
            shown = "could not be checked (RuntimeError: a defect in checking)" in str(warden.config.last_error)
            unchanged = worker.config.interval == 3600
            # The listener fails on this edit; the watch must still adopt the next one.
            for interval in (8, 9):
                edit = text.replace("interval: 3600", f"interval: {interval}")
                warden.config.path.write_text(edit)
                await until(warden, lambda edit=edit: warden.config.text == edit)
        running = warden.ready.is_set() and not failures and not warden.config.last_error
    traced = [entry["exc_info"] for entry in logs if isinstance(entry.get("exc_info"), RuntimeError)]
    outcome = [shown, unchanged, len(traced) == 2, running]
    tally.record(
        "config",
        "a hand edit whose check fails with an unexpected error; a change listener that fails",
        tries=2,
        outcome="the failure shown as the config problem and logged with its traceback, config unchanged, "
        "the watch goes on and adopts the next edit",
        lost=outcome.count(False),
    )
    assert outcome == [True, True, True, True]
