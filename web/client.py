"""The CLI's client of a running Warden: the REST API for commands, the WebSocket for live views."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import aiohttp
import websockets

from supervisor.config import WardenSettings
from web.auth import load_access


class ClientError(Exception):
    pass


@dataclass(frozen=True)
class Client:
    url: str  # the page's URL, ending with "/"
    token: str

    @classmethod
    def for_settings(cls, settings: WardenSettings) -> Client:
        """Reach the Warden these settings describe (its token is in the settings or the data folder)."""
        server = settings.server
        host = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
        access, _ = load_access(settings)
        return cls(f"http://{host}:{server.port}{server.base_path}/", access.token)

    async def call(self, method: str, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, self.url + path, headers=headers) as reply,
            ):
                body = await reply.json(content_type=None)
        except aiohttp.ClientConnectionError as error:
            raise ClientError(f"cannot reach Warden at {self.url}: {error}") from None
        if reply.status >= 400:
            raise ClientError(f"{reply.status}: {body.get('error') if isinstance(body, dict) else body}")
        return body

    async def live(self, log_daemons: Sequence[str] = ()) -> AsyncIterator[dict[str, Any]]:
        """The WebSocket's messages, from hello and snapshot on."""
        ws_url = "ws" + self.url.removeprefix("http") + "ws"
        try:
            async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {self.token}"}) as ws:
                if log_daemons:
                    await ws.send(json.dumps({"type": "subscribe_logs", "daemons": list(log_daemons)}))
                    # The pong comes after the server took the subscription: from then on no line is missed.
                    await ws.send(json.dumps({"type": "ping"}))
                async for message in ws:
                    yield json.loads(message)
        except (OSError, websockets.InvalidHandshake) as error:
            raise ClientError(f"cannot reach Warden at {ws_url}: {error}") from None


def status_table(daemons: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [("DAEMON", "STATE", "UPTIME", "RESTARTS", "STATUS")]
    for d in daemons:
        uptime = _duration(now - d["started_at"]) if d.get("started_at") else "-"
        text = d.get("message") or ""
        if d.get("problem"):
            text = f"! {text}"
        if d.get("sleeping_until"):
            text += f" (sleeping {_duration(d['sleeping_until'] - now)})"
        if d.get("last_error") and d["state"] in ("backoff", "fatal"):
            text = f"{text} [{d['last_error']}]".strip()
        rows.append((d["name"], d["state"], uptime, str(d["restarts"]), text))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4] for row in rows
    )


def format_log(daemon: str, line: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(line["at"]).strftime("%H:%M:%S")
    fields = " ".join(f"{k}={v}" for k, v in line.get("fields", {}).items() if k != "traceback")
    return f"{when} {daemon} {line['level'].upper():7} {line['message']} {fields}".rstrip()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


async def watch(client: Client, out: TextIO = sys.stdout) -> None:
    """Redraw the status table on every change until interrupted."""
    daemons: dict[str, dict[str, Any]] = {}
    async for message in client.live():
        if message["type"] == "snapshot":
            daemons = {d["name"]: d for d in message["daemons"]}
        elif message["type"] == "daemon":
            daemons[message["daemon"]["name"]] = message["daemon"]
        else:
            continue
        clear = "\x1b[H\x1b[2J" if out.isatty() else ""
        out.write(f"{clear}{status_table(list(daemons.values()))}\n\n")
        out.flush()


async def follow_logs(client: Client, name: str, out: TextIO = sys.stdout) -> None:
    async for message in client.live([name]):
        if message["type"] == "pong":
            out.write(f"following {name}'s log (Ctrl-C to stop)\n")
            out.flush()
        elif message["type"] == "error":
            raise ClientError(message["message"])
        elif message["type"] == "log":
            out.write(format_log(message["daemon"], message["line"]) + "\n")
            out.flush()
        elif message["type"] == "gap":
            out.write(f"... {message['dropped']} lines skipped (too fast to show) ...\n")
