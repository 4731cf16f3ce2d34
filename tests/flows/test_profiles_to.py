"""Flows TO iPaaS.com end to end: profiles in the Klaviyo simulator, published by the poller to the real broker,
decoded from what it published, synced by ``sync_customer`` into the iPaaS.com simulator; and the whole service
consuming the poller's topic. Catalog texts are compared verbatim with the seed error catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from consumer.catalog import (
    ADDRESS_VALUE_COULD_NOT_BE_READ,
    COULD_NOT_LINK_TO_EXISTING_CUSTOMER,
    CatalogError,
    Flow,
    Severity,
)
from consumer.envelopes import ChangeEvent, decode
from consumer.flows.context import FlowContext
from consumer.flows.profiles_to import normalise_email, sync_customer
from consumer.http.backoff import Backoff
from consumer.ipaas import IpaasClient, IpaasRejected
from consumer.kafka import reliable_producer
from consumer.klaviyo import ApiKeyAuth, KlaviyoClient
from consumer.mapping import MappingCollection, load_collections, parse_collection
from consumer.poller import CHANGES_TOPIC, STATE_TOPIC, ProfilePoller
from consumer.records import Customer
from consumer.settings import IpaasSettings, KlaviyoSettings
from consumer.transfers import TransferRef
from simulators.ipaas import Faults, IpaasSimulator, SimulatorConfig
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator
from simulators.klaviyo import SimulatorConfig as KlaviyoConfig
from simulators.klaviyo.store import Store
from tests.support.changes import change_of
from tests.support.kafka import kafka_settings
from tests.support.sleeps import RecordedSleeps
from tests.support.topic_space import TopicSpace

# The seed error catalog, verbatim.
COULD_NOT_LINK_TEXT = (
    "The integration could not automatically link this profile to an existing iPaaS.com Customer by email address. "
    "This may result in duplicate customer records."
)
ADDRESS_NOT_READ_TEXT = "A mapped address or subscription value could not be read from the Klaviyo profile."

FAST = Backoff(base_s=0.01, cap_s=0.02)


@dataclass
class Recorded:
    """What the handlers reported through ``ctx.warn``."""

    items: list[tuple[CatalogError, TransferRef]] = field(default_factory=list)

    async def __call__(self, error: CatalogError, transfer: TransferRef) -> None:
        self.items.append((error, transfer))


class ChangeFeed:
    """Reads what the poller published, as the dispatcher would decode it (no consumer group)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        self._topic = topic
        self._partitions = partitions

    async def start(self) -> None:
        await self._consumer.start()
        self._tps = [TopicPartition(self._topic, p) for p in range(self._partitions)]
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def drain(self) -> list[ChangeEvent]:
        """Every record published since the last drain (the producer waited for acks, so they are all there)."""
        end = await self._consumer.end_offsets(self._tps)
        records = []
        pending = {tp for tp in self._tps if await self._consumer.position(tp) < end[tp]}
        while pending:
            batch = await self._consumer.getmany(*pending, timeout_ms=500)
            for items in batch.values():
                records.extend(items)
            pending = {tp for tp in pending if await self._consumer.position(tp) < end[tp]}
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        events = []
        for record in records:
            events.extend(decode("klaviyo_profile", record.key, record.value, record.headers))
        return events


