"""The topic catalog against the real broker: apply creates and is idempotent, check reports drift."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from consumer import topics
from tests.support.kafka import kafka_settings
from tests.support.topic_space import TopicSpace


async def test_apply_creates_every_topic_once_and_check_then_reports_no_drift(
    kafka_bootstrap: str, topic_space: TopicSpace
):
    catalog = topics.TopicCatalog.load(prefix=topic_space.fresh_prefix())
    settings = kafka_settings(kafka_bootstrap)
    assert {d.problem for d in await topics.check(catalog, settings)} == {"missing"}

    created = await topics.apply(catalog, settings)
    assert len(created) == len(catalog.topics)
    # each source's retry topics, named as Spring for Apache Kafka names them, one per default delay
    retry = {catalog.name(logical) for logical, spec in catalog.topics.items() if spec.role == "retry"}
    assert retry == {f"{catalog.name(source)}-retry-{index}" for source in catalog.sources() for index in range(4)}
    assert retry <= {change.split()[1] for change in created}
    assert await topics.apply(catalog, settings) == []
    assert await topics.check(catalog, settings) == []


async def test_check_reports_partitions_and_configs_that_differ_and_apply_mends_them(
    kafka_bootstrap: str, topic_space: TopicSpace
):
    catalog = topics.TopicCatalog.load(prefix=topic_space.fresh_prefix())
    settings = kafka_settings(kafka_bootstrap)
    await topics.apply(catalog, settings)
    name = catalog.name("error-log")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({name: NewPartitions(6)})
    finally:
        await admin.close()
    expected = [(name, "partitions 6, catalog says 4")]
    # the broker's metadata follows its controller a moment later: ask until it does (bounded)
    async with asyncio.timeout(15):
        while [(d.topic, d.problem) for d in await topics.check(catalog, settings)] != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    wider = catalog.model_copy(update={"topics": {**catalog.topics, "error-log": catalog.topics["error-log"].model_copy(
        update={"partitions": 8, "retention_ms": 86_400_000})}})
    changes = await topics.apply(wider, settings)
    assert any("partitions 6 -> 8" in change for change in changes)
    async with asyncio.timeout(15):
        while await topics.check(wider, settings):  # noqa: ASYNC110 - nothing to await but the broker
            await asyncio.sleep(0.1)


def test_a_dead_letter_topic_smaller_than_its_source_is_refused(tmp_path: Path):
    text = topics.DEFAULT_CATALOG.read_text().replace(
        "name: ipaas.customers.changes-dlt\n    role: dead_letter\n    partitions: 8",
        "name: ipaas.customers.changes-dlt\n    role: dead_letter\n    partitions: 2")
    broken = tmp_path / "topics.yaml"
    broken.write_text(text)
    with pytest.raises(ValueError, match="needs at least 8 partitions"):
        topics.TopicCatalog.load(broken)
