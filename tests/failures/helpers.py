"""What the failure-path tests share: settings with the catalog's topics created, dead letters written the
service's way, and a dead letter built in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka.structs import TopicPartition

from consumer.catalog import KLAVIYO_REJECTED_REQUEST, Flow
from consumer.failures import headers as dl
from consumer.failures.deadletters import DeadLetter, DeadLetterPublisher
from consumer.kafka import reliable_producer
from consumer.runtime import Failure, Message
from consumer.settings import Settings
from consumer.topics import TopicCatalog
from tests.support.kafka import create_catalog_topics, end_offsets
from tests.support.service import service_settings
from tests.support.topic_space import TopicSpace

FULL_CONTEXT = {
    "trace": "t-1", dl.ORIGINAL_TOPIC: "src", dl.ORIGINAL_PARTITION: "3", dl.ORIGINAL_OFFSET: "17",
    dl.ORIGINAL_TIMESTAMP: "1700000000000", dl.ORIGINAL_CONSUMER_GROUP: "g", dl.EXCEPTION_FQCN: "x.Y",
    dl.EXCEPTION_MESSAGE: "boom", dl.ERROR_CODE: KLAVIYO_REJECTED_REQUEST.code, dl.ERROR_CLASS: "fatal",
    dl.FLOW: "all", dl.ATTEMPTS: "3", dl.FIRST_FAILURE: "2026-05-01T10:00:00.000Z",
    dl.LAST_FAILURE: "2026-05-01T10:00:02.000Z", dl.REPLAY_COUNT: "1", dl.HISTORY: '[{"code": "X", "attempts": 1}]',
}
"""A dead letter's headers with every piece of failure context (and one header of the original record)."""


def letter(headers: dict[str, str], key: bytes | None = b"c-1", value: bytes | None = b"{}") -> DeadLetter:
    """A dead letter of ``t.dlt`` (partition 3, offset 42) with these headers."""
    return DeadLetter("t.dlt", 3, 42, 1_700_000_000_000, key, value,
                      tuple((name, text.encode()) for name, text in headers.items()))


async def prepared(topic_space: TopicSpace, unique: str) -> tuple[Settings, TopicCatalog]:
    """Service settings of the test's own, with every topic of the catalog created under their prefix."""
    settings = service_settings(topic_space, unique, klaviyo={"api_key": "pk_test_not_used"})
    catalog = TopicCatalog.load(prefix=settings.topic_prefix)
    await create_catalog_topics(settings.kafka.bootstrap_servers, catalog)
    return settings, catalog


async def dead_letter(settings: Settings, catalog: TopicCatalog, ids: Sequence[int], code: str) -> None:
    """Dead-letter plain-JSON customer records ``c-<id>`` as if the service had failed them (same publisher)."""
    producer = reliable_producer(settings.kafka)
    await producer.start()
    try:
        publisher = DeadLetterPublisher(producer, settings.kafka.group_id, catalog.dead_letter_name)
        source = catalog.name("customer-changes")
        failure = Failure(code=code, message=f"{code}: 400 invalid", exception_fqcn="consumer.catalog.CatalogError",
                          flow=Flow.ADD_PROFILE_FROM_IPAAS.slug, attempts=3)
        await asyncio.gather(*(publisher.publish(Message(
            topic=source, partition=i % 8, offset=10_000 + i, key=f"c-{i}".encode(),
            value=orjson.dumps({"id": f"c-{i}", "first_name": f"Name {i}"}), headers=[("trace", f"t-{i}".encode())],
            timestamp=1_700_000_000_000,
        ), failure) for i in ids))
    finally:
        await producer.stop()


async def all_offsets(settings: Settings, catalog: TopicCatalog) -> dict[TopicPartition, int]:
    """The end offsets of every topic of the catalog."""
    found: dict[TopicPartition, int] = {}
    for logical, spec in catalog.topics.items():
        found.update(await end_offsets(settings.kafka.bootstrap_servers, catalog.name(logical), spec.partitions))
    return found
