"""How fast a batcher spends an endpoint's quota (a token bucket) and how fast records arrive (a decaying rate);
shared by the event batcher and the profile importer."""

from __future__ import annotations

import math

from consumer.klaviyo.client import LIMITER_MARGIN_S
from consumer.klaviyo.ratelimits import EndpointLimit

__all__ = ["Pace", "Rate"]


class Pace:
    """A token bucket at an endpoint's steady rate, as deep as its burst: how fast the batcher spends a quota.
    Unpaced (client-side limits off) it always holds the burst."""

    def __init__(self, limit: EndpointLimit, *, paced: bool, now: float) -> None:
        self.capacity, self.rate = self._of(limit)
        self.paced = paced
        self._tokens = self.capacity
        self._at = now

    @staticmethod
    def _of(limit: EndpointLimit) -> tuple[float, float]:
        return float(limit.burst), limit.steady / (limit.steady_window_s + LIMITER_MARGIN_S)

    def retune(self, limit: EndpointLimit, now: float) -> None:
        """Follow the quota this instance may spend (its share of the account's changes with rebalances)."""
        capacity, rate = self._of(limit)
        if (capacity, rate) != (self.capacity, self.rate):
            self._tokens = min(self.tokens(now), capacity)
            self.capacity, self.rate = capacity, rate

    def tokens(self, now: float) -> float:
        if self.paced:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
        return self._tokens

    def spend(self, count: float, now: float) -> None:
        if self.paced:
            self._tokens = self.tokens(now) - count

    def wait_for(self, count: float, now: float) -> float:
        """Seconds until ``count`` tokens are there."""
        return max(0.0, (count - self.tokens(now)) / self.rate) if self.paced else 0.0


class Rate:
    """Arrivals (events, records) per second lately: a count that decays with time constant ``tau_s``."""

    def __init__(self, now: float, tau_s: float = 1.0) -> None:
        self._tau = tau_s
        self._value = 0.0
        self._at = now

    def add(self, count: int, now: float) -> None:
        self._value = self.per_second(now) + count / self._tau
        self._at = now

    def per_second(self, now: float) -> float:
        return self._value * math.exp(-(now - self._at) / self._tau)
