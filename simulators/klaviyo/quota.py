"""Klaviyo-style rate limiting: fixed burst and steady windows per account (or app install) and endpoint class."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumer.klaviyo.ratelimits import EndpointLimit


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of charging a request: allowed, or the seconds to wait; plus the quota headers."""

    allowed: bool
    retry_after_s: int = 0
    limit: EndpointLimit | None = None
    remaining: int = 0
    reset_s: int = 0

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-*`` headers for a non-429 answer (the remaining count and reset of the steady window)."""
        if self.limit is None:
            return []
        lim = self.limit
        return [
            ("ratelimit-limit", f"{lim.steady}, {lim.burst};w={_w(lim.burst_window_s)}, "
                                f"{lim.steady};w={_w(lim.steady_window_s)}"),
            ("ratelimit-remaining", str(self.remaining)),
            ("ratelimit-reset", str(self.reset_s)),
        ]


def _w(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class FixedWindowQuota:
    """Counts requests in fixed windows aligned to the clock; a request over any window's quota is refused."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, str, float], tuple[int, int]] = {}

    def reset(self) -> None:
        self._counts.clear()

    def charge(self, account: str, classes: Sequence[tuple[str, EndpointLimit]]) -> Verdict:
        """Charge one request to every class, or none of them when any window is full."""
        now = self._clock()
        wait = 0.0
        slots: list[tuple[tuple[str, str, float], int, int]] = []
        for name, limit in classes:
            for quota, seconds in ((limit.burst, limit.burst_window_s), (limit.steady, limit.steady_window_s)):
                key = (account, name, seconds)
                index = math.floor(now / seconds)
                current_index, count = self._counts.get(key, (index, 0))
                if current_index != index:
                    count = 0
                if count >= quota:
                    wait = max(wait, (index + 1) * seconds - now)
                slots.append((key, index, count))
        if wait > 0:
            return Verdict(False, retry_after_s=max(1, math.ceil(wait)))
        for key, index, count in slots:
            self._counts[key] = (index, count + 1)
        name, limit = classes[0]
        steady_key = (account, name, limit.steady_window_s)
        steady_index, steady_count = self._counts[steady_key]
        reset = (steady_index + 1) * limit.steady_window_s - now
        return Verdict(True, limit=limit, remaining=max(limit.steady - steady_count, 0), reset_s=math.ceil(reset))
