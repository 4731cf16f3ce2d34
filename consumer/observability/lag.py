"""Consumer lag from Kafka's point of view: the group's committed offsets against the end offsets.

Read with an admin client and a group-less consumer, so it is right whatever the service does: consuming, paused,
stuck, holding partitions it never committed, or not running at all. Per partition of the source topics:

* **lag** (records) = end offset - the group's committed offset. A partition the group never committed counts
  from its log start when ``auto_offset_reset`` is ``earliest`` (the group will read all of it), and is 0 when
  it is ``latest`` (the group will never read what is there now).
* **time lag** (seconds) = the age of the first record the group has not finished: now - its timestamp. The
  runtime's own record when it holds it (``held``: cheap, and ahead of the last commit), else the record at the
  committed offset (or the log start), read from Kafka once per offset. 0 when nothing waits; None when the
  record could not be read (for instance an open transaction holds it back from ``read_committed`` readers).

End offsets are those a ``read_committed`` consumer reaches (the last stable offset), as the service reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from consumer.kafka import connection_options
from consumer.settings import KafkaSettings

Held = Mapping[TopicPartition, tuple[int, int]]
"""Per partition: (offset, timestamp ms) of the first record the runtime holds unfinished."""

_FETCH_TIMEOUT_S = 2.0
_FETCH_BYTES = 64 * 1024  # one record's timestamp is wanted; the broker still returns a larger first batch


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of a source topic, as Kafka sees the group."""

    topic: str
    partition: int
    committed: int | None
    """The group's committed offset (None: never committed)."""
    log_start: int
    end: int
    lag: int
    oldest_timestamp_ms: int | None
    """Timestamp of the first unfinished record (None: nothing waits, or it could not be read)."""

    def age_s(self, now_s: float) -> float | None:
        """The time lag: seconds since the first unfinished record's timestamp (0 when nothing waits)."""
        if self.lag == 0:
            return 0.0
        if self.oldest_timestamp_ms is None:
            return None
        return max(0.0, now_s - self.oldest_timestamp_ms / 1000)


class GroupLag:
    """Reads the lag of one consumer group over some topics; ``start()`` it, ``read()`` as often as wanted."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        admin: AIOKafkaAdminClient | None = None,
    ) -> None:
        self._kafka = kafka
        self.group_id = group_id
        self.topics = sorted(set(topics))
        self._reset = auto_offset_reset
        self._admin = admin
        self._own_admin = admin is None
        self._consumer: AIOKafkaConsumer | None = None
        self._timestamps: dict[tuple[TopicPartition, int], int] = {}
        self.missing: list[str] = []
        """The topics the last reading did not find."""

    async def start(self) -> None:
        """Connect (the admin client too, unless one was given: its owner starts and closes it)."""
        if self._own_admin:
            self._admin = AIOKafkaAdminClient(**connection_options(self._kafka))
            await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            **connection_options(self._kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            max_partition_fetch_bytes=_FETCH_BYTES,
        )
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
        if self._admin is not None and self._own_admin:
            admin, self._admin = self._admin, None
            await admin.close()

    async def partitions(self) -> list[TopicPartition]:
        """The partitions of the topics that exist (a missing topic has none: see ``missing``)."""
        assert self._admin is not None, "start() first"
        described = await self._admin.describe_topics(self.topics)
        tps = sorted(TopicPartition(topic["topic"], p["partition"]) for topic in described
                     if topic["error_code"] == 0 for p in topic["partitions"])
        self.missing = sorted(set(self.topics) - {tp.topic for tp in tps})
        return tps

    async def read(self, held: Held | None = None) -> list[PartitionLag]:
        """Every partition's lag and oldest unfinished record, now (``missing``: the topics that do not exist)."""
        assert self._admin is not None and self._consumer is not None, "start() first"
        tps = await self.partitions()
        if not tps:
            return []
        committed = {tp: meta.offset
                     for tp, meta in (await self._admin.list_consumer_group_offsets(self.group_id)).items()
                     if meta.offset >= 0}
        beginning = await self._consumer.beginning_offsets(tps)
        end = await self._consumer.end_offsets(tps)
        held = held or {}
        first_unfinished: dict[TopicPartition, int] = {}
        rows: dict[TopicPartition, tuple[int | None, int]] = {}
        for tp in tps:
            position = committed.get(tp)
            if position is None:
                start = beginning[tp] if self._reset == "earliest" else end[tp]
            else:
                start = max(position, beginning[tp])  # retention may have deleted records never read
            lag = max(0, end[tp] - start)
            rows[tp] = (position, lag)
            if lag and tp not in held:
                first_unfinished[tp] = start
        timestamps = await self._first_timestamps(first_unfinished, end)
        result = []
        for tp in tps:
            position, lag = rows[tp]
            oldest = held[tp][1] if lag and tp in held else timestamps.get(tp) if lag else None
            result.append(PartitionLag(tp.topic, tp.partition, position, beginning[tp], end[tp], lag, oldest))
        return result

    async def _first_timestamps(self, wanted: dict[TopicPartition, int],
                                end: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The timestamp of the first record at or after each offset (cached: a waiting record's offset stays)."""
        self._timestamps = {key: ts for key, ts in self._timestamps.items() if wanted.get(key[0]) == key[1]}
        missing = {tp: offset for tp, offset in wanted.items() if (tp, offset) not in self._timestamps}
        consumer = self._consumer
        if missing and consumer is not None:
            consumer.assign(list(missing))
            for tp, offset in missing.items():
                consumer.seek(tp, offset)
            deadline = time.monotonic() + _FETCH_TIMEOUT_S
            pending = dict(missing)
            while pending and time.monotonic() < deadline:
                batch = await consumer.getmany(*pending, timeout_ms=200)
                for tp, records in batch.items():
                    found = next((r for r in records if r.offset >= pending.get(tp, end[tp])), None)
                    if found is not None and tp in pending:
                        self._timestamps[(tp, pending.pop(tp))] = found.timestamp
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.pop(tp)  # only markers or aborted records up to the end: nothing to read
            consumer.pause(*missing)  # no prefetching between readings
        return {tp: self._timestamps[(tp, offset)] for tp, offset in wanted.items()
                if (tp, offset) in self._timestamps}


async def read_group_lag(kafka: KafkaSettings, group_id: str, topics: Sequence[str], *,
                         auto_offset_reset: Literal["earliest", "latest"] = "earliest",
                         timeout_s: float = 30.0) -> list[PartitionLag]:
    """One reading of a group's lag (``ipaas-klaviyo status`` without a service)."""
    reader = GroupLag(kafka, group_id, topics, auto_offset_reset=auto_offset_reset)
    async with asyncio.timeout(timeout_s):
        await reader.start()
        try:
            return await reader.read()
        finally:
            await reader.close()
