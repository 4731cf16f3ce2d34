"""No silent staleness: a later change of a record whose earlier change waits on the dead-letter topic is applied,
and the error log says so (``EARLIER_CHANGE_DEAD_LETTERED``, a warning for the later change).

``WaitingLetters`` remembers, per source topic, the keys whose record this process dead-lettered (and where that
record was); ``warn_of_waiting_letters`` wraps the service's processor: when a later record of such a key
succeeds, the warning is written for it, once, and the key is forgotten. A replayed record (it carries
``ipaas_klaviyo-replay-count``) that succeeds is the waiting change itself, or an older one: it forgets the key
without a warning.

Best effort, by design: the keys live in memory, at most ``max_keys`` per topic (the oldest are forgotten
first), and only for the partitions this process consumes. After a restart, or for a key whose letter another
instance wrote, there is no warning; ``ipaas-klaviyo dlq list --key`` always finds the letters, and
``dlq replay --skip-superseded`` decides from Kafka itself (``consumer.failures.superseded``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from consumer.catalog import EARLIER_CHANGE_DEAD_LETTERED, CatalogError
from consumer.failures.headers import REPLAY_COUNT
from consumer.runtime.messages import Failure, Handled, InboundMessage, Processor

log = logging.getLogger("consumer.failures.waiting")

DEFAULT_MAX_KEYS = 10_000

Report = Callable[[CatalogError, Any, InboundMessage], Awaitable[None]]
"""Where the warning goes (``ErrorLog.report``: the warning, the transfer, the record it is about)."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Where the dead-lettered record of a key was, and why it failed."""

    partition: int
    offset: int
    code: str


class WaitingLetters:
    """The keys of each source topic with a dead letter this process wrote (bounded, in memory)."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._topics: dict[str, OrderedDict[bytes, Waiting]] = {}

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._topics.values())

    def dead_lettered(self, message: InboundMessage, failure: Failure) -> None:
        """The record was dead-lettered: a later change of its key is to be warned of."""
        if message.key is None:
            return
        keys = self._topics.setdefault(message.topic, OrderedDict())
        keys.pop(message.key, None)
        keys[message.key] = Waiting(message.partition, message.offset, failure.code)
        while len(keys) > self._max_keys:
            keys.popitem(last=False)

    def succeeded(self, message: InboundMessage) -> Waiting | None:
        """A record succeeded: the letter of its key it is a later change of (forgotten now), else None."""
        keys = self._topics.get(message.topic)
        if not keys or message.key is None:
            return None
        waiting = keys.get(message.key)
        if waiting is None or (message.partition == waiting.partition and message.offset <= waiting.offset):
            return None
        del keys[message.key]
        if any(name == REPLAY_COUNT for name, _ in message.headers):
            return None  # a dead letter sent again: the waiting change itself, or an older one
        return waiting


def warning(message: InboundMessage, waiting: Waiting) -> CatalogError:
    """The error-log warning for ``message``, a later change of a key whose earlier change waits."""
    return CatalogError(EARLIER_CHANGE_DEAD_LETTERED, (
        f"the change at partition {waiting.partition}, offset {waiting.offset} of {message.topic} failed with "
        f"{waiting.code} and waits on its dead-letter topic"))


def warn_of_waiting_letters(processor: Processor, letters: WaitingLetters, report: Report) -> Processor:
    """``processor``, writing the warning through ``report`` when a record succeeds whose key has a letter waiting.

    A warning that cannot be written is logged, not raised: the record was delivered."""

    async def process(message: InboundMessage) -> Handled:
        handled = await processor(message)
        if handled.outcome != "succeeded" or not letters:
            return handled
        waiting = letters.succeeded(message)
        if waiting is not None:
            try:
                await report(warning(message, waiting), handled.transfer, message)
            except Exception as exc:
                log.warning("could not write the warning of a waiting dead letter to the error log",
                            extra={"topic": message.topic, "offset": message.offset, "reason": type(exc).__name__})
        return handled

    return process
