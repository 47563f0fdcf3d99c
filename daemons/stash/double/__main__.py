"""Run a Stash double on its own: `python -m daemons.stash.double --port 0 --scenes 100000 --api-key KEY`.

The first line of stdout is the double's URL (nothing else is written there); its log goes to
stderr. It runs until SIGINT or SIGTERM, or, with --parent-pipe, until its stdin closes: a
parent that keeps stdin open ends the double by closing it, or by dying. With --parent-pipe
the API key, when one is wanted, is the first line of stdin (--api-key would show it to `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from daemons.stash.double.server import StashDouble


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m daemons.stash.double", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--scenes", type=int, default=0, help="synthetic scenes to load")
    parser.add_argument("--seed", type=int, default=0, help="seed for the synthetic scenes")
    parser.add_argument("--api-key", default=None, help="the ApiKey header clients must send")
    parser.add_argument(
        "--parent-pipe",
        action="store_true",
        help="read the API key from the first line of stdin (an empty line: none) and stop when stdin closes",
    )
    parser.add_argument("--utc-offset", default="+02:00", help="offset the double renders times with")
    parser.add_argument("--step-delay", type=float, default=0.01, help="seconds per job step")
    parser.add_argument("--library-path", action="append", default=[], help="a library folder (repeatable)")
    options = parser.parse_args(argv)
    if options.parent_pipe and options.api_key is not None:
        parser.error("--api-key and --parent-pipe exclude each other (with --parent-pipe the key comes on stdin)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(options))


async def _serve(options: argparse.Namespace) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    api_key = options.api_key
    parent: asyncio.StreamReader | None = None
    if options.parent_pipe:
        parent = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(parent), sys.stdin)
        line = await parent.readline()
        if not line.endswith(b"\n"):
            sys.exit("stash double: stdin closed before the API key line")
        api_key = line.decode().strip() or None
    double = StashDouble(
        api_key=api_key,
        utc_offset=options.utc_offset,
        step_delay=options.step_delay,
        library_paths=options.library_path,
    )
    if options.scenes:
        double.add_synthetic_scenes(options.scenes, seed=options.seed)
    watching = None if parent is None else asyncio.create_task(_until_closed(parent, stopping), name="parent-pipe")
    async with double:
        print(double.url, flush=True)
        print(f"schema: {double.schema_source}; scenes: {len(double.library.scenes)}", file=sys.stderr, flush=True)
        await stopping.wait()
    if watching is not None:
        watching.cancel()


async def _until_closed(parent: asyncio.StreamReader, stopping: asyncio.Event) -> None:
    while await parent.read(4096):
        pass  # the parent has nothing more to say: only the end of the pipe matters
    stopping.set()


if __name__ == "__main__":
    main()
