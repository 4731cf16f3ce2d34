"""Add / Update Klaviyo Profile FROM iPaaS.com against the Klaviyo simulator: calls, bodies, links, errors."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.catalog import CatalogError, Flow
from consumer.envelopes import ChangeEvent
from consumer.flows.context import FlowContext
from consumer.flows.links import ProfileLinks
from consumer.flows.profiles_from import sync_profile
from consumer.klaviyo import KlaviyoClient, KlaviyoConnectionError, KlaviyoRejected, ProfileAttributes
from consumer.mapping import MappingFileError, load_collections, parse_collection
from consumer.records import Customer
from consumer.transfers import TransferRef
from simulators.klaviyo import Faults, KlaviyoSimulator

from .conftest import MakeContext, Warnings, change, customer

PROFILE_COULD_NOT_BE_CREATED = (
    "The Klaviyo profile could not be created because a required mapping field is missing or incomplete."
)
PROFILE_COULD_NOT_BE_UPDATED = (
    "The Klaviyo profile could not be updated because a required mapping field is missing or incomplete."
)
COULD_NOT_LINK = (
    "The integration could not automatically link this record to an existing Klaviyo profile by email address. "
    "This may result in duplicate profile records."
)


def operations(simulator: KlaviyoSimulator) -> list[str]:
    return [request.operation or "" for request in simulator.received()]


def profiles(simulator: KlaviyoSimulator) -> list[dict[str, Any]]:
    return [{"id": record.id, **record.attributes, "location": record.location}
            for record in simulator.store.profiles.values()]


def created(**fields: Any) -> ChangeEvent:
    return change("customer", "created", customer(**fields))


def updated(**fields: Any) -> ChangeEvent:
    return change("customer", "updated", customer(**fields))


# --- add --------------------------------------------------------------------------------------------------------
async def test_add_creates_the_profile_with_one_call(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    await sync_profile(created(), ctx)
    assert operations(simulator) == ["create_profile"]
    body = simulator.received("create_profile")[0].body
    assert body == {"data": {"type": "profile", "attributes": {
        "email": "ada@shop.test", "first_name": "Ada", "last_name": "Lovelace", "phone_number": "+15552345678",
        "organization": "Analytical Engines", "external_id": "C1",
        "location": {"address1": "12 St James's Sq", "city": "London", "region": "LND", "country": "GB",
                     "zip": "SW1Y 4JH"},
    }}}
    (profile,) = profiles(simulator)
    assert ctx.links.get("C1") == profile["id"]
    assert warnings.items == []


async def test_redelivered_add_creates_no_second_profile(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, warnings: Warnings
) -> None:
    ctx = make_ctx()
    await sync_profile(created(), ctx)
    await sync_profile(created(), ctx)  # same process: the link cache makes it one PATCH
    assert operations(simulator) == ["create_profile", "update_profile"]
    simulator.state.requests.clear()
    await sync_profile(created(), make_ctx())  # after a restart: 409, read the holder (ours), PATCH it
    assert operations(simulator) == ["create_profile", "get_profile", "update_profile"]
    assert len(profiles(simulator)) == 1
    assert warnings.items == []


async def test_add_links_to_an_unlinked_profile_with_the_same_email(
    simulator: KlaviyoSimulator, ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    existing = await klaviyo.create_profile(ProfileAttributes(email="ada@shop.test", first_name="A."))
    simulator.state.requests.clear()
    await sync_profile(created(), ctx)
    assert operations(simulator) == ["create_profile", "get_profile", "update_profile"]
    (profile,) = profiles(simulator)
    assert profile["id"] == existing.id
    assert (profile["external_id"], profile["first_name"]) == ("C1", "Ada")
    assert simulator.received("update_profile")[0].path == f"/api/profiles/{existing.id}"
    assert ctx.links.get("C1") == existing.id
    assert warnings.items == []


async def test_add_when_the_email_belongs_to_another_customer_warns_and_creates_a_separate_profile(
    simulator: KlaviyoSimulator, ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    other = await klaviyo.create_profile(ProfileAttributes(email="ada@shop.test", external_id="C9"))
    simulator.state.requests.clear()
    event = created()
    await sync_profile(event, ctx)
    assert operations(simulator) == ["create_profile", "get_profile", "create_profile"]
    (error, transfer), = warnings.items
    assert error.message == COULD_NOT_LINK
    assert error.code == "COULD_NOT_LINK_TO_EXISTING_PROFILE" and error.flow is Flow.ADD_PROFILE_FROM_IPAAS
    assert error.detail is not None and other.id in error.detail and "ada@shop.test" not in error.detail
    assert transfer == TransferRef(kind="customer", id="C1", event_type="customer/created")
    second = simulator.received("create_profile")[1].body["data"]["attributes"]
    assert "email" not in second and second["external_id"] == "C1" and second["phone_number"] == "+15552345678"
    assert simulator.store.profiles[other.id].attributes["external_id"] == "C9"  # not stolen
    assert len(profiles(simulator)) == 2


async def test_add_warns_when_a_profile_has_the_email_in_another_case(
    simulator: KlaviyoSimulator, ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    existing = await klaviyo.create_profile(ProfileAttributes(email="ada@shop.test"))
    simulator.state.requests.clear()
    await sync_profile(created(email_address="  Ada@Shop.TEST "), ctx)
    assert operations(simulator) == ["create_profile", "get_profiles"]
    assert simulator.received("get_profiles")[0].query["filter"] == 'equals(email,"ada@shop.test")'
    (error, _), = warnings.items
    assert error.message == COULD_NOT_LINK and existing.id in (error.detail or "")
    assert len(profiles(simulator)) == 2  # the warning says so: a separate profile was created


async def test_the_near_duplicate_lookup_runs_only_for_emails_not_in_lower_case(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await sync_profile(created(email_address="Ada@shop.test"), ctx)
    await sync_profile(created(id="C2", email_address="bob@shop.test", phone_number=None), ctx)
    assert operations(simulator) == ["create_profile", "get_profiles", "create_profile"]


async def test_two_customers_sharing_a_phone_get_separate_profiles_and_the_phone_warning(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    await sync_profile(created(), ctx)
    await sync_profile(created(id="C2", email_address="bob@shop.test"), ctx)
    assert operations(simulator) == ["create_profile", "create_profile", "get_profile", "create_profile"]
    # the seed's "could not link ... by email address" is for an email conflict only
    assert warnings.codes == ["COULD_NOT_LINK_PROFILE_BY_PHONE"]
    assert "by phone number" in warnings.items[0][0].message
    assert "phone_number" in (warnings.items[0][0].detail or "")
    bob = simulator.store.profiles[ctx.links.get("C2") or ""].attributes
    assert (bob["email"], bob["phone_number"], bob["external_id"]) == ("bob@shop.test", None, "C2")


async def test_add_with_a_phone_and_no_email(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await sync_profile(created(email_address=None), ctx)
    (profile,) = profiles(simulator)
    assert (profile["email"], profile["phone_number"], profile["external_id"]) == (None, "+15552345678", "C1")


async def test_unicode_names_travel_unchanged(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await sync_profile(created(first_name="Zoë 李", last_name="Ñúñez-Åström", company="Ōkami 株式会社"), ctx)
    (profile,) = profiles(simulator)
    assert (profile["first_name"], profile["last_name"], profile["organization"]) == (
        "Zoë 李", "Ñúñez-Åström", "Ōkami 株式会社")


# --- update -----------------------------------------------------------------------------------------------------
async def test_steady_state_update_costs_one_call(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    await sync_profile(created(), ctx)
    simulator.state.requests.clear()
    await sync_profile(updated(first_name="Augusta Ada", email_address="ada@engines.test"), ctx)
    assert operations(simulator) == ["update_profile"]
    (profile,) = profiles(simulator)
    assert (profile["first_name"], profile["email"]) == ("Augusta Ada", "ada@engines.test")


async def test_update_after_a_restart_looks_the_link_up_once(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    await sync_profile(created(), make_ctx())
    simulator.state.requests.clear()
    ctx = make_ctx()
    await sync_profile(updated(last_name="King"), ctx)
    await sync_profile(updated(last_name="Byron"), ctx)
    assert operations(simulator) == ["get_profiles", "update_profile", "update_profile"]
    assert simulator.received("get_profiles")[0].query["filter"] == 'equals(external_id,"C1")'
    assert profiles(simulator)[0]["last_name"] == "Byron"


async def test_update_for_a_customer_never_sent_adds_it(
    simulator: KlaviyoSimulator, ctx: FlowContext, warnings: Warnings
) -> None:
    await sync_profile(updated(), ctx)
    assert operations(simulator) == ["get_profiles", "create_profile"]
    assert profiles(simulator)[0]["external_id"] == "C1"
    assert warnings.items == []


async def test_update_of_a_never_sent_customer_without_identifiers_is_an_add_error(ctx: FlowContext) -> None:
    with pytest.raises(CatalogError) as caught:
        await sync_profile(updated(email_address=None, phone_number=None), ctx)
    assert caught.value.message == PROFILE_COULD_NOT_BE_CREATED
    assert caught.value.flow is Flow.ADD_PROFILE_FROM_IPAAS


async def test_update_of_a_linked_customer_without_email_or_phone_keeps_them(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    await sync_profile(created(), ctx)
    await sync_profile(updated(email_address=None, phone_number=None, first_name="Ada B."), ctx)
    (profile,) = profiles(simulator)
    assert (profile["email"], profile["phone_number"], profile["first_name"]) == (
        "ada@shop.test", "+15552345678", "Ada B.")


async def test_update_whose_new_email_belongs_to_another_profile_warns_and_keeps_the_link(
    simulator: KlaviyoSimulator, ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    await sync_profile(created(), ctx)
    other = await klaviyo.create_profile(ProfileAttributes(email="shared@shop.test"))
    simulator.state.requests.clear()
    await sync_profile(updated(email_address="shared@shop.test", first_name="Adele"), ctx)
    assert operations(simulator) == ["update_profile", "get_profile", "update_profile"]
    (error, transfer), = warnings.items
    assert error.message == COULD_NOT_LINK and error.flow is Flow.UPDATE_PROFILE_FROM_IPAAS
    assert transfer.event_type == "customer/updated"
    mine = simulator.store.profiles[ctx.links.get("C1") or ""]
    assert (mine.attributes["email"], mine.attributes["first_name"]) == ("ada@shop.test", "Adele")
    assert simulator.store.profiles[other.id].attributes["external_id"] is None


async def test_update_with_a_stale_link_recovers(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    ctx.links.remember("C1", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
    await sync_profile(updated(), ctx)
    assert operations(simulator) == ["update_profile", "get_profiles", "create_profile"]
    assert ctx.links.get("C1") == profiles(simulator)[0]["id"]


async def test_update_mapping_without_external_id_finds_the_profile_by_email(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, klaviyo: KlaviyoClient
) -> None:
    existing = await klaviyo.create_profile(ProfileAttributes(email="ada@shop.test"))
    mappings = dict(load_collections())
    mappings["update_profile_from_ipaas"] = parse_collection(
        "flow: update_profile_from_ipaas\nfields:\n  email: email_address\n  title: {value: Countess}\n")
    simulator.state.requests.clear()
    await sync_profile(updated(), make_ctx(mappings=mappings))
    assert operations(simulator) == ["get_profiles", "update_profile"]
    assert simulator.store.profiles[existing.id].attributes["title"] == "Countess"


# --- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["created", "updated"])
async def test_no_email_and_no_phone_is_profile_could_not_be_created(
    simulator: KlaviyoSimulator, ctx: FlowContext, action: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        await sync_profile(change("customer", action, customer(email_address=None, phone_number="  ")), ctx)
    error = caught.value
    assert error.message == PROFILE_COULD_NOT_BE_CREATED
    assert error.code == "PROFILE_COULD_NOT_BE_CREATED" and error.flow is Flow.ADD_PROFILE_FROM_IPAAS
    assert not error.retryable and "email" in (error.detail or "")
    assert simulator.store.profiles == {}
    assert "create_profile" not in operations(simulator)


@pytest.mark.parametrize("email", ["ada.shop.test", "ada@shop", "ada @shop.test", "a@b@c.test", f"{'a' * 95}@x.test"])
async def test_malformed_email_is_refused_before_klaviyo(
    simulator: KlaviyoSimulator, ctx: FlowContext, email: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        await sync_profile(created(email_address=email), ctx)
    assert caught.value.message == PROFILE_COULD_NOT_BE_CREATED
    assert caught.value.detail == "field 'email': not a valid email address"
    assert simulator.received() == []


async def test_malformed_email_on_update_is_profile_could_not_be_updated(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    with pytest.raises(CatalogError) as caught:
        await sync_profile(updated(email_address="not-an-email"), ctx)
    assert caught.value.message == PROFILE_COULD_NOT_BE_UPDATED
    assert caught.value.code == "PROFILE_COULD_NOT_BE_UPDATED"
    assert caught.value.flow is Flow.UPDATE_PROFILE_FROM_IPAAS
    assert simulator.received() == []


async def test_unreadable_phone_on_update_is_profile_could_not_be_updated(ctx: FlowContext) -> None:
    with pytest.raises(CatalogError) as caught:
        await sync_profile(updated(phone_number="call me maybe"), ctx)
    assert caught.value.message == PROFILE_COULD_NOT_BE_UPDATED
    assert "phone_number" in (caught.value.detail or "") and "maybe" not in (caught.value.detail or "")


async def test_update_mapping_with_no_way_to_find_the_profile(make_ctx: MakeContext) -> None:
    mappings = dict(load_collections())
    mappings["update_profile_from_ipaas"] = parse_collection(
        "flow: update_profile_from_ipaas\nfields:\n  first_name: first_name\n")
    with pytest.raises(CatalogError) as caught:
        await sync_profile(updated(), make_ctx(mappings=mappings))
    assert caught.value.message == PROFILE_COULD_NOT_BE_UPDATED


def test_a_mapping_file_with_an_unknown_path_is_refused_with_its_line() -> None:
    text = "flow: add_profile_from_ipaas\nfields:\n  email: email_adress\n  external_id: id\n"
    with pytest.raises(MappingFileError) as caught:
        parse_collection(text, "add_profile_from_ipaas.yaml")
    assert caught.value.line == 3
    assert "email_adress" in str(caught.value) and "add_profile_from_ipaas.yaml, line 3" in str(caught.value)


# --- Klaviyo answers ------------------------------------------------------------------------------------------
async def test_a_request_klaviyo_rejects_is_error_calling_klaviyo(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    simulator.faults = Faults(fail_next=[400])
    with pytest.raises(KlaviyoRejected) as caught:
        await sync_profile(created(), ctx)
    error = caught.value
    assert error.message.startswith("Error calling Klaviyo (400 ")
    assert error.code == "KLAVIYO_REJECTED_REQUEST" and error.flow is Flow.ADD_PROFILE_FROM_IPAAS
    assert not error.retryable
    assert len(simulator.received("create_profile")) == 1  # a 400 is not retried


async def test_a_created_profile_klaviyo_does_not_return_is_error_calling_klaviyo_and_the_retry_links_it(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    simulator.faults = Faults(hollow_next=1, operations=["create_profile"])
    with pytest.raises(KlaviyoRejected) as caught:
        await sync_profile(created(), make_ctx())
    error = caught.value
    assert error.message == ("Error calling Klaviyo (Klaviyo answered 201 to POST /api/profiles without the profile "
                             "it should return)")
    assert error.flow is Flow.ADD_PROFILE_FROM_IPAAS and error.retryable and error.outage is None
    await sync_profile(created(), make_ctx())  # the next attempt: 409, and the profile the first one made is linked
    assert [r.status for r in simulator.received("create_profile")] == [201, 409]
    assert len(simulator.store.profiles) == 1


async def test_server_errors_and_throttling_are_retried_before_they_fail(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    simulator.faults = Faults(fail_next=[503, 429, 500])
    await sync_profile(created(), ctx)
    assert [r.status for r in simulator.received("create_profile")] == [503, 429, 500, 201]
    assert len(profiles(simulator)) == 1


async def test_persistent_server_errors_fail_the_transfer_as_retryable(
    simulator: KlaviyoSimulator, ctx: FlowContext
) -> None:
    simulator.faults = Faults(error_rates={503: 1.0})
    with pytest.raises(KlaviyoRejected) as caught:
        await sync_profile(updated(), ctx)
    error = caught.value
    assert error.message.startswith("Error calling Klaviyo (503 ")
    assert error.retryable and error.infrastructure and error.flow is Flow.UPDATE_PROFILE_FROM_IPAAS
    assert len(simulator.received()) == 4  # 1 + max_retries


async def test_connection_errors_are_retried_then_reported(simulator: KlaviyoSimulator, ctx: FlowContext) -> None:
    simulator.faults = Faults(drop_next=2)
    await sync_profile(created(), ctx)
    assert len(profiles(simulator)) == 1
    simulator.faults = Faults(drop_rate=1.0)
    with pytest.raises(KlaviyoConnectionError) as caught:
        await sync_profile(updated(id="C2", email_address="c2@shop.test"), ctx)
    error = caught.value
    assert error.message.startswith("An error occurred while contacting Klaviyo (")
    assert error.code == "KLAVIYO_CONNECTION_ERROR" and error.retryable
    assert error.flow is Flow.UPDATE_PROFILE_FROM_IPAAS


def test_the_link_cache_is_bounded() -> None:
    links = ProfileLinks(max_entries=2)
    links.remember("a", "1")
    links.remember("b", "2")
    assert links.get("a") == "1"  # a is now the most recent
    links.remember("c", "3")
    assert (links.get("a"), links.get("b"), links.get("c"), len(links)) == ("1", None, "3", 2)
    links.forget("a")
    assert links.get("a") is None and links.get(None) is None


def test_customer_fixture_is_a_valid_record() -> None:
    assert Customer.model_validate(customer()).primary_billing_address is not None
