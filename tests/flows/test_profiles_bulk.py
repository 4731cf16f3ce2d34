"""Add / Update Klaviyo Profile FROM iPaaS.com through the profile importer, against the Klaviyo simulator: a
backlog goes in bulk import jobs with the per-record path's linking rules, a sparse change goes alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumer.catalog import CatalogError, Flow
from consumer.flows.context import FlowContext
from consumer.flows.profiles_from import sync_profile
from consumer.klaviyo import KlaviyoClient, ProfileAttributes
from consumer.klaviyo.importing import ProfileImporter
from consumer.mapping import MappingCollection, load_collections, parse_collection
from simulators.klaviyo import Faults, KlaviyoSimulator

from .conftest import MakeContext, Warnings, change, customer

COULD_NOT_LINK = (
    "The integration could not automatically link this record to an existing Klaviyo profile by email address. "
    "This may result in duplicate profile records."
)
# The phone number as the source has it (no E.164 normalization): only Klaviyo can tell a bad one.
RAW_PHONE_MAPPING = """
flow: add_profile_from_ipaas
fields:
  email: {path: email_address, transforms: [trim]}
  first_name: {path: first_name, transforms: [trim]}
  phone_number: {path: phone_number, transforms: [trim]}
  external_id: {path: id, transforms: [text], required: true}
