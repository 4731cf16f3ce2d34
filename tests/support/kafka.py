"""Helpers for tests that talk to the real broker: topics, producing, reading back, group offsets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.runtime import StreamRuntime
from consumer.settings import KafkaSettings, RuntimeSettings
from consumer.topics import TopicCatalog


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
        "retry_topic_delays_s": [],  # dead-letter at once, unless a test turns the retry topics on
        **overrides,
    }
    return RuntimeSettings.model_validate(values)


async def create_catalog_topics(bootstrap: str, catalog: TopicCatalog, logical: Iterable[str] = ()) -> None:
    """Create the catalog's ``logical`` topics (every one when none is named) as it declares them.

    The test-side twin of ``consumer.topics.apply``: one request, and no drift check (the topics are new)."""
    wanted = list(logical) or list(catalog.topics)
    await create_topics(bootstrap, [NewTopic(catalog.name(name), catalog.topics[name].partitions,
                                      catalog.topics[name].replication_factor,
                                      topic_configs=catalog.topics[name].configs()) for name in wanted])


async def create_topics(bootstrap: str, new: Sequence[NewTopic], timeout_s: float = 30.0) -> None:
    """Create topics in one request (one that exists already is left as it is); return once the broker's metadata
    shows each with its partitions, so what runs next finds them."""
    names = [topic.name for topic in new]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(list(new))
        for topic, code, message in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"creating {topic}: {message or ''}")
        async with asyncio.timeout(timeout_s):
            while not _all_shown(await admin.describe_topics(names)):  # noqa: ASYNC110 - the broker has no event
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


def _all_shown(described: list[dict[str, Any]]) -> bool:
    return all(not topic["error_code"] and topic["partitions"] for topic in described)


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    return names


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


@asynccontextmanager
async def running(runtime: StreamRuntime) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``runtime`` for the block; stop it (drained) afterwards."""
    task = asyncio.create_task(runtime.run())
    try:
        yield task
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
