"""Helpers for tests that talk to the real broker: topics, producing, reading back, group offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.settings import KafkaSettings, RuntimeSettings


def kafka_settings(bootstrap: str, **overrides: object) -> KafkaSettings:
    """Client settings tuned for tests: short session timeouts so a killed member leaves quickly."""
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        **overrides,
    }
    return KafkaSettings.model_validate(values)


def runtime_limits(**overrides: object) -> RuntimeSettings:
    values: dict[str, object] = {
        "commit_interval_s": 0.2,
        "retry_base_delay_s": 0.01,
        "retry_max_delay_s": 0.05,
        "infrastructure_max_delay_s": 0.1,
        "drain_timeout_s": 5.0,
        **overrides,
    }
    return RuntimeSettings.model_validate(values)


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None]] | Sequence[tuple[bytes | None, bytes | None, list]],
) -> list[tuple[int, int]]:
    """Send (key, value[, headers]) records in order; returns (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for record in records:
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else None  # type: ignore[misc]
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
        metadata = await asyncio.gather(*futures)
        return [(m.partition, m.offset) for m in metadata]
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """Read a topic from the beginning (no group) until ``expected`` records arrived or the time is up."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(found) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


async def group_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)]))
    finally:
        await consumer.stop()
