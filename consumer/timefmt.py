"""Times people type and times the service writes: one grammar to read them, one formatter to write them.

Reading
    ``parse_time`` is the grammar of every time option of the command line (``dlq ... --since/--until``,
    ``errors --since/--until``, ``poll-profiles --since``):

    * ISO 8601, with a zone (``+02:00``, ``Z``) or without one (then UTC); a date alone is midnight UTC;
    * a span before now: a number (decimals allowed) and a unit, ``s``, ``m``, ``h``, ``d`` or ``w`` (any case,
      blanks allowed around): ``90s``, ``15m``, ``2h``, ``1.5h``, ``7d``, ``1w``.

    ``parse_iso`` reads a time the service stored (a dead-letter header, an error-log record): ISO 8601 only,
    and None instead of an error.

Writing
    ``format_time``: ISO 8601 in UTC, by default with milliseconds and ``Z`` (dead-letter headers, the error log,
    the ``dlq`` output and replay progress). The poller's watermark and event ids (``timespec="auto"``,
    ``zulu=False``) and the JSON logs (``zulu=False``) keep the exact text they always had.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

Timespec = Literal["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def to_utc(moment: datetime) -> datetime:
    """``moment`` as an aware time in UTC (a naive time is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A time typed on the command line (see the module doc), in UTC; ``now`` anchors a relative one."""
    relative = _RELATIVE.match(text)
    if relative:
        seconds = float(relative.group(1)) * _UNITS[relative.group(2).lower()]
        return to_utc(now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time nor a relative one like 2h, 30m or 7d") from None
    return to_utc(moment)


def parse_iso(text: str | None) -> datetime | None:
    """A stored ISO 8601 time, in UTC (naive: UTC); None when there is none or it is not ISO 8601."""
    if not text:
        return None
    try:
        return to_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def format_time(moment: datetime, *, timespec: Timespec = "milliseconds", zulu: bool = True) -> str:
    """``moment`` in UTC as ISO 8601 (``2026-05-01T10:00:00.000Z``); ``zulu=False`` writes ``+00:00``."""
    text = to_utc(moment).isoformat(timespec=timespec)
    return text.removesuffix("+00:00") + "Z" if zulu else text
