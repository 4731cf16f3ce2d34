"""A stand-in for ``asyncio.sleep`` in the API clients' backoff: it records each delay and only yields."""

from __future__ import annotations

import asyncio


class RecordedSleeps:
    """Pass as ``sleep=`` to a client (or a ``LimiterRegistry`` with ``clock=sleeps.clock``).

    Each call records its delay in ``delays`` and moves the virtual ``clock`` on by it, then yields to the loop
    (``asyncio.sleep(0)``) instead of waiting: retries happen at once, and a test asserts on the delays the
    backoff chose rather than on the time that passed.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 0.0

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += max(delay, 0.0)
        await asyncio.sleep(0)

    def clock(self) -> float:
        """Virtual seconds: the sum of the delays slept so far."""
        return self.now
