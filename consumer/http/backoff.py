"""Capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for retry ``attempt`` 0, 1, 2, ...: uniform in ``[0, min(cap, base * multiplier**attempt)]``.

    "Full jitter" spreads competing clients apart, so retries after a shared failure don't arrive in lockstep.
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0 or self.multiplier < 1:
            raise ValueError("backoff needs base_s >= 0, cap_s >= 0 and multiplier >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay that retry ``attempt`` may draw."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        return min(self.cap_s, self.base_s * self.multiplier**exponent)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A random delay for retry ``attempt`` (full jitter)."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))
