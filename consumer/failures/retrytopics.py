"""Retries over hours: a retryable failure that used its in-process attempts waits in its source's retry topics
(``<topic>-retry-0``, ``-retry-1`` ...: Spring for Apache Kafka's naming, one topic per delay of
``runtime.retry_topic_delays_s``) before it is dead-lettered.

A retry record is the original record (key, value, headers) plus the failure context of a dead letter
(``consumer.failures.headers``: the history of every failure so far) and Spring's retry headers:
``retry_topic-attempts`` (the delivery it is, the original being 1), ``retry_topic-backoff-timestamp`` (ms since
the epoch before which it is not handled) and ``retry_topic-original-timestamp``. Values are UTF-8 decimal strings,
as every header of ours; integers Spring wrote (big-endian bytes) are read too. The service consumes the retry
topics with its sources; the runtime parks a record until its backoff timestamp and pauses its partition meanwhile
(``StreamRuntime(due_at=...)``), and its offset is committed only once it is handled: a restart loses nothing.

Per-key order: while an older change of a key waits in a retry topic, newer changes of the key go on. A retried
record whose key had a newer change succeed since is skipped (``RetryingKeys``), so it never overwrites newer data;
best effort, like ``consumer.failures.waiting``: the keys live in memory, so after a restart a retried record is
handled even if a newer change of its key succeeded before.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from consumer.failures.headers import ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC, dead_letter_headers
from consumer.observability import metrics
from consumer.runtime.messages import Failure, Handled, InboundMessage, Message, Processor

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = logging.getLogger("consumer.failures.retrytopics")

ATTEMPTS = "retry_topic-attempts"
BACKOFF_TIMESTAMP = "retry_topic-backoff-timestamp"
ORIGINAL_TIMESTAMP = "retry_topic-original-timestamp"
RETRY_HEADERS = frozenset({ATTEMPTS, BACKOFF_TIMESTAMP, ORIGINAL_TIMESTAMP})

RETRY_SCHEDULED = "retry_scheduled"
"""The runtime's outcome of a record handed on to a retry topic."""

Hops = Callable[[str], tuple[tuple[str, float], ...]]
"""A topic's retry topics (Kafka names) with their delays in seconds (``RoutingTable.retry_hops``)."""


def header_number(headers: Sequence[tuple[str, bytes]], name: str) -> int | None:
    """The integer value of the last header ``name``: a decimal string, or big-endian bytes as Spring writes it."""
    value = next((value for key, value in reversed(headers) if key == name), None)
    if not value:
        return None
    try:
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return int.from_bytes(value, "big", signed=True) if len(value) <= 8 else None


def hops_done(message: InboundMessage) -> int:
    """How many retry topics the record went through (``retry_topic-attempts`` counts the original delivery)."""
    attempts = header_number(message.headers, ATTEMPTS)
    return max(0, attempts - 1) if attempts is not None else 0


def original_position(message: InboundMessage) -> Message:
    """The record as it was on its source topic (topic, partition, offset from the failure context)."""
    context = {name: value for name, value in message.headers if name in (ORIGINAL_TOPIC, ORIGINAL_PARTITION,
                                                                          ORIGINAL_OFFSET)}
    partition = header_number(list(context.items()), ORIGINAL_PARTITION)
    offset = header_number(list(context.items()), ORIGINAL_OFFSET)
    topic = context.get(ORIGINAL_TOPIC)
    return Message(
        topic=topic.decode("utf-8", "replace") if topic else message.topic,
        partition=message.partition if partition is None else partition,
        offset=message.offset if offset is None else offset,
        key=message.key, value=message.value, headers=message.headers, timestamp=message.timestamp,
        timestamp_type=message.timestamp_type,
    )


def due_at(message: InboundMessage) -> float | None:
    """Seconds since the epoch before which a retry record is not to be handled (None: now)."""
    backoff = header_number(message.headers, BACKOFF_TIMESTAMP)
    return backoff / 1000 if backoff is not None else None


