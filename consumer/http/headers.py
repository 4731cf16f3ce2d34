"""Parsing of ``Retry-After`` and the ``RateLimit-*`` response headers (IETF httpapi-ratelimit-headers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from consumer.http.ratelimit import Window

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")
_POLICY_WINDOW = re.compile(r"\bw\s*=\s*(\d+(?:\.\d+)?)")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date); None when absent/invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN / inf
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a response said about the caller's quota.

    ``policies`` are the windows named in ``RateLimit-Limit`` (``"750, 75;w=1, 750;w=60"``) or
    ``RateLimit-Policy``; ``reset_s`` is seconds until the quota the ``remaining`` count refers to resets.
    """

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None
    policies: tuple[Window, ...] = ()

    @property
    def empty(self) -> bool:
        return self.limit is None and self.remaining is None and self.reset_s is None and not self.policies


def _first_number(value: str | None) -> float | None:
    if value is None:
        return None
    match = _NUMBER.match(value)
    return float(match.group(1)) if match else None


def _policies(value: str | None) -> tuple[Window, ...]:
    if not value:
        return ()
    windows: list[Window] = []
    for item in value.split(","):
        limit = _first_number(item)
        window = _POLICY_WINDOW.search(item)
        if limit is not None and window is not None and float(window.group(1)) > 0 and limit >= 1:
            windows.append(Window(int(limit), float(window.group(1))))
    return tuple(windows)


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitInfo:
    """Read ``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (and ``RateLimit-Policy``) from response headers.

    ``headers`` must look names up case-insensitively (``httpx.Headers`` does).
    """
    limit = _first_number(headers.get("ratelimit-limit"))
    remaining = _first_number(headers.get("ratelimit-remaining"))
    reset = _first_number(headers.get("ratelimit-reset"))
    policies = _policies(headers.get("ratelimit-limit")) or _policies(headers.get("ratelimit-policy"))
    return RateLimitInfo(
        limit=int(limit) if limit is not None else None,
        remaining=int(remaining) if remaining is not None else None,
        reset_s=reset,
        policies=policies,
    )
