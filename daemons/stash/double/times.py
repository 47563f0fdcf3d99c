"""Time as Stash writes and reads it.

Stash stores library timestamps with whole seconds and renders them in RFC 3339 with the
server's UTC offset; job times keep their fraction (Go's RFC3339Nano drops trailing zeros).
Filters accept RFC 3339 with Z or an offset, and Stash's relative form "<4h" / ">30m".
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_RELATIVE = re.compile(r"^([<>])(\d+)([smhdwy])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def format_time(instant: float, zone: tzinfo) -> str:
    moment = datetime.fromtimestamp(instant, zone)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    if moment.microsecond:
        whole, _, rest = text.partition(".")
        fraction, offset = rest[:6].rstrip("0"), rest[6:]
        text = f"{whole}.{fraction}{offset}"
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def parse_timestamp(text: str, *, now: float, zone: tzinfo) -> int:
    """The whole second `text` names. A value without an offset is in the server's zone."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        sign, amount, unit = relative.groups()
        delta = int(amount) * _UNIT_SECONDS[unit]
        return math.floor(now - delta if sign == "<" else now + delta)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"invalid timestamp: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return math.floor(moment.timestamp())


def offset_zone(offset: timedelta | str) -> tzinfo:
    """A fixed zone from a timedelta or a "+02:00" / "-05:30" / "Z" string."""
    if isinstance(offset, timedelta):
        return UTC if not offset else timezone(offset)
    if offset in ("Z", "+00:00", "-00:00"):
        return UTC
    match = re.fullmatch(r"([+-])(\d\d):(\d\d)", offset)
    if match is None:
        raise ValueError(f"invalid UTC offset: {offset!r}")
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