class RetryTopics:
    """Hands a failed record on to its next retry topic, until the broker acknowledged it."""

    def __init__(self, producer: AIOKafkaProducer, group_id: str, hops: Hops,
                 clock: Callable[[], float] = time.time) -> None:
        self._producer = producer
        self._group_id = group_id
        self._hops = hops
        self._clock = clock

    def next_hop(self, message: InboundMessage, failure: Failure) -> tuple[str, float] | None:
        """The retry topic and delay a failure goes to next; None when it is the record's own (not retryable), a
        destination's (those wait in-process), or the last delay is spent: then it is dead-lettered."""
        if not failure.retryable or failure.infrastructure:
            return None
        hops = self._hops(message.topic)
        done = hops_done(message)
        return hops[done] if done < len(hops) else None

    async def publish(self, message: InboundMessage, failure: Failure, hop: tuple[str, float]) -> None:
        """Write the record to ``hop``'s topic (its partition, so per-key order holds) with its failure history."""
        topic, delay_s = hop
        done = hops_done(message)
        original = header_number(message.headers, ORIGINAL_TIMESTAMP)
        headers = [(name, value) for name, value in dead_letter_headers(message, failure, self._group_id)
                   if name not in RETRY_HEADERS]
        headers += [
            (ATTEMPTS, str(done + 2).encode()),
            (BACKOFF_TIMESTAMP, str(int((self._clock() + delay_s) * 1000)).encode()),
            (ORIGINAL_TIMESTAMP, str(message.timestamp if original is None else original).encode()),
        ]
        partitions = await self._producer.partitions_for(topic)
        partition = message.partition if partitions and message.partition in partitions else None
        await self._producer.send_and_wait(topic, value=message.value, key=message.key, partition=partition,
                                           headers=headers)
        metrics.RETRIES.labels(failure.flow, failure.code).inc()
        log.info("record waits in a retry topic", extra={"topic": topic, "delay_s": delay_s, "code": failure.code,
                                                         "attempt": done + 2})


class RetryingKeys:
    """Per source topic, the keys with a record sent to a retry topic, and the newest change of each that succeeded
    since (bounded, in memory: at most ``max_keys`` per topic, the oldest forgotten first)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._max_keys = max_keys
        self._topics: dict[str, OrderedDict[bytes, tuple[int, int] | None]] = {}

    def scheduled(self, original: InboundMessage) -> None:
        """A record of ``original.topic`` (its source) went to a retry topic."""
        if original.key is None:
            return
        keys = self._topics.setdefault(original.topic, OrderedDict())
        keys.setdefault(original.key, None)
        keys.move_to_end(original.key)
        while len(keys) > self._max_keys:
            keys.popitem(last=False)

    def succeeded(self, original: InboundMessage) -> None:
        """A change (at its source position) succeeded: the newest of its key, should an older one be retried."""
        keys = self._topics.get(original.topic)
        if not keys or original.key is None or original.key not in keys:
            return
        newest = keys[original.key]
        if newest is None or newest[0] != original.partition or newest[1] < original.offset:
            keys[original.key] = (original.partition, original.offset)

    def newer(self, original: InboundMessage) -> tuple[int, int] | None:
        """Where a newer change of a retried record's key succeeded, else None."""
        keys = self._topics.get(original.topic)
        newest = keys.get(original.key) if keys and original.key is not None else None
        if newest is None or newest[0] != original.partition or newest[1] <= original.offset:
            return None
        return newest


def skip_superseded_retries(processor: Processor, keys: RetryingKeys, is_retry: Callable[[str], bool]) -> Processor:
    """``processor``, skipping a retry record whose key had a newer change succeed since (it would overwrite newer
    data), and noting every success in ``keys`` at its source position (a newer change may succeed from a retry
    topic of a shorter delay before an older one's longer delay is due)."""

    async def process(message: InboundMessage) -> Handled:
        original = original_position(message) if is_retry(message.topic) else message
        if original is not message:
            newer = keys.newer(original)
            if newer is not None:
                metrics.RECORDS_SKIPPED.labels(message.topic, "superseded").inc()
                log.info("retried record skipped: a newer change of its key succeeded", extra={
                    "topic": original.topic, "partition": original.partition, "offset": original.offset,
                    "newer_offset": newer[1]})
                return Handled(outcome="skipped")
        handled = await processor(message)
        if handled.outcome == "succeeded":
            keys.succeeded(original)
        return handled

    return process
