"""Capped exponential backoff with full jitter, and the waits a client derives from it and the server's hints."""

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

    def server_error_delay(self, attempt: int, rng: random.Random, hinted: float | None, cap_s: float) -> float:
        """The delay before retrying a 5xx: the backoff delay, stretched to the server's ``Retry-After`` hint
        (``hinted``, capped at ``cap_s``) when it asks for longer."""
        delay = self.delay(attempt, rng)
        if hinted is not None:
            delay = max(delay, min(hinted, cap_s))
        return delay

    def throttle_wait(self, attempt: int, rng: random.Random, hinted: float | None, cap_s: float) -> float:
        """How long to wait after a 429: the server's hint, else half to all of the backoff ceiling (at least one
        second), capped at ``cap_s``."""
        wait = hinted
        if wait is None:
            wait = max(self.ceiling(attempt), 1.0) * rng.uniform(0.5, 1.0)
        return min(max(wait, 0.0), cap_s)