@dataclass
class World:
    klaviyo_sim: KlaviyoSimulator
    klaviyo: KlaviyoClient
    ipaas_sim: IpaasSimulator
    ipaas: IpaasClient
    poller: ProfilePoller
    feed: ChangeFeed
    mappings: dict[str, MappingCollection]
    warnings: Recorded

    def ctx(self, **overrides: Any) -> FlowContext:
        values: dict[str, Any] = {"klaviyo": self.klaviyo, "ipaas": self.ipaas, "mappings": self.mappings,
                                  "warn": self.warnings}
        values.update(overrides)
        return FlowContext(**values)

    def profile(self, **attributes: Any) -> str:
        """Create a profile in Klaviyo (as a person editing it there would)."""
        return self.klaviyo_sim.store.create_profile(attributes).id

    def edit(self, profile_id: str, **attributes: Any) -> None:
        self.klaviyo_sim.store.update_profile(profile_id, attributes, None)

    async def poll(self) -> list[ChangeEvent]:
        await self.poller.run_once()
        return await self.feed.drain()

    async def sync(self, events: list[ChangeEvent] | None = None, **ctx: Any) -> list[ChangeEvent]:
        """Poll (unless given events) and hand every event to the flow, in order."""
        events = await self.poll() if events is None else events
        context = self.ctx(**ctx)
        for event in events:
            await sync_customer(change_of(event), context)
        return events

    def customers(self) -> list[dict[str, Any]]:
        return [c for c in self.ipaas_sim.store.snapshot()["customers"] if not c["deleted"]]

    def writes(self) -> int:
        return self.ipaas_sim.store.writes

    def link_of(self, profile_id: str) -> str | None:
        for (table, _, internal), external in self.ipaas_sim.store.links.items():
            if table == "customer" and external == profile_id:
                return internal
        return None


@pytest.fixture
async def world(kafka_bootstrap: str, topic_space: TopicSpace, sleeps: RecordedSleeps) -> AsyncIterator[World]:
    settings = kafka_settings(kafka_bootstrap)
    catalog = await topic_space.catalog(CHANGES_TOPIC, STATE_TOPIC, partitions=2)  # the poller's own topics
    async with KlaviyoSimulator(KlaviyoConfig(seed=5, validate_bodies=False)) as klaviyo_sim, \
            IpaasSimulator(SimulatorConfig(seed=5)) as ipaas_sim:
        klaviyo_settings = KlaviyoSettings(base_url=klaviyo_sim.base_url, api_key=DEFAULT_API_KEY, max_retries=2,
                                           connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)
        ipaas_settings = IpaasSettings(base_url=ipaas_sim.base_url, api_token=ipaas_sim.token, max_retries=3,
                                       connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)
        async with KlaviyoClient(klaviyo_settings, ApiKeyAuth(DEFAULT_API_KEY), backoff=FAST,
                                 retry_after_cap_s=0.05, sleep=sleeps) as klaviyo, \
                IpaasClient(ipaas_settings, backoff=FAST, retry_after_cap_s=0.05, sleep=sleeps) as ipaas:
            producer: AIOKafkaProducer = reliable_producer(settings)
            await producer.start()
            feed = ChangeFeed(kafka_bootstrap, catalog.name(CHANGES_TOPIC), catalog.topics[CHANGES_TOPIC].partitions)
            await feed.start()
            poller = ProfilePoller.from_catalog(klaviyo, producer, kafka=settings, catalog=catalog,
                                                start_at=datetime.now(UTC) - timedelta(minutes=1))
            try:
                yield World(klaviyo_sim, klaviyo, ipaas_sim, ipaas, poller, feed, load_collections(), Recorded())
            finally:
                await feed.stop()
                await producer.stop()


# --- Add / Update Klaviyo Profile TO iPaaS.com -------------------------------------------------------------------
async def test_a_new_profile_becomes_a_linked_customer_with_its_address(world: World) -> None:
    profile_id = world.profile(
        email="zoë.nakamura@shop.test", first_name="Zoë", last_name="中村 🌸", organization="Café Ñandú",
        phone_number="+14155550123",
        location={"address1": " 1 Market St ", "city": "San Francisco", "region": "CA", "country": "US",
                  "zip": "94105"},
    )
    (event,) = await world.sync()
    assert event.record_id == profile_id

    (customer,) = world.customers()
    assert {k: customer[k] for k in ("email_address", "first_name", "last_name", "company", "phone_number")} == {
        "email_address": "zoë.nakamura@shop.test", "first_name": "Zoë", "last_name": "中村 🌸",
        "company": "Café Ñandú", "phone_number": "+14155550123"}
    assert world.link_of(profile_id) == customer["id"]
    (address,) = customer["addresses"]
    assert {k: address[k] for k in ("address_1", "city", "region", "country", "postal_code", "first_name")} == {
        "address_1": "1 Market St", "city": "San Francisco", "region": "CA", "country": "US",
        "postal_code": "94105", "first_name": "Zoë"}
    assert await world.ipaas.lookup_internal_id(f"{profile_id}|address", table="Address") == address["id"]
    assert world.warnings.items == []