"""


@pytest.fixture
async def importer(klaviyo: KlaviyoClient) -> AsyncIterator[ProfileImporter]:
    async with ProfileImporter(klaviyo, first_poll_s=0.05) as imports:
        yield imports


@pytest.fixture
def bulk_ctx(make_ctx: MakeContext, importer: ProfileImporter) -> FlowContext:
    return make_ctx(profile_imports=importer)


def raw_phones() -> dict[str, MappingCollection]:
    mappings = dict(load_collections())
    mappings["add_profile_from_ipaas"] = parse_collection(RAW_PHONE_MAPPING)
    return mappings


def backlog(count: int, action: str = "created", **per_customer: dict[str, Any]) -> list[Any]:
    """``count`` customers C0..C<count-1> (phone numbers of their own); ``per_customer`` overrides some fields."""
    return [change("customer", action, customer(**{
        "id": f"C{n}", "email_address": f"c{n}@shop.test", "phone_number": f"+1555234{n:04d}",
        **per_customer.get(f"C{n}", {})})) for n in range(count)]


async def run_all(ctx: FlowContext, changes: list[Any]) -> dict[str, BaseException | None]:
    """Every change handled at once (as the runtime does for a backlog of distinct keys): outcome by customer id."""
    results = await asyncio.gather(*(sync_profile(c, ctx) for c in changes), return_exceptions=True)
    return {c.record_id: r for c, r in zip(changes, results, strict=True)}


def by_external_id(simulator: KlaviyoSimulator) -> dict[str, dict[str, Any]]:
    return {r.attributes["external_id"]: {"id": r.id, **r.attributes}
            for r in simulator.store.profiles.values() if r.attributes["external_id"]}


def job_rows(simulator: KlaviyoSimulator) -> list[dict[str, Any]]:
    return [row for request in simulator.received("bulk_import_profiles") if request.status == 202
            for row in request.body["data"]["attributes"]["profiles"]["data"]]


async def test_a_backlog_is_imported_in_jobs_and_each_refused_row_fails_alone(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, importer: ProfileImporter, warnings: Warnings
) -> None:
    ctx = make_ctx(profile_imports=importer, mappings=raw_phones())
    bad = {"C7": {"phone_number": "12345"}, "C21": {"phone_number": "+1 555"}, "C33": {"phone_number": "call me"}}
    outcomes = await run_all(ctx, backlog(40, **bad))

    failed = {cid: error for cid, error in outcomes.items() if error is not None}
    assert set(failed) == set(bad)
    for error in failed.values():
        assert isinstance(error, CatalogError)
        assert error.code == "PROFILE_COULD_NOT_BE_CREATED" and error.flow is Flow.ADD_PROFILE_FROM_IPAAS
        assert error.detail is not None and "field 'phone_number'" in error.detail
        assert "Invalid phone number format" in error.detail  # Klaviyo's own words
    profiles = by_external_id(simulator)
    assert set(profiles) == {f"C{n}" for n in range(40)} - set(bad)
    assert sorted(row["attributes"]["external_id"] for row in job_rows(simulator)) == sorted(f"C{n}" for n in range(40))
    assert 1 <= len(simulator.received("bulk_import_profiles")) <= 3  # shared, not one per customer
    assert simulator.received("create_profile") == [] and simulator.received("update_profile") == []
    assert simulator.received("get_errors_for_bulk_import_profiles_job")
    assert warnings.items == []


async def test_an_existing_profile_with_the_email_is_linked_not_duplicated(
    simulator: KlaviyoSimulator, bulk_ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    existing = await klaviyo.create_profile(ProfileAttributes(email="c5@shop.test", first_name="Old"))
    simulator.state.requests.clear()
    outcomes = await run_all(bulk_ctx, backlog(20))
    assert all(error is None for error in outcomes.values())
    profiles = by_external_id(simulator)
    assert len(simulator.store.profiles) == 20
    assert profiles["C5"]["id"] == existing.id and profiles["C5"]["first_name"] == "Ada"
    (row,) = [row for row in job_rows(simulator) if row["attributes"]["external_id"] == "C5"]
    assert row["id"] == existing.id  # the link, by id: Klaviyo's matching is not left to chance
    assert bulk_ctx.links.get("C5") == existing.id
    assert simulator.received("create_profile") == []
    assert warnings.items == []


async def test_a_profile_linked_to_another_customer_takes_the_per_record_path_and_warns(
    simulator: KlaviyoSimulator, bulk_ctx: FlowContext, klaviyo: KlaviyoClient, warnings: Warnings
) -> None:
    other = await klaviyo.create_profile(ProfileAttributes(email="c3@shop.test", external_id="X9"))
    simulator.state.requests.clear()
    outcomes = await run_all(bulk_ctx, backlog(20))
    assert all(error is None for error in outcomes.values())
    assert "C3" not in {row["attributes"]["external_id"] for row in job_rows(simulator)}
    assert simulator.store.profiles[other.id].attributes["external_id"] == "X9"  # not stolen
    (error, transfer), = warnings.items
    assert error.message == COULD_NOT_LINK and transfer.id == "C3"
    c3 = by_external_id(simulator)["C3"]
    assert c3["email"] is None and c3["phone_number"] == "+15552340003"  # separate, without the held email
    assert len(simulator.store.profiles) == 21


async def test_two_customers_sharing_an_email_are_never_in_flight_together(
    simulator: KlaviyoSimulator, bulk_ctx: FlowContext, warnings: Warnings
) -> None:
    outcomes = await run_all(bulk_ctx, backlog(20, C9={"email_address": "c4@shop.test"}))
    assert all(error is None for error in outcomes.values())
    profiles = by_external_id(simulator)
    assert set(profiles) == {f"C{n}" for n in range(20)}  # neither took the other's profile
    assert [p["email"] for p in profiles.values()].count("c4@shop.test") == 1
    assert warnings.codes == ["COULD_NOT_LINK_TO_EXISTING_PROFILE"]  # the later one, as the per-record path says


async def test_a_redelivered_backlog_updates_the_same_profiles_by_id(
    simulator: KlaviyoSimulator, make_ctx: MakeContext, importer: ProfileImporter, warnings: Warnings
) -> None:
    await run_all(make_ctx(profile_imports=importer), backlog(15))
    first = {cid: p["id"] for cid, p in by_external_id(simulator).items()}
    simulator.state.requests.clear()
    outcomes = await run_all(make_ctx(profile_imports=importer), backlog(
        15, "updated", **{f"C{n}": {"last_name": "King"} for n in range(15)}))
    assert all(error is None for error in outcomes.values())
    profiles = by_external_id(simulator)
    assert {cid: p["id"] for cid, p in profiles.items()} == first
    assert {p["last_name"] for p in profiles.values()} == {"King"}
    assert {row.get("id") for row in job_rows(simulator)} == set(first.values())
    assert warnings.items == []


async def test_a_sparse_change_takes_the_per_record_path(
    simulator: KlaviyoSimulator, bulk_ctx: FlowContext, warnings: Warnings
) -> None:
    await sync_profile(change("customer", "created", customer()), bulk_ctx)
    assert [r.operation for r in simulator.received()] == ["create_profile"]
    assert bulk_ctx.links.get("C1") == next(iter(simulator.store.profiles))
    assert warnings.items == []


async def test_a_customer_whose_lists_need_the_profile_id_takes_the_per_record_path(
    simulator: KlaviyoSimulator, bulk_ctx: FlowContext
) -> None:
    simulator.store.create_list("VIP")
    joins = {"custom_fields": [{"name": "LIST_VIP", "value": "true"}]}
    outcomes = await run_all(bulk_ctx, backlog(20, C2=joins))
    assert all(error is None for error in outcomes.values())
    assert "C2" not in {row["attributes"]["external_id"] for row in job_rows(simulator)}
    (vip,) = simulator.store.lists.values()
    assert vip.members == {by_external_id(simulator)["C2"]["id"]}


async def test_an_outage_while_following_a_job_reaches_every_waiting_record(
    simulator: KlaviyoSimulator, bulk_ctx: FlowContext
) -> None:
    simulator.faults = Faults(unauthorized=True, operations=["get_bulk_import_profiles_job"])
    outcomes = await run_all(bulk_ctx, backlog(20))
    errors = list(outcomes.values())
    assert all(isinstance(error, CatalogError) and error.outage is not None for error in errors)
    assert len({id(error) for error in errors}) == 20  # each record its own copy
