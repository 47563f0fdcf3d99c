"""Time as Stash writes and reads it.

Stash stores library timestamps with whole seconds as RFC 3339 text in the server's UTC
offset, and renders them so; job times keep their fraction (Go's RFC3339Nano drops trailing
zeros). A timestamp filter's value is compared with that stored text as text, not as an
instant (its SQL binds the string as given), except Stash's relative form "<4h" / ">30m".
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


def is_relative(text: str) -> bool:
    return _RELATIVE.match(text.strip()) is not None


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


def text_position(text: str, zone: tzinfo) -> float:
    """Where `text` falls among the stored times, compared as text the way Stash's SQL does.

    A whole second t when the text is exactly how t is stored, else halfway between the two
    stored seconds it sorts between: numeric comparisons with it then agree with Stash's
    text comparisons (a UTC "Z" value against +02:00 times is two hours off, as in Stash).
    """
    low, high = 0, 253_402_300_799  # 9999-12-31T23:59:59Z: where RFC 3339 text stays in time order
    if text < format_time(low, zone):
        return low - 0.5
    while low < high:  # the last second whose stored text sorts at or before `text`
        middle = (low + high + 1) // 2
        if format_time(middle, zone) <= text:
            low = middle
        else:
            high = middle - 1
    return float(low) if format_time(low, zone) == text else low + 0.5


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
