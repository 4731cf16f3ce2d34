"""``ipaas-klaviyo demo``: the whole service on embedded defaults, with sample changes flowing through it.

Starts (or reuses: ``KAFKA_BOOTSTRAP_SERVERS``, or the broker ``ipaas-klaviyo kafka start`` recorded) a Kafka broker
and the Klaviyo and iPaaS.com simulators, applies the topic catalog under a fresh prefix, runs the service, produces
a handful of customer and transaction changes in the envelope kinds the service reads (plus two bad records), then
polls Klaviyo's profiles (one of them signed up in Klaviyo itself) back towards iPaaS.com; waits until every change
is handled, and prints what reached Klaviyo and iPaaS.com, what was dead-lettered and what the error log and
``/metrics`` say. A broker the demo started itself is stopped at the end; a reused one keeps running.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from consumer import topics
from consumer.app import Service
from consumer.failures.headers import ERROR_CODE, decoded_headers
from consumer.kafka import connection_options
from consumer.poller import open_poller
from consumer.settings import Settings
from simulators import localkafka
from simulators.ipaas import IpaasSimulator
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig


def _debezium(op: str, after: dict[str, Any]) -> bytes:
    return orjson.dumps({"before": None, "after": after, "op": op, "ts_ms": int(time.time() * 1000),
                         "source": {"connector": "postgresql", "name": "platform", "ts_ms": int(time.time() * 1000)}})


def platform_customers() -> list[dict[str, str]]:
    """The Customers already on the platform (iPaaS.com), under the ids the sample changes name: Alan's order is
    his first contact with Klaviyo, so his profile is made from his Customer there."""
    return [{"id": customer_id, "first_name": first, "last_name": last, "email_address": f"{first.lower()}@example.com"}
            for customer_id, first, last in (("c-1001", "Ada", "Lovelace"), ("c-1002", "Grace", "Hopper"),
                                             ("c-1003", "Alan", "Turing"))]


def sample_changes() -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """(logical topic, key, value, headers) of the sample changes, in production order."""
    ada = {"id": "c-1001", "first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@example.com",
           "company": "Analytical Engines", "phone_number": "+442071234567",
           "addresses": [{"id": "a-1", "address_1": "12 St James's Square", "city": "London", "region": "LND",
                          "country": "GB", "postal_code": "SW1Y 4JH", "is_primary_billing": True}]}
    grace = {"id": "c-1002", "first_name": "Grace", "last_name": "Hopper", "email_address": "grace@example.com"}
    lines = [
        {"sequence_number": 1, "sku": "ENG-1", "description": "Difference Engine", "qty": 1, "unit_price": 1200,
         "extended_price": 1200},
        {"sequence_number": 2, "sku": "CARD-50", "description": "Punched cards (50)", "qty": 2, "unit_price": 15,
         "extended_price": 30},
    ]
    order = {"id": "t-5001", "transaction_number": "SO-5001", "customer_id": "c-1001",
             "email_address": "ada@example.com", "type": "Order", "status": "Complete", "subtotal": 1230,
             "shipping_amount": 20, "total": 1250, "created_datetime": "2026-11-27T10:00:00Z", "lines": lines}
    walk_in = {"id": "t-5002", "transaction_number": "SO-5002", "customer_id": "c-1003",
               "email_address": "alan@example.com", "total": 42.5, "created_datetime": "2026-11-27T10:05:00Z",
               "lines": [{"sequence_number": 1, "sku": "BOOK-1", "description": "On Computable Numbers",
                          "qty": 1, "unit_price": 42.5, "extended_price": 42.5}]}
    cloudevent = [("ce_specversion", b"1.0"), ("ce_id", b"evt-1002"), ("ce_source", b"/platform/customers"),
                  ("ce_type", b"com.ipaas.customer.created"), ("content-type", b"application/json")]
    return [
        ("customer-changes", b"c-1001", _debezium("c", ada), []),
        ("customer-changes", b"c-1002", orjson.dumps(grace), cloudevent),
        ("customer-changes", b"c-1002", orjson.dumps({**grace, "last_name": "Hopper (RADM)"}),
         [("scope", b"customer/updated")]),
        ("transaction-changes", b"t-5001", _debezium("c", order), []),
        ("transaction-changes", b"t-5002", orjson.dumps(walk_in), [("scope", b"transaction/created")]),
        # two records that cannot go through: dead-lettered with their reason, the stream moves on
        ("customer-changes", b"c-1004", _debezium("c", {"id": "c-1004", "first_name": "No", "last_name": "Email"}),
         []),
        ("customer-changes", b"c-1005", b'{"id": "c-1005", "first_name": ', []),
    ]


async def _wait_until_committed(settings: Settings, catalog: topics.TopicCatalog, timeout_s: float = 60) -> bool:
    """True once the group's committed offsets reach the end of every source topic."""
    consumer = AIOKafkaConsumer(**connection_options(settings.kafka))
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await consumer.start()
    await admin.start()
    try:
        partitions = [TopicPartition(catalog.name(logical), p)
                      for logical, spec in catalog.sources().items() for p in range(spec.partitions)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(settings.kafka.group_id)
            if all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items()):
                return True
            await asyncio.sleep(0.25)
        return False
    finally:
        await admin.close()
        await consumer.stop()


