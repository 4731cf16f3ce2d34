"""Placed Order / Ordered Product events FROM iPaaS.com against the Klaviyo simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from consumer.catalog import CatalogError, Flow
from consumer.envelopes import ChangeEvent, PoisonPill, decode
from consumer.flows.context import FlowContext
from consumer.flows.orders_from import send_order_events
from consumer.flows.profiles_from import sync_profile
from consumer.ipaas import IpaasClient, IpaasRejected
from consumer.klaviyo import KlaviyoClient, KlaviyoConnectionError, KlaviyoRejected, ProfileAttributes
from consumer.mapping import load_collections, parse_collection
from consumer.settings import IpaasSettings
from consumer.transfers import TransferRef
from simulators.ipaas import Faults as IpaasFaults
from simulators.ipaas import IpaasSimulator
from simulators.ipaas import SimulatorConfig as IpaasConfig
from simulators.klaviyo import Faults, KlaviyoSimulator
from simulators.klaviyo.store import EventRecord
from tests.support.changes import change_of
from tests.support.sleeps import RecordedSleeps

from .conftest import FAST_BACKOFF, MakeContext, Warnings, change, customer, line, transaction

ORDER_EVENT_COULD_NOT_BE_CREATED = (
    "The Klaviyo order event could not be created because a required mapping field is missing or incomplete."
)
CUSTOMER_REQUIRED = (
    "The customer needed for this order could not be created, which prevented the order from transferring."
)
PRODUCT_EVENT_COULD_NOT_BE_CREATED = (
    "The Klaviyo ordered product event could not be created because a required mapping field is missing or "
    "incomplete."
)
PROFILE_COULD_NOT_BE_CREATED = (
    "The Klaviyo profile could not be created because a required mapping field is missing or incomplete."
)


def order(action: str = "created", **fields: Any) -> ChangeEvent:
    return change("transaction", action, transaction(**fields))


EVENT_OPERATIONS = frozenset({"create_event", "bulk_create_events"})


def operations(simulator: KlaviyoSimulator) -> list[str]:
    return [request.operation or "" for request in simulator.received()]


def profile_calls(simulator: KlaviyoSimulator) -> list[str]:
    """The requests besides the events' (which the batcher sends as single events or in jobs, as the quota has it)."""
    return [operation for operation in operations(simulator) if operation not in EVENT_OPERATIONS]


def named_profiles(simulator: KlaviyoSimulator) -> list[dict[str, Any]]:
    """The profile resource each accepted event request named (one per single event, one per job entry)."""
    named = []
    for request in simulator.received():
        if request.status != 202:
            continue
        if request.operation == "create_event":
            named.append(request.body["data"]["attributes"]["profile"]["data"])
        elif request.operation == "bulk_create_events":
            named.extend(entry["attributes"]["profile"]["data"]
                         for entry in request.body["data"]["attributes"]["events-bulk-create"]["data"])
    return named


def events(simulator: KlaviyoSimulator, metric: str | None = None) -> list[EventRecord]:
    return [event for event in simulator.store.events if metric is None or event.metric_name == metric]


async def linked(ctx: FlowContext, simulator: KlaviyoSimulator, **fields: Any) -> str:
    """Send the customer first (as the customer topic would), then forget the requests it cost."""
    await sync_profile(change("customer", "created", customer(**fields)), ctx)
    simulator.state.requests.clear()
    profile_id = ctx.links.get(fields.get("id", "C1"))
    assert profile_id is not None
    return profile_id


