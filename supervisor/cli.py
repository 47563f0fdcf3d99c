"""The `warden` command: run, check-config, daemons."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import structlog

from supervisor import logs
from supervisor.app import Warden, load_config
from supervisor.configfile import ConfigError
from supervisor.plugins import discover
from supervisor.store import StoreError
from web.app import serve
from web.auth import AccessError, check_address
from web.client import Client, ClientError, follow_logs, format_log, status_table, watch

DEFAULT_CONFIG = Path(os.environ.get("WARDEN_CONFIG", "config/warden.yaml"))
logger = structlog.get_logger("warden")


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a value given before the subcommand.
    common.add_argument(
        "--log-format", choices=["console", "json"], default=argparse.SUPPRESS, help="process log output"
    )
    parser = argparse.ArgumentParser(
        prog="warden", description="Keeps the daemons of a Stash library running.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run Warden until SIGINT/SIGTERM", parents=[common])
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in demo Stash even when stash.url is set (the default when it is not)",
    )
    check = commands.add_parser("check-config", help="validate a config file; exit 1 when invalid", parents=[common])
    check.add_argument("path", type=Path, nargs="?", default=DEFAULT_CONFIG)
    daemons = commands.add_parser("daemons", help="list the registered daemons and their settings", parents=[common])
    daemons.add_argument("--json", action="store_true", help="print the JSON schema of each daemon's settings")
    # Commands for a running Warden; it is found through the same config file (or --url/--token).
    remote = argparse.ArgumentParser(add_help=False, parents=[common])
    remote.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config file of the running Warden")
    remote.add_argument("--url", help="the page's URL, e.g. http://127.0.0.1:8765/")
    remote.add_argument("--token", default=os.environ.get("WARDEN_TOKEN"), help="API token (or WARDEN_TOKEN)")
    commands.add_parser("status", help="every daemon's state and status", parents=[remote])
    for action in ("start", "stop", "restart", "wake"):
        command = commands.add_parser(
            action, help=f"{action} a daemon (or all: start/stop/restart all)", parents=[remote]
        )
        command.add_argument("name", help="daemon name, or 'all'")
    log = commands.add_parser("logs", help="a daemon's recent log lines", parents=[remote])
    log.add_argument("name")
    log.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    log.add_argument("--lines", "-n", type=int, default=50, help="how many recent lines first")
    commands.add_parser("watch", help="live status of every daemon", parents=[remote])
    args = parser.parse_args(argv)
    logs.configure(getattr(args, "log_format", "console"))
    if args.command == "run":
        return _run(args.config, args.demo)
    if args.command == "check-config":
        return _check_config(args.path)
    if args.command == "daemons":
        return _list_daemons(args.json)
    return _remote(args)


def _run(config_path: Path, demo: bool) -> int:
    registry = discover()
    try:
        config = load_config(config_path, registry)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        # Checked before anything starts: raised by the front it would come wrapped in the kernel's task group.
        check_address(config.settings)
    except AccessError as refused:
        print(f"warden: {refused}", file=sys.stderr)
        return 2
    try:
        companions: list[Callable[[Warden], AbstractAsyncContextManager[None]]] = []
        if demo or config.settings.stash.url is None:
            companions += _demo_companions()
        asyncio.run(_serve(Warden(config, registry, front=serve, companions=companions)))
    except Exception as error:
        cause = _unwrap(error)
        if isinstance(cause, StoreError):
            print(f"warden: {cause}", file=sys.stderr)
        elif isinstance(cause, OSError):
            server = config.settings.server
            print(f"warden: cannot listen on {server.host}:{server.port}: {cause.strerror or cause}", file=sys.stderr)
        else:
            raise
        return 2
    return 0


def _demo_companions() -> list[Callable[[Warden], AbstractAsyncContextManager[None]]]:
    """The demo Stash and qBittorrent. Imported here: without demo mode, nothing of theirs is loaded."""
    from daemons.qbittorrent.demo import demo_qbittorrent  # noqa: PLC0415
    from daemons.stash.demo import demo_stash  # noqa: PLC0415

    return [demo_stash, demo_qbittorrent]


def _unwrap(error: BaseException) -> BaseException:
    """The one error inside task-group wrappers (a failed start comes wrapped)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _serve(warden: Warden) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.error("second signal: exiting now", signal=signal.Signals(signum).name)
            sys.stderr.flush()
            os._exit(1)
        logger.info("signal received: shutting down (send it again to force)", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        leftovers = await warden.run(stop)
        if leftovers:
            # asyncio.run would wait forever for tasks that ignore cancellation: leave without them.
            logger.error("daemons did not stop; exiting without them", daemons=leftovers)
            sys.stderr.flush()
            os._exit(0)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _remote(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_talk(_client(args), args))
    except ClientError as error:
        print(f"warden: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _client(args: argparse.Namespace) -> Client:
    if args.url and args.token:
        return Client(args.url.rstrip("/") + "/", args.token)
    try:
        found = Client.for_settings(load_config(args.config, discover()).settings)
    except (ConfigError, AccessError) as error:
        raise ClientError(f"cannot find the running Warden from {args.config}: {error}") from None
    return Client((args.url or found.url).rstrip("/") + "/", args.token or found.token)


async def _talk(client: Client, args: argparse.Namespace) -> int:
    if args.command == "status":
        print(status_table((await client.call("GET", "api/daemons"))["daemons"]))
    elif args.command in ("start", "stop", "restart", "wake"):
        if args.name == "all" and args.command != "wake":
            print(status_table((await client.call("POST", f"api/{args.command}-all"))["daemons"]))
        else:
            reply = await client.call("POST", f"api/daemons/{args.name}/{args.command}")
            print(status_table([reply.get("daemon", reply)]))
    elif args.command == "logs":
        recent = await client.call("GET", f"api/daemons/{args.name}/logs?limit={args.lines}")
        for line in reversed(recent["lines"]):
            print(format_log(args.name, line))
        if args.follow:
            await follow_logs(client, args.name)
    else:
        await watch(client)
    return 0


def _check_config(path: Path) -> int:
    try:
        load_config(path, discover())
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def _list_daemons(as_json: bool) -> int:
    registry = discover()
    schemas = {name: cls.Config.model_json_schema() for name, cls in registry.daemons.items()}
    if as_json:
        print(json.dumps(schemas, indent=2))
    else:
        for name, cls in registry.daemons.items():
            print(f"{name}: {cls.title}")
            for field, schema in schemas[name]["properties"].items():
                print(f"  {field} = {schema.get('default')!r}{_bounds(schema)}  {schema.get('description', '')}")
    for error in registry.errors:
        print(f"not loaded: {error.name} ({error.source}): {error.error}", file=sys.stderr)
    return 1 if registry.errors else 0


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def _bounds(schema: dict[str, Any]) -> str:
    parts = [f"{sign} {schema[key]}" for key, sign in _BOUNDS.items() if key in schema]
    if "enum" in schema:
        parts.append(" | ".join(map(str, schema["enum"])))
    return f"  [{', '.join(parts)}]" if parts else ""
