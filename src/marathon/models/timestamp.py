"""Timestamps as Marathon writes them.

Every timestamp Marathon emits is UTC ISO-8601 with exactly three fractional
digits and a literal `Z` (`2015-09-30T09:09:17.614Z`); input is accepted in
any ISO-8601 offset form and compared at millisecond precision.  Internally a
timestamp is an `int` of milliseconds since the epoch; versions are kept as
their canonical string so they can be used as keys and compared as text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch -> `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{ms % 1000:03d}Z"


def parse_ms(text: str) -> int:
    """An ISO-8601 timestamp in any offset form -> milliseconds since the epoch.

    Raises ValueError for anything else.  Sub-millisecond digits are truncated.
    """
    m = _ISO.match(text.strip())
    if not m:
        raise ValueError(f"Invalid timestamp {text!r}")
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    frac = (m.group(7) or "0")[:3].ljust(3, "0")
    tz = m.group(8)
    offset = timedelta(0)
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    dt = datetime(year, month, day, hour, minute, second, tzinfo=UTC) - offset
    return (dt - _EPOCH) // timedelta(milliseconds=1) + int(frac)


def canonical(text: str) -> str:
    """Any accepted timestamp form -> Marathon's canonical rendering."""
    return format_ms(parse_ms(text))


def is_timestamp(text: str) -> bool:
    try:
        parse_ms(text)
    except ValueError:
        return False
    return True
