"""The JSON shapes of docs/protocol.md, made in one place for the REST API and the WebSocket."""

from __future__ import annotations

import json
from typing import Any

from supervisor.hub import Delta
from supervisor.models import DaemonStatus, Event, LogLine
from supervisor.supervisor import Supervisor


def daemon(status: DaemonStatus, supervisor: Supervisor) -> dict[str, Any]:
    config = supervisor.runner(status.name).config
    return {**status.to_dict(), "enabled": config.enabled, "auto_start": config.auto_start}


def event(value: Event, **extra: Any) -> dict[str, Any]:
    return {**value.to_dict(), **extra}


def log_line(line: LogLine, **extra: Any) -> dict[str, Any]:
    return {"at": line.at, "level": line.level, "message": line.message, "fields": line.fields, **extra}


def encode(message: Any) -> str:
    """JSON for anything a daemon or job hands over (a Path in a log field, a datetime in a result)."""
    return json.dumps(message, default=str)


def wire(delta: Delta, supervisor: Supervisor) -> bytes:
    """The WebSocket message for a delta, encoded (JSON, UTF-8) once and shared by every client."""
    if delta.wire is None:
        message: dict[str, Any]
        if delta.kind == "daemon":
            message = {"type": "daemon", "seq": delta.seq, "daemon": daemon(delta.data, supervisor)}
        elif delta.kind == "job":
            message = {"type": "job", "seq": delta.seq, "job": delta.data.to_dict()}
        elif delta.kind == "event":
            message = {"type": "event", "seq": delta.seq, "event": event(delta.data)}
        elif delta.kind == "system":
            message = {"type": "system", "seq": delta.seq, "key": delta.key, "value": delta.data}
        else:
            message = {"type": "log", "daemon": delta.key, "line": log_line(delta.data)}
        delta.wire = encode(message).encode()
    return delta.wire
