"""The compose stack's sample traffic: rounds of the demo's changes, each under identities of its own."""

from __future__ import annotations

import orjson
import pytest

from consumer import topics
from consumer.settings import Settings
from simulators.demo import sample_changes
from simulators.ipaas import IpaasSimulator
from simulators.traffic import round_of_changes, round_of_platform_customers, run_traffic
from tests.support.kafka import kafka_settings, read_all


def test_each_round_has_the_demo_shapes_under_new_identities() -> None:
    first, second = round_of_changes(1), round_of_changes(2)
    assert [change[0] for change in first] == [change[0] for change in sample_changes()]
    assert {key for _, key, _, _ in first}.isdisjoint({key for _, key, _, _ in second})
    ada = orjson.loads(first[0][2])["after"]
    assert (ada["id"], ada["email_address"]) == ("c-r1-1001", "ada+r1@example.com")
    order = orjson.loads(first[3][2])["after"]
    assert (order["id"], order["customer_id"]) == ("t-r1-5001", "c-r1-1001")
    assert ("ce_id", b"evt-r1-1002") in first[1][3]
    with pytest.raises(orjson.JSONDecodeError):  # the unreadable record stays unreadable
        orjson.loads(first[-1][2])


async def test_rounds_go_to_the_catalog_topics_under_the_prefix(kafka_bootstrap: str, unique: str) -> None:
    settings = Settings(kafka=kafka_settings(kafka_bootstrap), topic_prefix=f"traffic-{unique}.",
                        http={"port": 0})  # type: ignore[arg-type]
    catalog = topics.TopicCatalog.load(None, settings.topic_prefix)
    await topics.apply(catalog, settings.kafka)

    sent = await run_traffic(settings, interval_s=0.01, rounds=2)

    per_round = len(sample_changes())
    assert sent == 2 * per_round
    customers = sum(1 for change in sample_changes() if change[0] == "customer-changes")
    records = await read_all(kafka_bootstrap, catalog.name("customer-changes"), expected=2 * customers)
    assert {record.key for record in records} >= {b"c-r1-1001", b"c-r2-1001"}


def test_each_round_has_the_platform_customers_its_orders_name() -> None:
    customers = {c["id"]: c for c in round_of_platform_customers(3)}
    orders = [orjson.loads(value) for logical, _, value, _ in round_of_changes(3) if logical == "transaction-changes"]
    named = {(order.get("after") or order)["customer_id"] for order in orders}
    assert named <= set(customers) and customers["c-r3-1003"]["email_address"] == "alan+r3@example.com"


async def test_rounds_seed_their_platform_customers_in_the_ipaas_simulator(kafka_bootstrap: str, unique: str) -> None:
    settings = Settings(kafka=kafka_settings(kafka_bootstrap), topic_prefix=f"traffic-{unique}.",
                        http={"port": 0})  # type: ignore[arg-type]
    await topics.apply(topics.TopicCatalog.load(None, settings.topic_prefix), settings.kafka)
    async with IpaasSimulator() as ipaas:
        await run_traffic(settings, interval_s=0.01, rounds=2, ipaas_simulator=ipaas.base_url)
        seeded = sorted(ipaas.store.customers)
    assert seeded == sorted(c["id"] for n in (1, 2) for c in round_of_platform_customers(n))
