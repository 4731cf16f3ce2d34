"""Preflight's topic check against the real broker: it asks for the topics the service will use, no more."""

from __future__ import annotations

from consumer.preflight import check_topics, run_checks, topics_in_use
from consumer.settings import Settings
from consumer.topics import TopicCatalog
from simulators.klaviyo import DEFAULT_API_KEY
from tests.support.kafka import create_catalog_topics, kafka_settings
from tests.support.topic_space import TopicSpace


def test_the_retry_topics_in_use_follow_the_delays() -> None:
    catalog = TopicCatalog.load()
    retry = {logical for logical, spec in catalog.topics.items() if spec.role == "retry"}
    assert retry and set(topics_in_use(catalog)) == set(catalog.topics)
    assert set(topics_in_use(catalog, 0)) == set(catalog.topics) - retry
    assert set(topics_in_use(catalog, 1)) & retry == {f"{source}-retry-0" for source in catalog.sources()}


async def test_without_retry_delays_the_retry_topics_are_not_required(topic_space: TopicSpace) -> None:
    catalog = TopicCatalog.load(prefix=topic_space.fresh_prefix())
    kafka = kafka_settings(topic_space.bootstrap)
    await create_catalog_topics(topic_space.bootstrap, catalog, topics_in_use(catalog, 0))
    missing = await check_topics(catalog, kafka, retry_topics=2)
    assert missing.status == "fail"
    assert catalog.name("customer-changes-retry-0") in missing.text
    assert catalog.name("customer-changes-retry-2") not in missing.text
    settings = Settings.model_validate({
        "kafka": kafka.model_dump(), "topic_prefix": catalog.prefix, "http": {"port": 0},
        "klaviyo": {"api_key": DEFAULT_API_KEY}, "runtime": {"retry_topic_delays_s": []}})
    checks = {check.name: check for check in await run_checks(settings)}
    assert checks["topics"].status == "ok", checks["topics"].text
