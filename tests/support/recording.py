"""A processor that records what it handled and lets a test await a count, instead of sleeping."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable

from consumer.runtime import Failure, Handled, InboundMessage


class RecordingProcessor:
    """Records (partition, offset) per key; optional random delay and a hook that may raise."""

    def __init__(self, *, max_delay_s: float = 0.0, fail: Callable[[InboundMessage, int], None] | None = None):
        self.by_key: dict[bytes | None, list[int]] = defaultdict(list)
        self.handled: list[InboundMessage] = []
        self.calls: dict[tuple[int, int], int] = defaultdict(int)
        self._max_delay_s = max_delay_s
        self._fail = fail
        self._waiters: list[tuple[Callable[[], bool], asyncio.Event]] = []

    async def __call__(self, message: InboundMessage) -> Handled:
        self.calls[(message.partition, message.offset)] += 1
        self._notify()
        if self._max_delay_s:
            await asyncio.sleep(random.uniform(0, self._max_delay_s))
        if self._fail is not None:
            self._fail(message, self.calls[(message.partition, message.offset)])
        self.by_key[message.key].append(message.offset)
        self.handled.append(message)
        self._notify()
        return Handled(flow="test_flow")

    def _notify(self) -> None:
        for condition, event in self._waiters:
            if condition():
                event.set()

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Return once ``condition()`` holds (checked on every handled record)."""
        if condition():
            return
        event = asyncio.Event()
        self._waiters.append((condition, event))
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            self._waiters.remove((condition, event))


class CollectingSink:
    """A failure sink that keeps what it was given (for runtime tests that need no dead-letter topic)."""

    def __init__(self) -> None:
        self.failed: list[tuple[InboundMessage, Failure]] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: InboundMessage, failure: Failure) -> None:
        self.failed.append((message, failure))
        self.changed.set()
