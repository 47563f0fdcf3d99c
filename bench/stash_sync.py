"""stash_sync against a library of 100,000 scenes: a full sync, then an incremental one.

The Stash double runs in its own process, so that the peak memory (this process's peak RSS)
and the CPU time reported are Warden's alone; the wall times include the double answering.
Prints a table and writes bench/results/stash_sync.json (stash_sync.tiny.json with --tiny).

    python -m bench.stash_sync [--scenes 100000] [--changed 100] [--page-size 500] [--overlap 3600] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench import write_results
from daemons.stash.client import StashClient
from daemons.stash.library import SceneLibrary
from daemons.stash_sync import StashSync
from tests.harness import Kernel, make_settings, running_kernel

KEY = "bench-stash-api-key-0123"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_cycle(kernel: Kernel, after: float | None) -> tuple[float, float, str]:
    """Wait for the next completed sync (a later sleep than `after`).

    Returns (wall seconds, CPU seconds of this process, the daemon's message).
    """
    status = kernel.supervisor.runner("stash_sync").status
    started, cpu = time.perf_counter(), time.process_time()
    await kernel.until(
        lambda: status.sleeping_until is not None and (after is None or status.sleeping_until > after),
        timeout=3600,
    )
    return time.perf_counter() - started, time.process_time() - cpu, status.message


async def measure(scenes: int, changed: int, page_size: int, overlap: float) -> dict[str, object]:
    double = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemons.stash.double",
        "--scenes",
        str(scenes),
        "--api-key",
        KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert double.stdout is not None
        url = (await double.stdout.readline()).decode().strip()
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            settings = make_settings(
                [StashSync],
                tmp,
                stash={"url": url, "api_key": KEY, "timeout": 120},
                daemons={"stash_sync": {"interval": 86_400, "page_size": page_size, "overlap": overlap}},
            )
            rss_before = peak_rss_mib()
            async with running_kernel([StashSync], tmp, settings=settings) as kernel:
                await kernel.supervisor.start("stash_sync")
                full_seconds, full_cpu, full_message = await run_cycle(kernel, None)
                rss_full = peak_rss_mib()
                client = StashClient(url, KEY, 120)
                try:
                    _, page = await client.find_scenes({}, "id", per_page=changed, sort="id")
                    tag = await client.create_tag("changed for the benchmark")
                    await client.update_scene_tags([scene["id"] for scene in page], [tag["id"]])
                finally:
                    client.close()
                until = kernel.supervisor.runner("stash_sync").status.sleeping_until
                kernel.supervisor.wake("stash_sync")
                incremental_seconds, incremental_cpu, incremental_message = await run_cycle(kernel, until)
                rss_incremental = peak_rss_mib()
            library = await SceneLibrary.open(tmp / "library.db")
            try:
                stored = await library.count()
            finally:
                await library.close()
    finally:
        double.terminate()
        await double.wait()
    return {
        "scenes": scenes,
        "page_size": page_size,
        "overlap_seconds": overlap,
        "stored": stored,
        "full_sync_seconds": round(full_seconds, 2),
        "full_sync_warden_cpu_seconds": round(full_cpu, 2),
        "full_sync_message": full_message,
        "incremental_changed": changed,
        "incremental_seconds": round(incremental_seconds, 3),
        "incremental_warden_cpu_seconds": round(incremental_cpu, 3),
        "incremental_message": incremental_message,
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib_after_full": round(rss_full, 1),
        "peak_rss_mib_after_incremental": round(rss_incremental, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument(
        "--overlap", type=float, default=3600, help="stash_sync overlap: scenes updated that long before are read again"
    )
    parser.add_argument("--tiny", action="store_true", help="500 scenes, 5 changed, written to stash_sync.tiny.json")
    options = parser.parse_args()
    if options.tiny:
        options.scenes, options.changed = 500, 5
    result = asyncio.run(measure(options.scenes, options.changed, options.page_size, options.overlap))
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    write_results("stash_sync", result, tiny=options.tiny)


if __name__ == "__main__":
    main()