async def test_resyncing_writes_nothing_and_duplicates_no_address(world: World) -> None:
    world.profile(email="again@shop.test", first_name="Again", location={"city": "Lyon", "country": "FR"})
    events = await world.sync()
    writes = world.writes()
    world.ipaas_sim.state.requests.clear()

    await world.sync(events)  # redelivered
    await world.sync(events)
    assert await world.poll() == []  # nothing changed in Klaviyo: nothing published, nothing synced
    assert world.writes() == writes
    assert {r.operation for r in world.ipaas_sim.received()} <= {
        "lookup_special", "lookup_external", "get_customer", "list_customer_addresses"}
    (customer,) = world.customers()
    assert len(customer["addresses"]) == 1 and customer["version"] == 1


async def test_a_changed_profile_updates_the_customer_and_its_address_in_place(world: World) -> None:
    profile_id = world.profile(email="move@shop.test", first_name="Max", location={"city": "Bonn", "zip": "53111"})
    await world.sync()
    (before,) = world.customers()

    world.edit(profile_id, first_name="Maximilian", location={"city": "Köln", "zip": "50667"})
    await world.sync()  # (an "updated" event, or "created" when Klaviyo's second is still the creation's)
    (after,) = world.customers()
    assert after["id"] == before["id"] and after["first_name"] == "Maximilian" and after["version"] == 2
    (address,) = after["addresses"]
    assert address["id"] == before["addresses"][0]["id"]
    assert (address["city"], address["postal_code"], address["version"]) == ("Köln", "50667", 2)


async def test_a_profile_links_to_the_customer_with_its_exact_email(world: World) -> None:
    existing = world.ipaas_sim.seed_customer(email_address="known@shop.test", first_name="Old")
    profile_id = world.profile(email="known@shop.test", first_name="New")
    await world.sync()
    (customer,) = world.customers()
    assert customer["id"] == existing.id and customer["first_name"] == "New"
    assert world.link_of(profile_id) == existing.id
    assert world.warnings.items == []


async def test_a_profile_links_by_the_external_id_the_from_flow_wrote(world: World) -> None:
    existing = world.ipaas_sim.seed_customer(email_address="old-address@shop.test", first_name="Ext")
    profile_id = world.profile(email="new-address@shop.test", external_id=existing.id, first_name="Ext")
    await world.sync()
    (customer,) = world.customers()
    assert customer["id"] == existing.id and customer["email_address"] == "new-address@shop.test"
    assert world.link_of(profile_id) == existing.id


@pytest.mark.parametrize("stored", ["Ann.Lee@Shop.test", " ann.lee@shop.test ", "<ANN.lee@shop.test>"])
async def test_an_email_differing_in_case_or_format_creates_a_customer_and_warns(world: World, stored: str) -> None:
    other = world.ipaas_sim.seed_customer(email_address=stored, first_name="Ann")
    profile_id = world.profile(email="ann.lee@shop.test", first_name="Ann")
    await world.sync()

    customers = world.customers()
    assert len(customers) == 2
    new = next(c for c in customers if c["id"] != other.id)
    assert world.link_of(profile_id) == new["id"]
    ((warning, transfer),) = world.warnings.items
    assert warning.entry is COULD_NOT_LINK_TO_EXISTING_CUSTOMER
    assert warning.message == COULD_NOT_LINK_TEXT
    assert (warning.entry.title, warning.severity) == ("Could Not Link to Existing Customer", Severity.WARNING)
    assert warning.flow is Flow.ADD_PROFILE_TO_IPAAS
    assert other.id in (warning.detail or "") and "ann" not in (warning.detail or "").lower()  # no personal data
    assert transfer == TransferRef("klaviyo_profile", profile_id, "klaviyo_profile/created")
    assert normalise_email(stored) == "ann.lee@shop.test"


