"""Request envelopes: what goes on the wire for each operation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from pydantic import ValidationError

from consumer.klaviyo.models import (
    BULK_JOB_OVERHEAD,
    EncodedEvent,
    EventCreateQuery,
    EventsBulkCreateJob,
    Location,
    NewEvent,
    PatchProperties,
    Profile,
    ProfileAttributes,
    ProfileCreateQuery,
    ProfileImportJobCreateQuery,
    ProfilePartialUpdateQuery,
    ProfileUpsertQuery,
    bulk_job_body,
    bulk_job_layout,
    event_body,
    event_time_problem,
    profile_body,
)


def test_create_sends_only_what_was_set_and_never_read_only_fields() -> None:
    attrs = ProfileAttributes(email="a@b.test", first_name="A", location=Location(city="Oslo"),
                              created=datetime(2024, 1, 1, tzinfo=UTC))
    assert orjson.loads(ProfileCreateQuery.build(attrs).to_json()) == {
        "data": {"type": "profile", "attributes": {"email": "a@b.test", "first_name": "A",
                                                   "location": {"city": "Oslo"}}}
    }


def test_patch_keeps_explicit_nulls_and_carries_meta() -> None:
    body = ProfilePartialUpdateQuery.build(
        "01ABC", ProfileAttributes(last_name=None, title="CTO"), PatchProperties(unset=["a", "b"])
    ).to_dict()
    assert body == {"data": {"type": "profile", "id": "01ABC", "attributes": {"last_name": None, "title": "CTO"},
                             "meta": {"patch_properties": {"unset": ["a", "b"]}}}}


def test_upsert_with_and_without_id() -> None:
    assert "id" not in ProfileUpsertQuery.build(ProfileAttributes(email="a@b.test")).to_dict()["data"]
    assert ProfileUpsertQuery.build(ProfileAttributes(), profile_id="01X").to_dict()["data"]["id"] == "01X"


def test_event_body_shape_and_naive_time_is_utc() -> None:
    event = NewEvent(metric="Placed Order", profile=ProfileAttributes(email="a@b.test"), unique_id="O-1",
                     value=12.5, value_currency="USD", time=datetime(2025, 1, 2, 3, 4, 5),
                     properties={"OrderId": "O-1"}, backfill=True)
    attrs = EventCreateQuery.build(event).to_dict()["data"]["attributes"]
    assert attrs == {
        "properties": {"OrderId": "O-1"},
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "time": "2025-01-02T03:04:05+00:00",
        "value": 12.5,
        "value_currency": "USD",
        "unique_id": "O-1",
        "backfill": True,
        "profile": {"data": {"type": "profile", "attributes": {"email": "a@b.test"}}},
    }


def test_event_by_profile_id() -> None:
    body = EventCreateQuery.build(NewEvent(metric="M", profile_id="01P")).to_dict()
    assert body["data"]["attributes"]["profile"] == {"data": {"type": "profile", "id": "01P", "attributes": {}}}


@pytest.mark.parametrize("kwargs", [{"metric": "M"}, {"metric": "", "profile_id": "x"},
                                    {"metric": "x" * 128, "profile_id": "x"}])
def test_invalid_events_are_refused_before_sending(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        NewEvent(**kwargs)


def test_bulk_events_group_by_profile_and_refuse_repeated_unique_ids() -> None:
    a = ProfileAttributes(email="a@b.test")
    b = ProfileAttributes(email="b@b.test")
    events = [NewEvent(metric="M", profile=p, unique_id=str(i)) for i, p in enumerate([a, b, a])]
    entries = EventsBulkCreateJob.build(events).to_dict()["data"]["attributes"]["events-bulk-create"]["data"]
    assert [len(e["attributes"]["events"]["data"]) for e in entries] == [2, 1]
    with pytest.raises(ValueError, match="unique_id"):
        EventsBulkCreateJob.build([NewEvent(metric="M", profile=a, unique_id="1")] * 2)
    with pytest.raises(ValueError):
        EventsBulkCreateJob.build([NewEvent(metric="M", profile=a)] * 1001)
    with pytest.raises(ValueError):
        EventsBulkCreateJob.build([])


def test_bulk_import_limits_and_list() -> None:
    body = ProfileImportJobCreateQuery.build([ProfileAttributes(email="a@b.test")], list_id="Y6nRLr").to_dict()
    assert body["data"]["relationships"] == {"lists": {"data": [{"type": "list", "id": "Y6nRLr"}]}}
    assert "relationships" not in ProfileImportJobCreateQuery.build([ProfileAttributes(email="a@b.test")]).to_dict()[
        "data"
    ]
    with pytest.raises(ValueError):
        ProfileImportJobCreateQuery.build([ProfileAttributes(email="a@b.test")] * 10_001)


def test_profile_response_tolerates_unknown_fields() -> None:
    profile = Profile.model_validate({
        "type": "profile", "id": "01P", "links": {"self": "x"}, "relationships": {},
        "attributes": {"email": "a@b.test", "hashed_email": "zzz", "location": {"city": "Oslo", "new": 1},
                       "updated": "2025-01-01T00:00:00+00:00"},
    })
    assert profile.attributes.location is not None and profile.attributes.location.city == "Oslo"
    assert profile.attributes.updated == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_bulk_job_writes_each_event_as_a_single_event_request_would() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    events = [
        NewEvent(metric="Placed Order", profile_id="01P", unique_id="T1", time=when, value=25.5, value_currency="USD",
                 properties={"Total": Decimal("25.50"), "At": when, "Items": [{"SKU": "A", "Qty": 2.0}], "Note": "é"}),
        NewEvent(metric="Ordered Product", profile_id="01P", unique_id="T1:1", properties={}),
        NewEvent(metric="Placed Order", profile=ProfileAttributes(email="g@b.test", first_name="G"), unique_id="T2",
                 backfill=True),
    ]
    encoded = [EncodedEvent.of(event) for event in events]
    body = orjson.loads(bulk_job_body(encoded))
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert bulk_job_layout(encoded) == [[0, 1], [2]]
    for entry, positions in zip(entries, bulk_job_layout(encoded), strict=True):
        for written, position in zip(entry["attributes"]["events"]["data"], positions, strict=True):
            single = EventCreateQuery.build(events[position]).to_dict()["data"]["attributes"]
            assert entry["attributes"]["profile"] == single.pop("profile")
            assert written == {"type": "event", "attributes": single}
    assert sum(e.size for e in encoded) + BULK_JOB_OVERHEAD >= len(bulk_job_body(encoded))
    assert 0 <= encoded[2].size + BULK_JOB_OVERHEAD - len(bulk_job_body(encoded[2:])) <= 2  # its commas


def test_the_fast_bodies_are_the_bytes_the_envelope_models_write() -> None:
    attrs = ProfileAttributes(email="a@b.test", first_name="Å", phone_number=None, location=Location(city="Oslo"),
                              properties={"n": Decimal("1.50"), "at": datetime(2025, 1, 2, tzinfo=UTC)},
                              created=datetime(2024, 1, 1, tzinfo=UTC))
    patch = PatchProperties(append={"tags": "x"}, unset="old")
    assert profile_body(attrs) == ProfileCreateQuery.build(attrs).to_json()
    assert profile_body(attrs, profile_id="01P", patch_properties=patch) == ProfilePartialUpdateQuery.build(
        "01P", attrs, patch).to_json()
    assert profile_body(attrs, profile_id="01P") == ProfileUpsertQuery.build(attrs, profile_id="01P").to_json()
    assert profile_body(ProfileAttributes()) == ProfileCreateQuery.build(ProfileAttributes()).to_json()
    when = datetime(2025, 3, 4, 5, 6, 7)
    for event in (
        NewEvent(metric="Placed Order", profile_id="01P", unique_id="T1", time=when, value=25.5, value_currency="USD",
                 properties={"Total": Decimal("25.50"), "At": when, "Items": [{"SKU": "A", "Qty": 2.0}], "é": "ü"}),
        NewEvent(metric="M", profile=ProfileAttributes(email="g@b.test", location=Location(zip="0150")),
                 backfill=False, value=float("inf")),
    ):
        assert event_body(event) == EventCreateQuery.build(event).to_json()


NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("moment", "accepted"), [
    (datetime(1990, 1, 1, tzinfo=UTC), False),  # "after the year 1990" begins: not after it
    (datetime(1990, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), False),  # truncated to the second first
    (datetime(1990, 1, 1, 0, 0, 1, tzinfo=UTC), True),
    (datetime(1990, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), False),  # 1989-12-31T23:30Z
    (datetime(1990, 1, 1), False),  # naive: UTC
    (NOW, True),
    (NOW + timedelta(days=365), True),
    (NOW + timedelta(days=365, seconds=1), False),
])
def test_klaviyos_event_time_window(moment: datetime, accepted: bool) -> None:
    assert (event_time_problem(moment, NOW) is None) is accepted
