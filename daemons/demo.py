"""The demo banner: each demo companion (Stash, qBittorrent) says its part of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.app import Warden


def announce(warden: Warden, part: str, sentence: str, **fields: Any) -> None:
    """Set `part` of the "demo" banner to `sentence` (parts read in the order first set); `fields` ride along."""
    banner = dict(warden.hub.system.get("demo") or {})
    parts = {**banner.get("parts", {}), part: sentence}
    banner.update(fields, enabled=True, parts=parts, message=" ".join(parts.values()))
    warden.hub.set_system("demo", banner)