async def test_an_updated_profile_that_cannot_be_matched_is_reported_by_the_update_flow(world: World) -> None:
    world.ipaas_sim.seed_customer(email_address="Late@Shop.test")
    profile_id = world.profile(email="late@shop.test")
    world.edit(profile_id, first_name="Edited")  # an update; Klaviyo may say created == updated in one second
    (event,) = await world.poll()
    updated = event.model_copy(update={"action": "updated"})
    await world.sync([updated])
    ((warning, _),) = world.warnings.items
    assert warning.message == COULD_NOT_LINK_TEXT and warning.flow is Flow.UPDATE_PROFILE_TO_IPAAS


async def test_an_exact_match_linked_to_another_profile_is_not_taken(world: World) -> None:
    first_id = world.profile(email="shared@shop.test")
    await world.sync()
    (first,) = world.customers()
    world.edit(first_id, email="moved@shop.test")  # not synced yet: the Customer still has the old email
    second_id = world.klaviyo_sim.store.create_profile({"email": "shared@shop.test"}).id
    events = await world.poll()
    await world.sync([e for e in events if e.record_id == second_id])
    assert world.link_of(first_id) == first["id"]
    assert world.link_of(second_id) not in (None, first["id"])
    ((warning, _),) = world.warnings.items
    assert warning.message == COULD_NOT_LINK_TEXT and "linked to another Klaviyo profile" in (warning.detail or "")


async def test_a_link_to_a_deleted_customer_is_replaced(world: World) -> None:
    profile_id = world.profile(email="gone@shop.test", first_name="Gone")
    await world.sync()
    (old,) = world.customers()
    world.ipaas_sim.store.delete_customer(old["id"])
    world.edit(profile_id, first_name="Back")
    await world.sync()
    (new,) = world.customers()
    assert new["id"] != old["id"] and new["first_name"] == "Back"
    assert world.link_of(profile_id) == new["id"]


# --- Add / Update Klaviyo Profile Address TO iPaaS.com -----------------------------------------------------------
LIST_ADDRESS = """
flow: {flow}
fields:
  address_1: {{path: 'attributes.properties.addresses[2].street', transforms: [trim]}}
  city: {{path: 'attributes.properties.addresses[2].city', transforms: [trim]}}
  postal_code: attributes.properties.addresses[2].zip
  first_name: attributes.first_name
"""


def list_mappings(world: World) -> dict[str, MappingCollection]:
    mappings = dict(world.mappings)
    for flow in ("add_profile_address_to_ipaas", "update_profile_address_to_ipaas"):
        mappings[flow] = parse_collection(LIST_ADDRESS.format(flow=flow), f"{flow}.yaml")
    return mappings


def entries(count: int) -> list[dict[str, str]]:
    return [{"street": f"{i} Rue Nº{i}", "city": f"Ville {i}", "zip": f"7500{i}"} for i in range(count)]


async def test_a_list_position_mapping_reads_the_entry_when_the_profile_has_it(world: World) -> None:
    profile_id = world.profile(email="five@shop.test", first_name="Cinq", properties={"addresses": entries(5)})
    await world.sync(mappings=list_mappings(world))
    (customer,) = world.customers()
    (address,) = customer["addresses"]
    assert (address["address_1"], address["city"], address["postal_code"]) == ("2 Rue Nº2", "Ville 2", "75002")
    assert world.link_of(profile_id) == customer["id"]


