"""The client's typed operations against the running simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumer.klaviyo import (
    KlaviyoClient,
    KlaviyoRejected,
    Location,
    NewEvent,
    PatchProperties,
    ProfileAttributes,
)
from simulators.klaviyo import KlaviyoSimulator


async def test_create_get_and_find_profile(client: KlaviyoClient, simulator: KlaviyoSimulator) -> None:
    created = await client.create_profile(
        ProfileAttributes(
            email="ada@shop.test", external_id="C-1", first_name="Ada", phone_number="+15005550006",
            location=Location(address1="1 Main St", city="Springfield", country="United States", zip="12345"),
            properties={"tier": "gold"},
        )
    )
    assert len(created.id) == 26
    assert created.attributes.created is not None and created.attributes.updated is not None
    fetched = await client.get_profile(created.id)
    assert fetched.attributes.email == "ada@shop.test"
    assert fetched.attributes.location is not None and fetched.attributes.location.city == "Springfield"
    assert fetched.attributes.properties == {"tier": "gold"}
    assert (await client.find_profile_by_email("ada@shop.test")).id == created.id  # type: ignore[union-attr]
    assert (await client.find_profile_by_external_id("C-1")).id == created.id  # type: ignore[union-attr]
    assert (await client.find_profile_by_phone_number("+15005550006")).id == created.id  # type: ignore[union-attr]
    assert await client.find_profile_by_email("nobody@shop.test") is None
    sent = simulator.received("get_profiles")[0]
    assert sent.query["filter"] == 'equals(email,"ada@shop.test")'


async def test_email_filter_values_are_quoted_and_escaped(client: KlaviyoClient, simulator: KlaviyoSimulator) -> None:
    odd = 'o"brien+tag@shop.test'
    await client.create_profile(ProfileAttributes(email=odd))
    found = await client.find_profile_by_email(odd)
    assert found is not None and found.attributes.email == odd


async def test_patch_clears_nulls_keeps_absent_and_merges_properties(client: KlaviyoClient) -> None:
    profile = await client.create_profile(
        ProfileAttributes(email="pat@shop.test", first_name="Pat", last_name="Lee", title="CTO",
                          location=Location(city="Oslo", zip="0150"), properties={"a": 1, "skus": ["x"]})
    )
    updated = await client.update_profile(
        profile.id,
        ProfileAttributes(first_name=None, organization="ACME", location=Location(city="Bergen"), properties={"b": 2}),
        patch_properties=PatchProperties(append={"skus": "y"}, unset="a"),
    )
    attrs = updated.attributes
    assert attrs.first_name is None  # sent as null: cleared
    assert attrs.last_name == "Lee" and attrs.title == "CTO"  # absent: kept
    assert attrs.organization == "ACME"
    assert attrs.location is not None and (attrs.location.city, attrs.location.zip) == ("Bergen", "0150")
    assert attrs.properties == {"b": 2, "skus": ["x", "y"]}


async def test_upsert_creates_then_updates(client: KlaviyoClient) -> None:
    first = await client.upsert_profile(ProfileAttributes(email="up@shop.test", first_name="U"))
    second = await client.upsert_profile(ProfileAttributes(email="up@shop.test", last_name="P"))
    assert first.created and not second.created
    assert second.profile.id == first.profile.id
    assert (second.profile.attributes.first_name, second.profile.attributes.last_name) == ("U", "P")
    by_id = await client.upsert_profile(ProfileAttributes(title="Boss"), profile_id=first.profile.id)
    assert not by_id.created and by_id.profile.attributes.title == "Boss"


async def test_upsert_with_identifiers_of_two_profiles_is_a_409(client: KlaviyoClient) -> None:
    a = await client.create_profile(ProfileAttributes(email="a@shop.test"))
    b = await client.create_profile(ProfileAttributes(phone_number="+15005550007"))
    with pytest.raises(KlaviyoRejected) as caught:
        await client.upsert_profile(ProfileAttributes(email="a@shop.test", phone_number="+15005550007"))
    assert caught.value.http_status == 409
    assert caught.value.duplicate_profile_id in {a.id, b.id}


async def test_profiles_updated_after_in_cursor_pages(client: KlaviyoClient, simulator: KlaviyoSimulator) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    ids = [(await client.create_profile(ProfileAttributes(email=f"p{i}@shop.test"))).id for i in range(7)]
    pages = [page async for page in client.iter_profiles_updated_after(since, page_size=3)]
    assert [len(p.profiles) for p in pages] == [3, 3, 1]
    assert [p.next_cursor is not None for p in pages] == [True, True, False]
    assert [profile.id for page in pages for profile in page.profiles] == ids  # oldest first, nothing twice
    resumed = await client.list_profiles_updated_after(since, page_size=3, cursor=pages[0].next_cursor)
    assert [p.id for p in resumed.profiles] == ids[3:6]
    later = await client.list_profiles_updated_after(datetime.now(UTC) + timedelta(minutes=1))
    assert later.profiles == [] and later.next_cursor is None
    query = simulator.received("get_profiles")[0].query
    assert query["sort"] == "updated" and query["filter"].startswith("greater-than(updated,")


async def test_events_are_accepted_and_deduplicated(client: KlaviyoClient, simulator: KlaviyoSimulator) -> None:
    placed = NewEvent(
        metric="Placed Order", profile=ProfileAttributes(email="buyer@shop.test"), unique_id="ORD-1", value=99.5,
        value_currency="USD", time=datetime(2025, 5, 1, 12, 0, tzinfo=UTC), properties={"OrderId": "ORD-1"},
    )
    await client.create_event(placed)
    await client.create_event(placed)  # a retry of the same order: 202 again, stored once
    await client.create_event(placed.model_copy(update={"metric": "Fulfilled Order"}))
    events = simulator.store.events
    assert [(e.metric_name, e.unique_id, e.value) for e in events] == [
        ("Placed Order", "ORD-1", 99.5), ("Fulfilled Order", "ORD-1", 99.5)
    ]
    buyer = await client.find_profile_by_email("buyer@shop.test")
    assert buyer is not None and buyer.id == events[0].profile_id  # the event created the profile


async def test_bulk_events_group_by_profile(client: KlaviyoClient, simulator: KlaviyoSimulator) -> None:
    events = [
        NewEvent(metric="Ordered Product", profile=ProfileAttributes(email=f"b{i % 2}@shop.test"),
                 unique_id=f"ORD-9:{i}", value=float(i), properties={"SKU": f"S{i}"})
        for i in range(6)
    ]
    assert await client.bulk_create_events(events) == 1
    body = simulator.received("bulk_create_events")[0].body
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries) == 2 and all(len(e["attributes"]["events"]["data"]) == 3 for e in entries)
    assert sorted(e.unique_id or "" for e in simulator.store.events) == [f"ORD-9:{i}" for i in range(6)]


async def test_more_than_a_thousand_bulk_events_are_split(client: KlaviyoClient, simulator: KlaviyoSimulator) -> None:
    events = [NewEvent(metric="Viewed", profile=ProfileAttributes(email="many@shop.test"), unique_id=str(i))
              for i in range(1001)]
    assert await client.bulk_create_events(events) == 2
    assert len(simulator.store.events) == 1001


async def test_bulk_profile_import_job_lifecycle(client: KlaviyoClient) -> None:
    profiles = [ProfileAttributes(email=f"bulk{i}@shop.test") for i in range(4)]
    profiles.append(ProfileAttributes(email="bad@shop.test", phone_number="12345"))
    job = await client.bulk_import_profiles(profiles, list_id="Y6nRLr")
    assert job.attributes.status == "queued" and job.attributes.total_count == 5 and not job.done
    seen = []
    while not job.done:
        job = await client.get_bulk_import_job(job.id)
        seen.append(job.attributes.status)
    assert seen == ["processing", "complete"]
    assert (job.attributes.completed_count, job.attributes.failed_count) == (4, 1)
    errors = await client.get_bulk_import_errors(job.id)
    assert len(errors) == 1 and errors[0].attributes.source == {
        "pointer": "/data/attributes/profiles/data/4/attributes/phone_number"}
    assert await client.find_profile_by_email("bulk3@shop.test") is not None


async def test_get_missing_profile_is_a_404_rejection(client: KlaviyoClient) -> None:
    with pytest.raises(KlaviyoRejected) as caught:
        await client.get_profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    error = caught.value
    assert (error.http_status, error.error_code, error.retryable) == (404, "not_found", False)


async def test_requests_carry_revision_jsonapi_and_auth_scheme(
    client: KlaviyoClient, simulator: KlaviyoSimulator
) -> None:
    await client.create_profile(ProfileAttributes(email="hdr@shop.test"))
    received = simulator.received("create_profile")[0]
    assert received.headers["revision"] == "2026-07-15"
    assert received.headers["content-type"] == "application/vnd.api+json"
    assert received.headers["accept"] == "application/vnd.api+json"
    assert received.auth_scheme == "Klaviyo-API-Key"
    assert "authorization" not in received.headers
