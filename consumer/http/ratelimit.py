"""Client-side rate limiting: a sliding-window limiter with any number of windows (burst and steady).

A limiter admits at most ``limit`` acquisitions in *any* interval of ``seconds`` (plus a safety margin) for each
of its windows. That is stricter than the fixed windows most servers count in, so a client that acquires before
every request is never the reason for a 429, whatever the server's window alignment. The limiter also adapts:
to the quota a server advertises (``observe``), and to 429s it did not predict (``throttled``: wait out the
``Retry-After`` and lower the burst, i.e. the shortest window, multiplicatively; each success raises it again
additively), which covers timing jitter between client and server and bursts of other clients sharing the quota.
Longer (steady) windows adapt through the advertised ``remaining``/``reset`` instead, so one unlucky 429 does not
cost a minute of quota.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``limit`` requests per ``seconds``."""

    limit: int
    seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.seconds <= 0:
            raise ValueError(f"a window needs limit >= 1 and seconds > 0, got {self.limit}/{self.seconds}s")


def _same(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


class SlidingWindowLimiter:
    """FIFO async rate limiter over one or more sliding windows.

    ``acquire()`` waits until every window has room, then records the acquisition. Waiters are served in
    arrival order. ``clock`` and ``sleep`` are injectable for deterministic tests.
    """

    def __init__(
        self,
        windows: Iterable[Window] = (),
        *,
        margin_s: float = 0.0,
        decrease: float = 0.75,
        recovery: float = 0.005,
        min_scale: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if margin_s < 0:
            raise ValueError("margin_s must be >= 0")
        if not (0 < decrease <= 1 and recovery >= 0 and 0 < min_scale <= 1):
            raise ValueError("need 0 < decrease <= 1, recovery >= 0 and 0 < min_scale <= 1")
        self._decrease = decrease
        self._recovery = recovery
        self._min_scale = min_scale
        self._scale = 1.0
        self._share = 1.0
        self._configured: dict[float, int] = {}
        for window in windows:
            self._configured[window.seconds] = min(window.limit, self._configured.get(window.seconds, window.limit))
        self._advertised: dict[float, int] = {}
        self._margin = margin_s
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._blocked_until = float("-inf")
        self._windows: tuple[Window, ...] = ()
        self._log: deque[float] = deque(maxlen=1)
        self._rebuild()

    # --- configuration ---------------------------------------------------------------------------------------
    @property
    def windows(self) -> tuple[Window, ...]:
        """The effective windows: configured, lowered (or joined) by what the server advertised; the shortest one
        times ``scale``."""
        return self._windows

    @property
    def scale(self) -> float:
        """The share of the quota in use after unpredicted 429s (1.0 = all of it)."""
        return self._scale

    @property
    def share(self) -> float:
        """The fraction of the account's quota this process may spend (its instances share the account)."""
        return self._share

    def set_share(self, fraction: float) -> None:
        """Spend ``fraction`` (0 < fraction <= 1) of every window: this process's part of a shared quota."""
        if not 0 < fraction <= 1:
            raise ValueError(f"a quota share is in (0, 1], got {fraction}")
        if fraction != self._share:
            self._share = fraction
            self._rebuild()

    def _rebuild(self) -> None:
        seconds = sorted(set(self._configured) | set(self._advertised))
        windows = []
        for s in seconds:
            limit = min(v for v in (self._configured.get(s), self._advertised.get(s)) if v is not None)
            limit = max(1, int(limit * self._share))
            if s == seconds[0]:
                limit = max(1, int(limit * self._scale))
            windows.append(Window(limit, s))
        self._windows = tuple(windows)
        size = max((w.limit for w in windows), default=1)
        if self._log.maxlen != size:
            self._log = deque(self._log, maxlen=size)

    def observe(
        self,
        *,
        remaining: int | None = None,
        reset_s: float | None = None,
        policies: Sequence[Window] = (),
    ) -> None:
        """Adapt to what a response said: advertised windows lower ours; ``remaining == 0`` waits out the reset."""
        changed = False
        for policy in policies:
            key = next((s for s in self._configured if _same(s, policy.seconds)), policy.seconds)
            if self._advertised.get(key) != policy.limit:
                self._advertised[key] = policy.limit
                changed = True
        if changed:
            self._rebuild()
        if remaining is not None and remaining <= 0 and reset_s is not None and reset_s > 0:
            self.block_for(reset_s)

    def throttled(self, retry_after_s: float) -> None:
        """The server refused a request: admit nothing for ``retry_after_s`` and lower the rate (once per block)."""
        if self._clock() >= self._blocked_until and self._windows and self._scale > self._min_scale:
            self._scale = max(self._min_scale, self._scale * self._decrease)
            self._rebuild()
        self.block_for(retry_after_s)

    def succeeded(self) -> None:
        """A request went through: win back a little of the rate lost to 429s."""
        if self._scale < 1.0:
            self._scale = min(1.0, self._scale + self._recovery)
            self._rebuild()

    def block_for(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` from now (a server's ``Retry-After``); never shortens a running block."""
        if seconds > 0:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    # --- acquisition -----------------------------------------------------------------------------------------
    def delay(self) -> float:
        """Seconds until an acquisition would be admitted now (0 when it would be admitted at once)."""
        return self._delay(self._clock())

    def _delay(self, now: float) -> float:
        wait = self._blocked_until - now
        log = self._log
        for window in self._windows:
            if len(log) >= window.limit:
                wait = max(wait, log[-window.limit] + window.seconds + self._margin - now)
        return max(wait, 0.0)

    def try_acquire(self) -> bool:
        """Take room now if every window has it and nobody waits for it; False (nothing taken) otherwise."""
        now = self._clock()
        if self._lock.locked() or self._delay(now) > 0:
            return False
        if self._windows:
            self._log.append(now)
        return True

    async def acquire(self) -> float:
        """Wait for room in every window, take it, and return the seconds waited."""
        if self.try_acquire():
            return 0.0
        start = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._delay(now)
                if wait <= 0:
                    if self._windows:
                        self._log.append(now)
                    return now - start
                await self._sleep(wait)


class LimiterRegistry:
    """Limiters by key (e.g. account + endpoint class), created on first use and shared afterwards."""

    def __init__(
        self, *, margin_s: float = 0.0, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._margin = margin_s
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[Hashable, SlidingWindowLimiter] = {}
        self._share = 1.0

    def get(self, key: Hashable, windows: Iterable[Window] = ()) -> SlidingWindowLimiter:
        """The limiter for ``key``; ``windows`` configure it when it is created and are ignored afterwards."""
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = SlidingWindowLimiter(windows, margin_s=self._margin, clock=self._clock, sleep=self._sleep)
            limiter.set_share(self._share)
            self._limiters[key] = limiter
        return limiter

    def set_share(self, fraction: float) -> None:
        """Every limiter, now and later, spends ``fraction`` of its windows (see ``SlidingWindowLimiter``)."""
        self._share = fraction
        for limiter in self._limiters.values():
            limiter.set_share(fraction)

    def __len__(self) -> int:
        return len(self._limiters)