async def test_a_missing_list_position_is_address_value_could_not_be_read_and_nothing_is_lost(world: World) -> None:
    mappings = list_mappings(world)
    profile_id = world.profile(email="zero@shop.test", first_name="Zéro", properties={"addresses": []})
    (event,) = await world.poll()
    with pytest.raises(CatalogError) as caught:
        await world.sync([event], mappings=mappings)
    error = caught.value
    assert error.entry is ADDRESS_VALUE_COULD_NOT_BE_READ and error.message == ADDRESS_NOT_READ_TEXT
    assert error.entry.title == "Address Value Could Not Be Read"
    assert error.flow is Flow.ADD_PROFILE_ADDRESS_TO_IPAAS and not error.retryable
    assert error.detail == ("field 'address_1' path 'attributes.properties.addresses[2].street': "
                            "list position 2 is not present (the record has 0 entries)")
    (customer,) = world.customers()  # the Customer itself was written; only the address failed
    assert customer["addresses"] == [] and world.link_of(profile_id) == customer["id"]

    world.edit(profile_id, properties={"addresses": entries(3)})  # the data is fixed: the re-sync completes
    await world.sync(mappings=mappings)
    (customer,) = world.customers()
    assert [a["city"] for a in customer["addresses"]] == ["Ville 2"]

    world.edit(profile_id, properties={"addresses": entries(2)})  # and shrinks again: now the Update flow fails
    with pytest.raises(CatalogError) as again:
        await world.sync(mappings=mappings)
    assert again.value.message == ADDRESS_NOT_READ_TEXT
    assert again.value.flow is Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS


async def test_a_profile_without_location_writes_no_address(world: World) -> None:
    world.profile(email="nowhere@shop.test", first_name="Nobody")
    await world.sync()
    (customer,) = world.customers()
    assert customer["addresses"] == []


async def test_a_customer_address_at_the_same_location_is_adopted_not_duplicated(world: World) -> None:
    existing = world.ipaas_sim.seed_customer(
        email_address="adopt@shop.test", addresses=[{"address_1": "5 Rue X", "city": "PARIS", "country": "FR"}])
    world.profile(email="adopt@shop.test", first_name="Adé",
                  location={"address1": "5  rue x", "city": "Paris", "country": "fr"})
    await world.sync()
    (customer,) = world.customers()
    assert customer["id"] == existing.id
    (address,) = customer["addresses"]
    assert address["first_name"] == "Adé" and address["city"] == "Paris"


# --- bad input -----------------------------------------------------------------------------------------------------
async def test_a_profile_without_email_is_refused_clearly_and_writes_nothing(world: World) -> None:
    world.profile(phone_number="+14155550100", first_name="Phone Only")
    (event,) = await world.poll()
    with pytest.raises(CatalogError) as caught:
        await world.sync([event])
    error = caught.value
    assert error.flow is Flow.ADD_PROFILE_TO_IPAAS and not error.retryable
    assert error.detail == "field 'email_address' path 'attributes.email': required value is missing or empty"
    assert world.customers() == []


async def test_a_linked_profile_that_lost_its_email_still_updates(world: World) -> None:
    profile_id = world.profile(email="lost@shop.test", phone_number="+14155550111", first_name="Lost")
    await world.sync()
    world.edit(profile_id, email=None, first_name="Found")
    await world.sync()
    (customer,) = world.customers()
    assert (customer["email_address"], customer["first_name"]) == ("lost@shop.test", "Found")


async def test_without_an_ipaas_client_the_event_fails_clearly_for_the_dead_letter_topic(world: World) -> None:
    world.profile(email="unconfigured@shop.test")
    (event,) = await world.poll()
    with pytest.raises(CatalogError) as caught:
        await world.sync([event], ipaas=None)
    assert not caught.value.retryable and "ipaas.api_token" in caught.value.message


