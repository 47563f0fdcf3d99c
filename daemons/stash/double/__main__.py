"""Run a Stash double on its own: `python -m daemons.stash.double --port 0 --scenes 100000 --api-key KEY`.

The first line of stdout is the double's URL; it runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from daemons.stash.double.server import StashDouble


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m daemons.stash.double", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--scenes", type=int, default=0, help="synthetic scenes to load")
    parser.add_argument("--seed", type=int, default=0, help="seed for the synthetic scenes")
    parser.add_argument("--api-key", default=None, help="the ApiKey header clients must send")
    parser.add_argument("--utc-offset", default="+02:00", help="offset the double renders times with")
    parser.add_argument("--step-delay", type=float, default=0.01, help="seconds per job step")
    parser.add_argument("--library-path", action="append", default=[], help="a library folder (repeatable)")
    asyncio.run(_serve(parser.parse_args(argv)))


async def _serve(options: argparse.Namespace) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    double = StashDouble(
        api_key=options.api_key,
        utc_offset=options.utc_offset,
        step_delay=options.step_delay,
        library_paths=options.library_path,
    )
    if options.scenes:
        double.add_synthetic_scenes(options.scenes, seed=options.seed)
    async with double:
        print(double.url, flush=True)
        print(f"schema: {double.schema_source}; scenes: {len(double.library.scenes)}", file=sys.stderr, flush=True)
        await stopping.wait()


if __name__ == "__main__":
    main()
