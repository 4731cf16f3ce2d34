"""Reading topics (or some of their partitions) to the end offsets captured on entry: a read that terminates
while the service keeps writing. Group-less and ``read_committed``; knows nothing of what the records mean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.kafka import connection_options
from consumer.settings import KafkaSettings

T_contra = TypeVar("T_contra", contravariant=True)


class Selection(Protocol[T_contra]):
    """What a read keeps: records at or after ``since`` (by record time; None: from the beginning) that match."""

    @property
    def since(self) -> datetime | None: ...

    def matches(self, item: T_contra, /) -> bool: ...


class TopicScan:
    """Reads topics from a start offset to the end offsets captured on entry (so it terminates), group-less.

    The start of a partition is the latest of: its beginning, the first offset at or after ``since`` (by record
    time), and ``start`` (e.g. a replay's progress). ``only`` restricts the read to some partitions and ``stop``
    lowers end offsets (e.g. to read one record). Reads are ``read_committed``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        *,
        since: datetime | None = None,
        start: Mapping[TopicPartition, int] | None = None,
        stop: Mapping[TopicPartition, int] | None = None,
        only: Iterable[TopicPartition] | None = None,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self._kafka = kafka
        self._topics = list(dict.fromkeys(topics))
        self._since = since
        self._start = dict(start or {})
        self._stop = dict(stop or {})
        self._only = None if only is None else set(only)
        self._idle_timeout_s = idle_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._entered = False
        self.bounds: dict[TopicPartition, tuple[int, int]] = {}
        """Per partition: (first offset to read, end offset captured on entry)."""

    @property
    def total(self) -> int:
        """Offsets in range (records, plus transaction markers and compacted gaps)."""
        return sum(max(0, end - begin) for begin, end in self.bounds.values())

    async def __aenter__(self) -> TopicScan:
        tps = await partitions(self._kafka, self._topics)
        if self._only is not None:
            tps = [tp for tp in tps if tp in self._only]
        if not tps:  # nothing to read (e.g. a partition the topic does not have): no consumer to start and stop
            self._entered = True
            return self
        consumer = AIOKafkaConsumer(
            **connection_options(self._kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
        self._entered = True
        try:
            consumer.assign(tps)
            beginning = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            since: dict[TopicPartition, int] = {}
            if self._since is not None:
                found = await consumer.offsets_for_times({tp: _ms(self._since) for tp in tps})
                since = {tp: (meta.offset if meta is not None else end[tp]) for tp, meta in found.items()}
            for tp in tps:
                last = min(end[tp], self._stop.get(tp, end[tp]))
                first = max(beginning[tp], since.get(tp, 0), self._start.get(tp, 0))
                self.bounds[tp] = (first, last)
                if first < last:
                    consumer.seek(tp, first)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def records(self) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
        """Every record in range, in offset order per partition."""
        assert self._entered, "use TopicScan as an async context manager"
        pending = {tp for tp, (first, last) in self.bounds.items() if first < last}
        consumer = self._consumer
        if consumer is None:
            return
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            if any(batch.values()):
                idle_since = loop.time()
            for tp, records in batch.items():
                last = self.bounds[tp][1]
                for record in records:
                    if record.offset < last:
                        yield record
            for tp in list(pending):
                if await consumer.position(tp) >= self.bounds[tp][1]:
                    pending.discard(tp)
                    consumer.pause(tp)
            if pending and not any(batch.values()) and loop.time() - idle_since > self._idle_timeout_s:
                raise TimeoutError(f"reading {sorted({tp.topic for tp in pending})} stalled: no record for "
                                   f"{self._idle_timeout_s:.0f}s before the end offsets")


async def partitions(kafka: KafkaSettings, topics: Sequence[str], wait_s: float = 5.0) -> list[TopicPartition]:
    """The partitions of ``topics``; waits up to ``wait_s`` for a topic just created to have its leaders."""
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await admin.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        while True:
            described = await admin.describe_topics(list(topics))
            problems = {topic["topic"]: topic["error_code"] for topic in described
                        if topic["error_code"] != 0 or not topic["partitions"]
                        or any(p["error_code"] != 0 for p in topic["partitions"])}
            if not problems:
                break
            if loop.time() >= deadline:
                raise ValueError(f"topics not available ({problems}, by Kafka error code); "
                                 "run `ipaas-klaviyo topics apply`")
            await asyncio.sleep(0.2)  # polls the broker's metadata: nothing to await instead
    finally:
        await admin.close()
    return sorted(TopicPartition(topic["topic"], p["partition"]) for topic in described for p in topic["partitions"])


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class TopicTail:
    """Reads partitions incrementally: each ``read()`` returns the records from where the last one stopped to the
    end offsets of now, group-less and ``read_committed``, on one long-lived consumer.

    For views kept up to date from a topic (the dead-letter backlog, the replay progress): a refresh reads only what
    arrived since the last one. Records below a partition's log start (deleted by retention) are skipped.
    """

    def __init__(self, kafka: KafkaSettings, tps: Iterable[TopicPartition], *, idle_timeout_s: float = 30.0) -> None:
        self._kafka = kafka
        self._tps = sorted(set(tps))
        self._idle_timeout_s = idle_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self.next: dict[TopicPartition, int] = dict.fromkeys(self._tps, 0)
        """Per partition: the next offset to read."""
        self.log_start: dict[TopicPartition, int] = dict.fromkeys(self._tps, 0)
        """Per partition: the first offset still in the log, as of the last ``read()``."""

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._tps)

    def track(self, tps: Iterable[TopicPartition]) -> None:
        """Also read these partitions from now on (partitions added to a topic), from their beginning."""
        added = set(tps) - set(self._tps)
        if not added:
            return
        self._tps = sorted({*self._tps, *added})
        for tp in added:
            self.next[tp] = 0
            self.log_start[tp] = 0
        if self._consumer is not None:
            self._consumer.assign(self._tps)
            self._consumer.pause(*self._tps)

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_options(self._kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
        if self._tps:
            consumer.assign(self._tps)
            consumer.pause(*self._tps)

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def read(self) -> list[ConsumerRecord[bytes, bytes]]:
        """The records from the last position to the end offsets captured now, in offset order per partition."""
        consumer = self._consumer
        assert consumer is not None, "start() the tail first"
        if not self._tps:
            return []
        beginning = await consumer.beginning_offsets(self._tps)
        end = await consumer.end_offsets(self._tps)
        reached = dict(self.next)  # becomes ``next`` only once the read completed: a failed read is read again
        pending: set[TopicPartition] = set()
        for tp in self._tps:
            first = max(self.next[tp], beginning[tp])
            reached[tp] = first
            if first < end[tp]:
                consumer.seek(tp, first)
                pending.add(tp)
        found: list[ConsumerRecord[bytes, bytes]] = []
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        if pending:
            consumer.resume(*pending)
        try:
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                if any(batch.values()):
                    idle_since = loop.time()
                for tp, records in batch.items():
                    found.extend(record for record in records if record.offset < end[tp])
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                        consumer.pause(tp)
                        reached[tp] = end[tp]
                if pending and not any(batch.values()) and loop.time() - idle_since > self._idle_timeout_s:
                    raise TimeoutError(f"reading {sorted({tp.topic for tp in pending})} stalled: no record for "
                                       f"{self._idle_timeout_s:.0f}s before the end offsets")
        finally:
            consumer.pause(*self._tps)
        self.next = reached
        self.log_start = dict(beginning)
        return found
