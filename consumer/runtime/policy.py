"""Retry policy: how often and how long to retry a failed record before dead-lettering it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from consumer.runtime.messages import Failure
from consumer.settings import RuntimeSettings

RETRY_AFTER_CEILING_S = 600.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; a ``Retry-After`` carried by the failure wins."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    @classmethod
    def from_settings(cls, limits: RuntimeSettings) -> RetryPolicy:
        """The default policy of the ``runtime.retry_*`` settings (a source may declare its own)."""
        return cls(attempts=limits.retry_attempts, base_delay_s=limits.retry_base_delay_s,
                   max_delay_s=limits.retry_max_delay_s)

    def delay(self, attempt: int, retry_after: float | None = None, cap: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        limit = self.max_delay_s if cap is None else cap
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, RETRY_AFTER_CEILING_S)
        ceiling = min(limit, self.base_delay_s * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)

    def retry_delay(self, failure: Failure, attempts: int) -> float | None:
        """The one retry decision, shared by the runtime and replay: seconds until the next attempt after
        ``attempts`` failed ones, or None when the record is to be dead-lettered (not retryable, or no attempts
        left). Failures that blame a destination never get here: they spend no attempts."""
        if not failure.retryable or attempts >= self.attempts:
            return None
        return self.delay(attempts, failure.retry_after)