async def _read_topic(settings: Settings, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, **connection_options(settings.kafka), auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        records: list[Any] = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def _print_report(sim: KlaviyoSimulator, ipaas: IpaasSimulator, dead: list[Any], errors: list[Any],
                  metrics_text: str) -> None:
    print("\n== Klaviyo (simulator) ==")
    for profile in sim.state.store.profiles.values():
        attributes = profile.attributes
        print(f"profile {profile.id}: {attributes.get('email')} external_id={attributes.get('external_id')} "
              f"name={attributes.get('first_name')} {attributes.get('last_name')}")
    for event in sim.state.store.events:
        print(f"event {event.metric_name!r}: unique_id={event.unique_id} value={event.value}")
    print("\n== iPaaS.com (simulator): Customers after the profiles came back ==")
    for row in ipaas.store.customers.values():
        addresses = [a for a in ipaas.store.addresses.values() if a.customer_id == row.id]
        print(f"customer {row.id}: {row.fields.get('email_address')} name={row.fields.get('first_name')} "
              f"{row.fields.get('last_name')} addresses={len(addresses)}")
    print(f"\n== Dead letters ({len(dead)}) ==")
    for record in dead:
        headers = decoded_headers(record.headers)
        print(f"{record.topic} key={record.key!r}: {headers.get(ERROR_CODE)} — "
              f"{headers.get('kafka_dlt-exception-message')}")
    print(f"\n== Error log ({len(errors)}) ==")
    for record in errors:
        entry = orjson.loads(record.value)
        print(f"[{entry['severity']}] {entry['flow']} {entry['code']}: {entry['message']}")
    print("\n== /metrics (excerpt) ==")
    for line in metrics_text.splitlines():
        if line.startswith(("ipaas_klaviyo_events_handled_total", "ipaas_klaviyo_dead_letters_total",
                            "ipaas_klaviyo_klaviyo_requests_total", "ipaas_klaviyo_catalog_errors_total",
                            "ipaas_klaviyo_ipaas_requests_total")) and not line.endswith(" 0.0"):
            print(line)


async def run_demo(settings: Settings, *, keep_running: bool = False) -> int:
    """Run the demo; returns 0 when every sample change was handled (succeeded or dead-lettered)."""
    broker = None  # the broker the demo started, and stops
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        # a broker `ipaas-klaviyo kafka start` runs is used and left running; else the demo runs its own, unrecorded
        print("using the local Kafka broker, or starting one (first run resolves its jars with Maven)...", flush=True)
        found, started = await asyncio.to_thread(localkafka.reuse_or_start)
        broker = found if started else None
        bootstrap = found.bootstrap_servers
    run_id = uuid.uuid4().hex[:6]
    try:
        async with KlaviyoSimulator(SimulatorConfig()) as sim, IpaasSimulator() as ipaas:
            for platform in platform_customers():
                fields: dict[str, Any] = dict(platform)
                ipaas.seed_customer(customer_id=fields.pop("id"), **fields)
            sim.state.store.create_profile({  # a subscriber who signed up in Klaviyo: goes to iPaaS.com
                "email": "margaret@example.com", "first_name": "Margaret", "last_name": "Hamilton",
                "location": {"address1": "1 Apollo Way", "city": "Cambridge", "region": "MA", "country": "US",
                             "zip": "02139"}})
            settings = settings.model_copy(update={
                "kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap,
                                                           "group_id": f"ipaas-klaviyo-demo-{run_id}"}),
                "klaviyo": settings.klaviyo.model_copy(update={"base_url": sim.base_url,
                                                               "api_key": DEFAULT_API_KEY}),
                "ipaas": settings.ipaas.model_copy(update={"base_url": ipaas.base_url, "api_token": ipaas.token}),
                "http": settings.http.model_copy(update={"port": 0}),
                "topic_prefix": f"demo-{run_id}.",
            })
            catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
            print(f"Kafka {bootstrap}; topics under prefix {settings.topic_prefix!r}; Klaviyo simulator "
                  f"{sim.base_url}", flush=True)
            await topics.apply(catalog, settings.kafka)
            service = Service(settings, catalog=catalog)
            running = asyncio.create_task(service.run(install_signal_handlers=True))
            await service.started.wait()
            assert service.ops is not None
            producer = AIOKafkaProducer(**connection_options(settings.kafka), acks="all")
            await producer.start()
            try:
                for logical, key, value, headers in sample_changes():
                    await producer.send_and_wait(catalog.name(logical), value=value, key=key, headers=headers)
            finally:
                await producer.stop()
            handled = await _wait_until_committed(settings, catalog)
            async with open_poller(settings, catalog=catalog) as poller:  # Klaviyo profiles back to iPaaS.com
                polled = await poller.backfill(datetime.now(UTC) - timedelta(hours=1))
            print(f"poller published {polled.published} Klaviyo profiles", flush=True)
            handled = handled and await _wait_until_committed(settings, catalog)
            metrics_url = f"http://127.0.0.1:{service.ops.port}/metrics"
            metrics_text = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics_url).read().decode())
            dead = [r for logical, spec in catalog.sources().items()
                    for r in await _read_topic(settings, catalog.name(spec.dead_letter_topic or logical))]
            errors = await _read_topic(settings, catalog.name("error-log"))
            _print_report(sim, ipaas, dead, errors, metrics_text)
            print(f"\nall {len(sample_changes())} sample changes handled: {handled}; metrics at {metrics_url}")
            if keep_running:
                print("service keeps running; Ctrl-C to stop", flush=True)
                await running
            else:
                service.stop()
                await running
            return 0 if handled else 1
    finally:
        if broker is not None:
            await asyncio.to_thread(localkafka.stop, broker)