async def test_very_long_values_are_a_clear_validation_error_and_unicode_survives(world: World) -> None:
    long_name = "Ж" * 300
    world.profile(email="long@shop.test", first_name=long_name)
    (event,) = await world.poll()
    assert event.record.attributes.first_name == long_name  # type: ignore[union-attr]
    with pytest.raises(IpaasRejected) as caught:
        await world.sync([event])
    error = caught.value
    assert (error.http_status, error.retryable, error.flow) == (400, False, Flow.ADD_PROFILE_TO_IPAAS)
    assert "FirstName: The field FirstName must be a string with a maximum length of 255." in error.message
    assert world.customers() == []

    mixed = "Ǆemal 👩🏽‍💻 e\u0301 Łódź 北京 " + "y" * 200
    world.profile(email="mixed@shop.test", first_name=mixed)
    await world.sync((await world.poll())[-1:])
    (customer,) = world.customers()
    assert customer["first_name"] == mixed.strip()


async def test_an_answer_that_is_not_json_is_retried_without_a_duplicate(world: World) -> None:
    profile_id = world.profile(email="garbled@shop.test", first_name="G", location={"city": "Rome"})
    (event,) = await world.poll()
    world.ipaas_sim.faults = Faults(garble_next=1, operations=["create_customer"])
    with pytest.raises(IpaasRejected) as caught:
        await world.sync([event])  # created, but the answer was an HTML page
    assert (caught.value.http_status, caught.value.retryable) == (200, True)
    assert caught.value.flow is Flow.ADD_PROFILE_TO_IPAAS

    world.ipaas_sim.faults = Faults(non_json_next=2, operations=["lookup_special", "find_customers"])
    await world.sync([event])  # the runtime's retry; reads answered with HTML pages are retried by the client
    (customer,) = world.customers()
    assert world.link_of(profile_id) == customer["id"] and len(customer["addresses"]) == 1


# --- round trip --------------------------------------------------------------------------------------------------
async def test_round_trip_customer_to_profile_to_customer_converges_without_an_echo_loop(world: World) -> None:
    from consumer.flows import profiles_from

    seeded = world.ipaas_sim.seed_customer(
        email_address="loop@shop.test", first_name="Lu", last_name="Pé", company="Loop Inc",
        phone_number="(415) 555-0188",
        addresses=[{"address_1": "9 Loop Rd", "city": "Austin", "region": "TX", "country": "US",
                    "postal_code": "73301", "is_primary_billing": True}],
    )
    from_ctx = world.ctx()
    writes_per_round = []
    version_sent = 0
    for _ in range(5):
        customer = world.ipaas_sim.customer(seeded.id)
        if customer["version"] != version_sent:  # iPaaS.com -> Klaviyo (the FROM flow) on every Customer change
            record = await world.ipaas.fetch_record("customer", seeded.id)
            assert isinstance(record, Customer)
            action = "created" if version_sent == 0 else "updated"
            value = orjson.dumps({"scope": f"customer/{action}", "data": record.model_dump(mode="json")})
            (change,) = decode("customer", seeded.id.encode(), value, [])
            await profiles_from.sync_profile(change_of(change), from_ctx)
            version_sent = customer["version"]
        before = world.writes()
        await world.sync()  # Klaviyo -> poll -> iPaaS.com (the TO flow)
        writes_per_round.append(world.writes() - before)
        if writes_per_round[-1] == 0 and world.ipaas_sim.customer(seeded.id)["version"] == version_sent:
            break
    print("iPaaS.com writes per round:", writes_per_round)
    assert writes_per_round[-1] == 0, f"no convergence: writes per round {writes_per_round}"
    assert len(writes_per_round) <= 3
    assert await world.poll() == []  # quiet afterwards: nothing changed on either side
    (customer,) = world.customers()
    assert customer["id"] == seeded.id and len(customer["addresses"]) == 1
    assert len(world.klaviyo_sim.store.profiles) == 1
    (profile,) = world.klaviyo_sim.store.profiles.values()
    assert profile.attributes["external_id"] == seeded.id
    assert world.link_of(profile.id) == seeded.id
    assert world.warnings.items == []