# --- the events -------------------------------------------------------------------------------------------------
async def test_order_for_a_linked_customer_costs_only_its_events(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    profile_id = await linked(ctx, simulator)
    await send_order_events(order(), ctx)
    assert profile_calls(simulator) == []
    (placed,) = events(simulator, "Placed Order")
    assert (placed.profile_id, placed.unique_id, placed.value) == (profile_id, "T1", 25.5)
    assert placed.time.isoformat() == "2025-03-04T05:06:07+00:00"
    address = {"FirstName": "Ada", "LastName": "Lovelace", "Address1": "12 St James's Sq", "City": "London",
               "RegionCode": "LND", "CountryCode": "GB", "Zip": "SW1Y 4JH", "Phone": "+442071234567"}
    assert placed.properties == {
        "OrderId": "SO-1001",
        "ItemNames": ["Item 1", "Item 2"],
        "DiscountValue": 0.0,
        "BillingAddress": address,
        "ShippingAddress": address,
        "Items": [
            {"ProductID": "SKU-1", "SKU": "SKU-1", "ProductName": "Item 1", "Quantity": 2.0, "ItemPrice": 5.0,
             "RowTotal": 10.0},
            {"ProductID": "SKU-2", "SKU": "SKU-2", "ProductName": "Item 2", "Quantity": 2.0, "ItemPrice": 5.0,
             "RowTotal": 15.5},
        ],
    }
    products = events(simulator, "Ordered Product")
    assert [(e.unique_id, e.value, e.profile_id) for e in products] == [
        ("T1:1:SKU-1", 10.0, profile_id), ("T1:2:SKU-2", 15.5, profile_id)]
    assert products[0].properties == {"OrderId": "SO-1001", "ProductID": "SKU-1", "SKU": "SKU-1",
                                      "ProductName": "Item 1", "Quantity": 2.0, "ItemPrice": 5.0, "RowTotal": 10.0}
    assert {orjson.dumps(named) for named in named_profiles(simulator)} == {
        orjson.dumps({"type": "profile", "id": profile_id, "attributes": {}})}


async def test_order_after_a_restart_looks_the_customer_up_once(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    await linked(make_ctx(), simulator)
    ctx = make_ctx()
    await send_order_events(order(), ctx)
    await send_order_events(order(id="T2"), ctx)
    assert profile_calls(simulator) == ["get_profiles"]
    assert simulator.received("get_profiles")[0].query["filter"] == 'equals(external_id,"C1")'
    assert len(events(simulator, "Placed Order")) == 2


async def test_redelivered_or_updated_order_creates_no_second_event(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    await linked(ctx, simulator)
    await send_order_events(order(), ctx)
    await send_order_events(order(), ctx)
    await send_order_events(order("updated", total="99.00"), ctx)
    assert len(events(simulator, "Placed Order")) == 1 and len(events(simulator, "Ordered Product")) == 2
    assert events(simulator, "Placed Order")[0].value == 25.5  # events are append-only
    assert len(simulator.store.profiles) == 1 and warnings.items == []


async def test_order_without_lines_sends_the_placed_order_alone(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    await send_order_events(order(lines=[]), ctx)
    assert operations(simulator) == ["create_event"]
    (placed,) = events(simulator)
    assert placed.metric_name == "Placed Order"
    assert (placed.properties["Items"], placed.properties["ItemNames"]) == ([], [])


async def test_order_with_500_lines_is_one_bulk_job(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await linked(ctx, simulator)
    lines = [line(n, extended_price=f"{n}.25") for n in range(1, 501)]
    await send_order_events(order(lines=lines, total="125250.00"), ctx)
    assert operations(simulator) == ["bulk_create_events"]
    products = events(simulator, "Ordered Product")
    assert len(products) == 500 and len({e.unique_id for e in products}) == 500
    assert products[499].value == 500.25
    assert len(events(simulator, "Placed Order")[0].properties["Items"]) == 500


async def test_order_with_1500_lines_is_chunked_into_bulk_jobs_of_1000(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    await send_order_events(order(lines=[line(n) for n in range(1, 1501)]), ctx)
    assert operations(simulator) == ["bulk_create_events", "bulk_create_events"]
    assert len(events(simulator)) == 1501


async def test_unicode_names_and_descriptions(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await linked(ctx, simulator)
    lines = [line(1, description="Crème brûlée — 抹茶", sku="ÇØDÉ-1")]
    await send_order_events(order(lines=lines, transaction_number="Nº-\uff11"), ctx)
    (product,) = events(simulator, "Ordered Product")
    assert (product.unique_id, product.properties["ProductName"]) == ("T1:1:ÇØDÉ-1", "Crème brûlée — 抹茶")
    assert events(simulator, "Placed Order")[0].properties["OrderId"] == "Nº-\uff11"


async def test_guest_order_names_its_profile_by_email(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await send_order_events(order(customer_id=None, email_address="guest@shop.test"), ctx)
    assert profile_calls(simulator) == []
    (profile,) = simulator.store.profiles.values()
    assert (profile.attributes["email"], profile.attributes["external_id"]) == ("guest@shop.test", None)
    assert {e.profile_id for e in events(simulator)} == {profile.id}


async def test_generate_events_off_sends_nothing(simulator: KlaviyoSimulator, make_ctx: MakeContext) -> None:
    await send_order_events(order(), make_ctx(generate_events=False))
    assert simulator.received() == []


# --- the customer ---------------------------------------------------------------------------------------------
async def test_order_for_an_unknown_customer_creates_it_from_the_transaction(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    await send_order_events(order(customer_id="C7"), ctx)
    assert profile_calls(simulator) == ["get_profiles", "create_profile"]
    (profile,) = simulator.store.profiles.values()
    attrs = profile.attributes
    assert (attrs["external_id"], attrs["email"], attrs["first_name"], attrs["last_name"], attrs["phone_number"]) == (
        "C7", "ada@shop.test", "Ada", "Lovelace", "+442071234567")
    assert profile.location["city"] == "London"
    assert {e.profile_id for e in events(simulator)} == {profile.id}
    assert warnings.items == []


async def test_an_order_never_overwrites_an_existing_customer(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    await linked(make_ctx(), simulator, first_name="Augusta")
    await send_order_events(order(), make_ctx())  # billing first name is "Ada"
    (profile,) = simulator.store.profiles.values()
    assert profile.attributes["first_name"] == "Augusta"
    assert "update_profile" not in operations(simulator)


async def test_order_links_the_customer_to_an_unlinked_profile_with_its_email(
    simulator: KlaviyoSimulator, ctx: FlowContext, klaviyo: KlaviyoClient
) -> None:
    existing = await klaviyo.create_profile(ProfileAttributes(email="ada@shop.test"))
    simulator.state.requests.clear()
    await send_order_events(order(), ctx)
    assert profile_calls(simulator) == ["get_profiles", "create_profile", "get_profile", "update_profile"]
    assert simulator.store.profiles[existing.id].attributes["external_id"] == "C1"
    assert {e.profile_id for e in events(simulator)} == {existing.id}


async def test_order_whose_email_belongs_to_another_customer_warns_under_the_customer(
    simulator: KlaviyoSimulator, ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    other = await klaviyo.create_profile(ProfileAttributes(email="ada@shop.test", external_id="C9"))
    await send_order_events(order(), ctx)
    (warning, transfer), = warnings.items
    assert warning.code == "COULD_NOT_LINK_TO_EXISTING_PROFILE" and transfer == TransferRef(kind="customer", id="C1")
    mine = ctx.links.get("C1")
    assert mine is not None and mine != other.id
    assert {e.profile_id for e in events(simulator)} == {mine}


async def test_customer_and_order_racing_make_one_profile(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    await asyncio.gather(sync_profile(change("customer", "created", customer()), ctx), send_order_events(order(), ctx))
    (profile,) = simulator.store.profiles.values()
    assert profile.attributes["external_id"] == "C1" and len(events(simulator)) == 3
    assert warnings.items == []


async def test_unknown_customer_without_identifiers_is_customer_required(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    billing = {"first_name": "No", "last_name": "Contact", "is_primary_billing": True}
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(customer_id="C9", email_address=None, addresses=[billing]), ctx)
    error = caught.value
    assert error.message == CUSTOMER_REQUIRED
    assert error.code == "CUSTOMER_REQUIRED_FOR_ORDER_COULD_NOT_BE_CREATED"
    assert error.flow is Flow.PLACED_ORDER_FROM_IPAAS and not error.retryable
    assert error.cause is not None and error.cause.message == PROFILE_COULD_NOT_BE_CREATED
    (logged, transfer), = warnings.items  # the customer's own error, under the customer's transfer
    assert logged is error.cause and transfer == TransferRef(kind="customer", id="C9")
    assert logged.flow is Flow.ADD_PROFILE_FROM_IPAAS
    assert operations(simulator) == ["get_profiles"]
    assert events(simulator) == []


async def test_unknown_customer_with_a_malformed_email_is_customer_required(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(email_address="ada@@shop"), ctx)
    assert caught.value.message == CUSTOMER_REQUIRED
    assert warnings.items[0][0].detail == "field 'email': not a valid email address"


async def test_klaviyo_refusing_the_customer_is_customer_required(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    simulator.faults = Faults(fail_next=[400], operations=["create_profile"])
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(), ctx)
    assert caught.value.message == CUSTOMER_REQUIRED
    (logged, transfer), = warnings.items
    assert isinstance(logged, KlaviyoRejected) and logged.message.startswith("Error calling Klaviyo (400 ")
    assert logged.flow is Flow.ADD_PROFILE_FROM_IPAAS and transfer.kind == "customer"
    assert caught.value.cause is logged
    assert events(simulator) == []


async def test_klaviyo_down_while_ensuring_the_customer_is_raised_as_is(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    simulator.faults = Faults(error_rates={503: 1.0})
    with pytest.raises(KlaviyoRejected) as caught:
        await send_order_events(order(), ctx)
    error = caught.value
    assert error.message.startswith("Error calling Klaviyo (503 ")
    assert error.retryable and error.infrastructure  # the runtime retries or pauses; not a customer error
    assert warnings.items == []


# --- the customer from iPaaS.com ----------------------------------------------------------------------------
@pytest.fixture
async def ipaas_sim() -> AsyncIterator[IpaasSimulator]:
    async with IpaasSimulator(IpaasConfig(seed=3)) as sim:
        yield sim


@pytest.fixture
async def ipaas(ipaas_sim: IpaasSimulator, sleeps: RecordedSleeps) -> AsyncIterator[IpaasClient]:
    settings = IpaasSettings(base_url=ipaas_sim.base_url, api_token=ipaas_sim.token, max_retries=1,
                             connect_timeout_s=2.0, read_timeout_s=2.0, total_timeout_s=3.0)
    async with IpaasClient(settings, backoff=FAST_BACKOFF, sleep=sleeps) as client:
        yield client


def platform_customer(ipaas_sim: IpaasSimulator, customer_id: str = "C1", **fields: Any) -> None:
    """The Customer as the platform holds it: not what the order's billing address says."""
    values = {"first_name": "Augusta Ada", "last_name": "King", "email_address": "ada.king@platform.test",
              "phone_number": "+14155550123", "company": "Analytical Society", **fields}
    ipaas_sim.seed_customer([{"address_1": "1 Platform Way", "city": "Ockham", "country": "GB",
                              "is_primary_billing": True}], customer_id=customer_id, **values)


async def test_an_unknown_customer_is_made_from_the_platform_customer(
    simulator: KlaviyoSimulator, ipaas_sim: IpaasSimulator, ipaas: IpaasClient, make_ctx: MakeContext,
    warnings: Warnings,
) -> None:
    platform_customer(ipaas_sim)
    ctx = make_ctx(ipaas=ipaas)
    await send_order_events(order(), ctx)
    await send_order_events(order(id="T2"), ctx)  # linked now: no read of iPaaS.com or Klaviyo's customer
    (profile,) = simulator.store.profiles.values()
    attrs = profile.attributes
    assert (attrs["external_id"], attrs["email"], attrs["first_name"], attrs["last_name"], attrs["phone_number"],
            attrs["organization"]) == ("C1", "ada.king@platform.test", "Augusta Ada", "King", "+14155550123",
                                       "Analytical Society")
    assert profile.location["city"] == "Ockham"
    assert [r.operation for r in ipaas_sim.received()] == ["get_customer", "list_customer_addresses"]
    assert profile_calls(simulator) == ["get_profiles", "create_profile"]
    assert {e.profile_id for e in events(simulator)} == {profile.id} and len(events(simulator)) == 6
    assert warnings.items == []


async def test_a_linked_customer_costs_no_read_of_ipaas(
    simulator: KlaviyoSimulator, ipaas_sim: IpaasSimulator, ipaas: IpaasClient, make_ctx: MakeContext
) -> None:
    ctx = make_ctx(ipaas=ipaas)
    await linked(ctx, simulator)
    await send_order_events(order(), ctx)
    assert ipaas_sim.received() == [] and len(events(simulator)) == 3


async def test_the_customers_error_describes_the_platform_record_and_orders_share_one_read(
    simulator: KlaviyoSimulator, ipaas_sim: IpaasSimulator, ipaas: IpaasClient, make_ctx: MakeContext,
    warnings: Warnings,
) -> None:
    platform_customer(ipaas_sim, email_address="ada.king@@platform")  # the order's own email is well formed
    ctx = make_ctx(ipaas=ipaas)
    outcomes = await asyncio.gather(*(send_order_events(order(id=f"T{n}"), ctx) for n in range(3)),
                                    return_exceptions=True)
    with pytest.raises(CatalogError) as later:
        await send_order_events(order(id="T9"), ctx)
    for error in [*outcomes, later.value]:
        assert isinstance(error, CatalogError) and error.message == CUSTOMER_REQUIRED
    assert {(logged.message, logged.detail, transfer) for logged, transfer in warnings.items} == {
        (PROFILE_COULD_NOT_BE_CREATED, "field 'email': not a valid email address", TransferRef(kind="customer",
                                                                                              id="C1"))}
    assert [r.operation for r in ipaas_sim.received()] == ["get_customer", "list_customer_addresses"]  # kept
    assert simulator.received("create_profile") == [] and events(simulator) == []


async def test_a_customer_ipaas_does_not_have_is_customer_required(
    simulator: KlaviyoSimulator, ipaas_sim: IpaasSimulator, ipaas: IpaasClient, make_ctx: MakeContext,
    warnings: Warnings,
) -> None:
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(customer_id="C404"), make_ctx(ipaas=ipaas))
    assert caught.value.message == CUSTOMER_REQUIRED
    (logged, transfer), = warnings.items
    assert isinstance(logged, IpaasRejected) and logged.http_status == 404
    assert logged.message == "Error calling iPaaS.com (iPaaS.com 404 Not Found: no Customer with this id)"
    assert transfer == TransferRef(kind="customer", id="C404") and caught.value.cause is logged
    assert simulator.received("create_profile") == [] and events(simulator) == []


@pytest.mark.parametrize("faults", [{"error_rates": {503: 1.0}}, {"unauthorized": True}, {"hollow_next": 5}])
async def test_ipaas_out_while_reading_the_customer_is_raised_as_is(
    simulator: KlaviyoSimulator, ipaas_sim: IpaasSimulator, ipaas: IpaasClient, make_ctx: MakeContext,
    warnings: Warnings, faults: dict[str, Any],
) -> None:
    platform_customer(ipaas_sim)
    ipaas_sim.faults = IpaasFaults(**faults)
    with pytest.raises(IpaasRejected) as caught:
        await send_order_events(order(), make_ctx(ipaas=ipaas))
    error = caught.value
    assert error.retryable and error.destination == "ipaas"  # the runtime retries, or waits for iPaaS.com
    assert (error.outage is not None) is ("hollow_next" not in faults)
    assert warnings.items == [] and events(simulator) == []


async def test_without_ipaas_or_a_customer_id_the_transaction_says_who_the_customer_is(
    simulator: KlaviyoSimulator, ipaas_sim: IpaasSimulator, ipaas: IpaasClient, make_ctx: MakeContext
) -> None:
    platform_customer(ipaas_sim, customer_id="C7")
    mappings = dict(load_collections())  # the profile reference is not the transaction's customer id
    mappings["placed_order_from_ipaas"] = parse_collection(
        "flow: placed_order_from_ipaas\nfields:\n  metric: {value: Placed Order}\n  unique_id: id\n"
        "  profile.external_id: {path: transaction_number}\n  profile.email: email_address\n"
        "  time: created_datetime\n")
    await send_order_events(order(customer_id=None, lines=[]), make_ctx(ipaas=ipaas, mappings=mappings))
    await send_order_events(order(id="T2", customer_id="C7", lines=[]), make_ctx())  # no iPaaS.com configured
    assert ipaas_sim.received() == []
    names = sorted((p.attributes["external_id"], p.attributes["first_name"]) for p in simulator.store.profiles.values())
    assert names == [("C7", "Ada"), ("SO-1001", "Ada")]  # the billing address's name, not the platform's


async def test_a_stale_link_is_recovered(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    ctx.links.remember("C1", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
    await send_order_events(order(), ctx)
    assert profile_calls(simulator) == ["get_profiles", "create_profile"]
    assert {r.status for r in simulator.received() if r.operation in EVENT_OPERATIONS} == {404, 202}
    (profile,) = simulator.store.profiles.values()
    assert len(events(simulator)) == 3 and {e.profile_id for e in events(simulator)} == {profile.id}


# --- bad input --------------------------------------------------------------------------------------------------
async def test_no_customer_and_no_email_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(customer_id=None, email_address="   "), ctx)
    error = caught.value
    assert error.message == ORDER_EVENT_COULD_NOT_BE_CREATED
    assert error.code == "ORDER_EVENT_COULD_NOT_BE_CREATED" and error.flow is Flow.PLACED_ORDER_FROM_IPAAS
    assert "profile reference" in (error.detail or "")
    assert simulator.received() == []


async def test_guest_with_a_malformed_email_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(customer_id=None, email_address="guest.shop.test"), ctx)
    assert caught.value.message == ORDER_EVENT_COULD_NOT_BE_CREATED
    assert caught.value.detail == "field 'profile.email': not a valid email address"
    assert simulator.received() == []


@pytest.mark.parametrize("total", ["-0.01", "-25.50"])
async def test_a_refund_with_a_negative_total_is_delivered(
    simulator: KlaviyoSimulator, ctx: FlowContext, total: str
) -> None:
    await send_order_events(order(total=total), ctx)
    [placed] = events(simulator, "Placed Order")
    assert placed.value == float(total)


@pytest.mark.parametrize("total", ["abc", "NaN", True, "1,000.00"])
def test_non_numeric_total_is_refused_when_the_record_is_read(total: Any) -> None:
    value = orjson.dumps({"scope": "transaction/created", "data": transaction(total=total)})
    with pytest.raises(PoisonPill) as caught:
        decode("transaction", b"T1", value, [])
    assert caught.value.reason == "schema_violation" and "total" in caught.value.detail


async def test_non_numeric_mapped_value_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    mappings = dict(load_collections())
    mappings["placed_order_from_ipaas"] = parse_collection(
        "flow: placed_order_from_ipaas\nfields:\n  metric: {value: Placed Order}\n  unique_id: id\n"
        "  value: transaction_number\n  profile.external_id: customer_id\n")
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(), make_ctx(mappings=mappings))
    assert caught.value.message == ORDER_EVENT_COULD_NOT_BE_CREATED
    assert caught.value.detail == "field 'value': the order total is not a number"
    assert simulator.received() == []


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ("  unique_id: id\n  profile.external_id: customer_id\n", "field 'metric': the event name is missing"),
        ("  metric: {value: Placed Order}\n  profile.external_id: customer_id\n",
         "field 'unique_id': the unique identifier is missing"),
        (f"  metric: {{value: {'x' * 128}}}\n  unique_id: id\n  profile.external_id: customer_id\n",
         "field 'metric': the event name is longer than 127 characters"),
    ],
)
async def test_order_mapping_without_name_or_id_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, fields: str, detail: str
) -> None:
    mappings = dict(load_collections())
    mappings["placed_order_from_ipaas"] = parse_collection(f"flow: placed_order_from_ipaas\nfields:\n{fields}")
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(), make_ctx(mappings=mappings))
    assert caught.value.message == ORDER_EVENT_COULD_NOT_BE_CREATED and caught.value.detail == detail
    assert simulator.received() == []


# --- the event's time: Klaviyo's window, and never "now" -------------------------------------------------------
IN_THE_FUTURE = (datetime.now(UTC) + timedelta(days=366)).isoformat()


@pytest.mark.parametrize(("created", "problem"), [
    ("1989-12-31T23:59:59Z", "the date is not after 1990-01-01, the earliest event time Klaviyo takes"),
    ("1990-01-01T00:00:00.900Z", "the date is not after 1990-01-01, the earliest event time Klaviyo takes"),
    (IN_THE_FUTURE, "the date is more than a year in the future, the latest event time Klaviyo takes"),
    (None, "the date of the transaction is missing or could not be read"),
    ("the day after tomorrow", "the date of the transaction is missing or could not be read"),
], ids=["before-1990", "1990-01-01-to-the-second", "over-a-year-ahead", "missing", "unreadable"])
async def test_an_order_date_outside_klaviyos_window_or_unreadable_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, ctx: FlowContext, created: str | None, problem: str
) -> None:
    await linked(ctx, simulator)
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(created_datetime=created), ctx)
    error = caught.value
    assert error.message == ORDER_EVENT_COULD_NOT_BE_CREATED and error.flow is Flow.PLACED_ORDER_FROM_IPAAS
    assert error.detail == f"field 'time' (path 'created_datetime'): {problem}"
    assert simulator.received() == [] and events(simulator) == []  # nothing sent, nothing dated "now"


async def test_the_edges_of_the_window_are_sent(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await linked(ctx, simulator)
    await send_order_events(order(created_datetime="1990-01-01T00:00:01Z"), ctx)
    soon = (datetime.now(UTC) + timedelta(days=364)).replace(microsecond=0)
    await send_order_events(order(id="T2", created_datetime=soon.isoformat()), ctx)
    assert [e.time for e in events(simulator, "Placed Order")] == [datetime(1990, 1, 1, 0, 0, 1, tzinfo=UTC), soon]


async def test_an_order_mapping_without_a_time_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    mappings = dict(load_collections())
    mappings["placed_order_from_ipaas"] = parse_collection(
        "flow: placed_order_from_ipaas\nfields:\n  metric: {value: Placed Order}\n  unique_id: id\n"
        "  profile.external_id: customer_id\n")
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(), make_ctx(mappings=mappings))
    assert caught.value.message == ORDER_EVENT_COULD_NOT_BE_CREATED
    assert caught.value.detail == "field 'time' is not mapped: the event needs the date of the transaction"
    assert simulator.received() == []


async def test_a_line_dated_outside_the_window_is_product_event_could_not_be_created(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    mappings = dict(load_collections())
    mappings["ordered_product_from_ipaas"] = parse_collection(
        "flow: ordered_product_from_ipaas\nfields:\n  metric: {value: Ordered Product}\n"
        "  unique_id: {paths: [transaction.id, sequence_number], transforms: [text, {join: ':'}]}\n"
        "  profile.external_id: transaction.customer_id\n  time: {path: line_info.shipped, transforms: [date]}\n")
    ctx = make_ctx(mappings=mappings)
    await linked(ctx, simulator)
    lines = [line(1, line_info={"shipped": "2025-03-05T00:00:00Z"}), line(2, line_info={"shipped": "1970-01-01"})]
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(lines=lines), ctx)
    error = caught.value
    assert error.message == PRODUCT_EVENT_COULD_NOT_BE_CREATED and error.flow is Flow.ORDERED_PRODUCT_FROM_IPAAS
    assert error.detail == ("line 2 (sequence 2): field 'time' (path 'line_info.shipped'): the date is not after "
                            "1990-01-01, the earliest event time Klaviyo takes")
    assert sorted(str(e.unique_id) for e in events(simulator)) == ["T1", "T1:1"]


@pytest.mark.parametrize("missing", [{}, {"id": None}, {"id": " "}])
async def test_a_transaction_without_an_id_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, ctx: FlowContext, missing: dict[str, Any]
) -> None:
    body = {**{name: value for name, value in transaction().items() if name != "id"}, **missing}
    (event,) = decode("transaction", None, orjson.dumps({"scope": "transaction/created", "data": body}), [])
    with pytest.raises(CatalogError) as caught:
        await send_order_events(change_of(event), ctx)
    error = caught.value
    assert error.message == ORDER_EVENT_COULD_NOT_BE_CREATED and error.flow is Flow.PLACED_ORDER_FROM_IPAAS
    assert error.detail == "field 'unique_id' path 'id': required value is missing or empty"
    assert not error.retryable and simulator.received() == []


async def test_transaction_without_an_id_reaching_the_mapping(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    mappings = dict(load_collections())
    mappings["placed_order_from_ipaas"] = parse_collection(
        "flow: placed_order_from_ipaas\nfields:\n  metric: {value: Placed Order}\n"
        "  unique_id: {path: transaction_parent_id, required: true}\n  profile.external_id: customer_id\n")
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(), make_ctx(mappings=mappings))
    assert caught.value.message == ORDER_EVENT_COULD_NOT_BE_CREATED
    assert "unique_id" in (caught.value.detail or "")


async def test_lines_without_a_usable_identifier_fail_after_the_rest_is_sent(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    lines = [line(1), line(2, sequence_number=None, sku=None), line(3), line(3)]
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(lines=lines), ctx)
    error = caught.value
    assert error.message == PRODUCT_EVENT_COULD_NOT_BE_CREATED
    assert error.code == "PRODUCT_EVENT_COULD_NOT_BE_CREATED" and error.flow is Flow.ORDERED_PRODUCT_FROM_IPAAS
    assert error.detail == (
        "line 2: field 'unique_id' does not identify the line: it repeats the order's; "
        "line 4 (sequence 3): field 'unique_id' does not identify the line: it repeats line 3's")
    assert len(events(simulator, "Placed Order")) == 1
    assert [e.unique_id for e in events(simulator, "Ordered Product")] == ["T1:1:SKU-1", "T1:3:SKU-3"]


async def test_a_discount_line_with_a_negative_total_is_delivered(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    await send_order_events(order(lines=[line(1), line(2, extended_price="-3.00")]), ctx)
    assert [e.unique_id for e in events(simulator, "Ordered Product")] == ["T1:1:SKU-1", "T1:2:SKU-2"]
    assert [e.value for e in events(simulator, "Ordered Product")][1] == -3.0


async def test_redelivery_after_fixing_a_line_adds_only_that_line(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    with pytest.raises(CatalogError):
        await send_order_events(order(lines=[line(1), line(2), line(2)]), ctx)  # the same line twice
    await send_order_events(order("updated", lines=[line(1), line(2)]), ctx)
    assert len(events(simulator, "Placed Order")) == 1
    assert [e.unique_id for e in events(simulator, "Ordered Product")] == ["T1:1:SKU-1", "T1:2:SKU-2"]


# --- Klaviyo answers ------------------------------------------------------------------------------------------
async def test_klaviyo_rejecting_the_events_is_error_calling_klaviyo(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    simulator.state.store.earliest_event_year = 2000  # Klaviyo's docs table: stricter than the spec's 1990
    with pytest.raises(KlaviyoRejected) as caught:
        await send_order_events(order(created_datetime="1995-01-01T00:00:00Z"), ctx)
    error = caught.value
    assert error.message.startswith("Error calling Klaviyo (400 invalid: The event time must be after 2000")
    assert error.flow is Flow.PLACED_ORDER_FROM_IPAAS and not error.retryable
    assert events(simulator) == []


# Guests named by phone number too, which only Klaviyo checks (E.164).
BY_PHONE = "  profile.email: {path: email_address}\n  profile.phone_number: {path: billing_address.phone_number}\n"


@pytest.mark.parametrize("lines", [0, 200])  # a single event; a bulk job of 201
async def test_a_profile_reference_klaviyo_refuses_is_order_event_could_not_be_created(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, lines: int
) -> None:
    mappings = dict(load_collections())
    mappings["placed_order_from_ipaas"] = parse_collection(
        f"flow: placed_order_from_ipaas\nfields:\n  metric: {{value: Placed Order}}\n  unique_id: id\n{BY_PHONE}"
        "  time: {path: created_datetime, transforms: [date]}\n")
    billing = {**transaction()["addresses"][0], "phone_number": "555-0100"}
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(customer_id=None, addresses=[billing], lines=[line(n) for n in range(lines)]),
                                make_ctx(mappings=mappings))
    error = caught.value
    assert error.message == ORDER_EVENT_COULD_NOT_BE_CREATED and error.flow is Flow.PLACED_ORDER_FROM_IPAAS
    assert error.detail == ("field 'profile.phone_number': Klaviyo refused it (400 invalid: Invalid phone number "
                            "format (Example of a valid format: +12345678901))")
    assert isinstance(error.cause, KlaviyoRejected) and error.cause.http_status == 400
    assert events(simulator) == []
    assert {r.operation for r in simulator.received()} == {"bulk_create_events" if lines else "create_event"}


@pytest.mark.parametrize("lines", [1, 200])  # single events (independent requests); one bulk job
async def test_a_line_klaviyo_refuses_is_product_event_could_not_be_created(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, lines: int
) -> None:
    mappings = dict(load_collections())
    mappings["ordered_product_from_ipaas"] = parse_collection(
        "flow: ordered_product_from_ipaas\nfields:\n  metric: {value: Ordered Product}\n"
        "  unique_id: {paths: [transaction.id, sequence_number], transforms: [text, {join: ':'}]}\n"
        "  profile.email: {path: transaction.email_address}\n  profile.phone_number: {value: '555-0100'}\n"
        "  time: {path: transaction.created_datetime}\n")
    with pytest.raises(CatalogError) as caught:
        await send_order_events(order(customer_id=None, lines=[line(n + 1) for n in range(lines)]),
                                make_ctx(mappings=mappings))
    error = caught.value
    assert error.message == PRODUCT_EVENT_COULD_NOT_BE_CREATED and error.flow is Flow.ORDERED_PRODUCT_FROM_IPAAS
    assert (error.detail or "").startswith("line 1 (sequence 1): field 'profile.phone_number': Klaviyo refused it")
    assert events(simulator, "Ordered Product") == []
    # a job is all or nothing; single events are not: the Placed Order went on its own (a resend is a no-op)
    assert len(events(simulator, "Placed Order")) == (0 if lines > 1 else 1)


async def test_throttling_and_server_errors_on_the_events_are_retried(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    simulator.faults = Faults(fail_next=[429, 502])
    await send_order_events(order(), ctx)
    statuses = [r.status for r in simulator.received() if r.operation in EVENT_OPERATIONS]
    assert sorted(statuses, key=str)[-2:] == [429, 502] and statuses.count(202) == len(statuses) - 2
    assert len(events(simulator)) == 3


async def test_connection_errors_on_the_events_are_retried_then_reported(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await linked(ctx, simulator)
    simulator.faults = Faults(drop_next=1)
    await send_order_events(order(), ctx)
    assert len(events(simulator)) == 3
    simulator.faults = Faults(drop_rate=1.0)
    with pytest.raises(KlaviyoConnectionError) as caught:
        await send_order_events(order(id="T2"), ctx)
    assert caught.value.message.startswith("An error occurred while contacting Klaviyo (")
    assert caught.value.flow is Flow.PLACED_ORDER_FROM_IPAAS and caught.value.retryable
