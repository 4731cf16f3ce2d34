"""Which dead letters a newer successful change of the same key superseded, decided from Kafka alone.

A dead letter is superseded when the partition its record came from (``kafka_dlt-original-topic`` /
``-partition``) holds a record that

* has the same key, at a higher offset than the letter's original offset;
* lies below the committed offset of the consumer group that dead-lettered it (``kafka_dlt-original-consumer-
  group``): Kafka's committed offset is the next record the group will read, so the group finished every record
  before it, and a finished record either succeeded or was dead-lettered;
* was not dead-lettered itself: no dead letter of the same dead-letter topics names its position as original;
* is not a replay (it carries no ``ipaas_klaviyo-replay-count`` header): a replayed letter is an old change sent
  again, not a newer one;
* has a value (a tombstone changes nothing the integration sends).

Such a record succeeded after the letter's change failed, and the destination holds its values: replaying the
letter would send older values over them. ``dlq replay --skip-superseded`` leaves these letters out. The
decision is as of the moment it is made (committed offsets and dead letters then); a record skipped by the
flows (a delete, which the integration does not send) counts as a newer change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from consumer.failures.deadletters import DeadLetter, read_dead_letters
from consumer.failures.headers import ORIGINAL_CONSUMER_GROUP, REPLAY_COUNT
from consumer.failures.scan import TopicScan
from consumer.kafka import connection_options
from consumer.settings import KafkaSettings


async def superseded_letters(
    kafka: KafkaSettings, letters: Sequence[DeadLetter], dead_letter_topics: Sequence[str]
) -> set[str]:
    """The refs (``DeadLetter.ref``) of the ``letters`` a newer successful change superseded; every dead letter of
    ``dead_letter_topics`` counts as a failed change."""
    sources = [(letter, source, _group_of(letter, kafka)) for letter in letters
               if letter.key is not None and (source := _source_of(letter)) is not None]
    if not sources:
        return set()
    failed = {source for letter in await read_dead_letters(kafka, dead_letter_topics)
              if (source := _source_of(letter)) is not None}
    committed = {group: await _committed(kafka, group) for group in {group for *_, group in sources}}

    start: dict[TopicPartition, int] = {}
    stop: dict[TopicPartition, int] = {}
    for _, (tp, offset), group in sources:
        start[tp] = min(start.get(tp, offset + 1), offset + 1)
        stop[tp] = max(stop.get(tp, 0), committed[group].get(tp, 0))
    keys = {letter.key for letter, *_ in sources}
    later: dict[tuple[TopicPartition, bytes | None], list[int]] = {}
    async with TopicScan(kafka, sorted({tp.topic for tp in start}), start=start, stop=stop, only=start) as scan:
        async for record in scan.records():
            tp = TopicPartition(record.topic, record.partition)
            if (record.key in keys and record.value is not None and (tp, record.offset) not in failed
                    and not _replayed(record.headers)):
                later.setdefault((tp, record.key), []).append(record.offset)
    return {letter.ref for letter, (tp, offset), group in sources
            if any(offset < newer < committed[group].get(tp, 0) for newer in later.get((tp, letter.key), ()))}


def _group_of(letter: DeadLetter, kafka: KafkaSettings) -> str:
    """The consumer group that dead-lettered the letter (the configured one when the header is missing)."""
    return letter.context.get(ORIGINAL_CONSUMER_GROUP) or kafka.group_id


def _source_of(letter: DeadLetter) -> tuple[TopicPartition, int] | None:
    if letter.original_topic is None or letter.original_partition is None or letter.original_offset is None:
        return None
    return TopicPartition(letter.original_topic, letter.original_partition), letter.original_offset


def _replayed(headers: Iterable[tuple[str, bytes]]) -> bool:
    return any(name == REPLAY_COUNT for name, _ in headers)


async def _committed(kafka: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (a partition it never committed is absent)."""
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