async def test_round_trip_profile_to_customer_to_profile_converges_without_an_echo_loop(world: World) -> None:
    from consumer.flows import profiles_from

    profile_id = world.profile(email="start@klaviyo.test", first_name="Kla", last_name="Vi",
                               location={"address1": "1 Start St", "city": "Denver", "country": "US"})
    await world.sync()  # Klaviyo -> iPaaS.com: a new Customer
    (customer,) = world.customers()
    from_ctx = world.ctx()
    sent_version = 0
    rounds = 0
    for rounds in range(1, 6):  # noqa: B007 - the count is asserted below
        customer = world.ipaas_sim.customer(customer["id"])
        if customer["version"] != sent_version:  # iPaaS.com emits the Customer change: the FROM flow runs
            record = await world.ipaas.fetch_record("customer", customer["id"])
            assert isinstance(record, Customer)
            action = "created" if sent_version == 0 else "updated"
            value = orjson.dumps({"scope": f"customer/{action}", "data": record.model_dump(mode="json")})
            await profiles_from.sync_profile(change_of(decode("customer", record.id.encode(), value, [])[0]), from_ctx)
            sent_version = customer["version"]
        before = world.writes()
        await world.sync()
        if world.writes() == before:
            break
    assert rounds <= 3
    assert await world.poll() == []
    assert list(world.klaviyo_sim.store.profiles) == [profile_id]  # the FROM flow linked, didn't duplicate
    assert world.klaviyo_sim.store.profiles[profile_id].attributes["external_id"] == customer["id"]
    (final,) = world.customers()
    assert final["id"] == customer["id"] and len(final["addresses"]) == 1
    assert world.warnings.items == []


# --- through the running service --------------------------------------------------------------------------------
async def test_the_service_consumes_the_pollers_topic_end_to_end(topic_space: TopicSpace, unique: str) -> None:
    from tests.support.service import running_service, service_settings

    async with KlaviyoSimulator(KlaviyoConfig(seed=9, validate_bodies=False)) as klaviyo_sim, \
            IpaasSimulator(SimulatorConfig(seed=9)) as ipaas_sim:
        created_at = datetime.now(UTC).replace(microsecond=0)
        klaviyo_sim.state.store = Store(clock=lambda: created_at)  # created == updated: "created" events
        settings = service_settings(
            topic_space, unique,
            klaviyo={"base_url": klaviyo_sim.base_url, "api_key": DEFAULT_API_KEY, "max_retries": 1},
            ipaas={"base_url": ipaas_sim.base_url, "api_token": ipaas_sim.token, "max_retries": 1},
            runtime={"retry_attempts": 3},
        )
        ipaas_sim.seed_customer(email_address="Near@Shop.test")
        good = klaviyo_sim.store.create_profile({"email": "good@shop.test", "first_name": "Good",
                                                  "location": {"city": "Oslo", "country": "NO"}}).id
        near = klaviyo_sim.store.create_profile({"email": "near@shop.test", "first_name": "Near"}).id
        no_email = klaviyo_sim.store.create_profile({"phone_number": "+14155550177"}).id
        ipaas_sim.faults = Faults(fail_next=[503], operations=["create_customer"])  # a transient failure
        async with running_service(settings) as service:
            from consumer.poller import open_poller

            async with KlaviyoClient(settings.klaviyo, ApiKeyAuth(DEFAULT_API_KEY)) as klaviyo, \
                    open_poller(settings, klaviyo=klaviyo, catalog=service.catalog,
                                start_at=datetime.now(UTC) - timedelta(minutes=1)) as poller:
                assert (await poller.run_once()).published == 3
            finished = await service.wait_finished(3)
            outcomes = {m.key.decode(): outcome for m, outcome in finished}
            assert outcomes == {good: "succeeded", near: "succeeded", no_email: "dead_lettered"}
            letters = await service.dead_letters("klaviyo-profile-changes", 1)
            log = await service.error_log(2)

        assert letters[0].key == no_email.encode()
        by_code = {entry["code"]: entry for entry in log}
        warning = by_code["COULD_NOT_LINK_TO_EXISTING_CUSTOMER"]
        assert (warning["message"], warning["severity"], warning["flow"]) == (
            COULD_NOT_LINK_TEXT, "warning", "add_profile_to_ipaas")
        assert warning["transfer"] == {"kind": "klaviyo_profile", "id": near, "event_type": "klaviyo_profile/created"}
        failure = by_code["ADDRESS_VALUE_COULD_NOT_BE_READ"]
        assert failure["flow"] == "add_profile_to_ipaas" and failure["dead_lettered"] is True
        assert "email_address" in failure["detail"]
        emails = sorted(c["email_address"] for c in ipaas_sim.store.snapshot()["customers"])
        assert emails == ["Near@Shop.test", "good@shop.test", "near@shop.test"]
        assert [r.status for r in ipaas_sim.received("create_customer")][:1] == [503]



