"""Hostile YAML, as a raw config edit through the API and as a hand edit of the file: refused with a
clear error before it is expanded or executed; nothing changes, nothing runs, memory stays bounded."""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import replace
from pathlib import Path

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
        "billion laughs, deep flow and block nesting, over 64 KiB, duplicate keys, python object tags",
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