# --- subscriptions TO iPaaS.com ------------------------------------------------------------------------------------
CONSENT_MAPPING = """
flow: {flow}
fields:
  email_address: {{path: attributes.email, required: true}}
  first_name: attributes.first_name
  custom_fields.Consent: attributes.subscriptions.email.marketing.consent
  custom_fields.SuppressedList: attributes.subscriptions.email.marketing.list_suppressions[0].list_id
"""


def consent_mappings(world: World, mapping: str = CONSENT_MAPPING) -> dict[str, MappingCollection]:
    mappings = dict(world.mappings)
    for flow in ("add_profile_to_ipaas", "update_profile_to_ipaas"):
        mappings[flow] = parse_collection(mapping.format(flow=flow), f"{flow}.yaml")
    return mappings


async def test_the_profiles_subscription_is_mapped_into_the_customer(world: World) -> None:
    mapping = CONSENT_MAPPING.split("  custom_fields.SuppressedList")[0]
    profile_id = world.profile(email="consent@shop.test", first_name="Con")
    world.klaviyo_sim.store.profiles[profile_id].email_consent = "SUBSCRIBED"
    events = await world.poll()
    assert events[0].record is not None and events[0].record.attributes.subscriptions is not None  # polled with them
    await world.sync(events, mappings=consent_mappings(world, mapping))
    (customer,) = world.customers()
    assert {f["name"]: f["value"] for f in customer["custom_fields"]}["Consent"] == "SUBSCRIBED"
    assert world.klaviyo_sim.received("get_profile") == []  # the listing carried them: no read per profile


async def test_an_event_without_subscriptions_reads_them_from_klaviyo(world: World) -> None:
    mapping = CONSENT_MAPPING.split("  custom_fields.SuppressedList")[0]
    profile_id = world.profile(email="bare@shop.test", first_name="Bare")
    world.klaviyo_sim.store.profiles[profile_id].email_consent = "UNSUBSCRIBED"
    bare = decode("klaviyo_profile", profile_id.encode(),
                  orjson.dumps({"id": profile_id, "email": "bare@shop.test"}), [])
    await world.sync(bare, mappings=consent_mappings(world, mapping))
    (read,) = world.klaviyo_sim.received("get_profile")
    assert read.query["additional-fields[profile]"] == "subscriptions"
    (customer,) = world.customers()
    assert {f["name"]: f["value"] for f in customer["custom_fields"]}["Consent"] == "UNSUBSCRIBED"


async def test_a_mapped_subscription_value_that_cannot_be_read_is_the_catalog_error(world: World) -> None:
    world.profile(email="nolist@shop.test", first_name="No")
    events = await world.poll()
    with pytest.raises(CatalogError) as caught:
        await world.sync(events, mappings=consent_mappings(world))
    error = caught.value
    assert error.entry is ADDRESS_VALUE_COULD_NOT_BE_READ and error.message == ADDRESS_NOT_READ_TEXT
    assert error.flow is Flow.ADD_PROFILE_TO_IPAAS and not error.retryable
    assert "list_suppressions[0]" in (error.detail or "")
    assert world.customers() == []
