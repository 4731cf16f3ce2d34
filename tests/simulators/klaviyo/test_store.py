"""The simulator's account rules, in-process."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulators.klaviyo.store import ApiError, Store, paginate


def event(email: str = "e@shop.test", name: str = "Placed Order", **extra: object) -> dict[str, object]:
    return {"properties": {}, "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
            "profile": {"data": {"type": "profile", "attributes": {"email": email}}}, **extra}


def test_identifiers_are_unique_and_409_names_the_holder() -> None:
    store = Store()
    a = store.create_profile({"email": "a@shop.test", "external_id": "X"})
    for attrs in ({"email": "a@shop.test"}, {"external_id": "X", "email": "new@shop.test"}):
        with pytest.raises(ApiError) as caught:
            store.create_profile(attrs)
        assert caught.value.status == 409 and caught.value.meta == {"duplicate_profile_id": a.id}


def test_create_needs_an_identifier_and_valid_formats() -> None:
    store = Store()
    for attrs, pointer in (({"first_name": "x"}, "/data/attributes"),
                           ({"email": "not-an-email"}, "/data/attributes/email"),
                           ({"phone_number": "5551234"}, "/data/attributes/phone_number")):
        with pytest.raises(ApiError) as caught:
            store.create_profile(attrs)
        assert caught.value.status == 400 and caught.value.pointer == pointer


def test_clearing_an_identifier_frees_it() -> None:
    store = Store()
    a = store.create_profile({"email": "a@shop.test"})
    store.update_profile(a.id, {"email": None, "external_id": "A"}, None)
    b = store.create_profile({"email": "a@shop.test"})
    assert b.id != a.id and store.owner("email", "a@shop.test") == b.id and store.owner("external_id", "A") == a.id


def test_upsert_matches_email_then_external_id_then_phone() -> None:
    store = Store()
    a = store.create_profile({"external_id": "X"})
    record, created = store.upsert_profile(None, {"external_id": "X", "email": "x@shop.test"}, None)
    assert (record.id, created) == (a.id, False) and record.attributes["email"] == "x@shop.test"
    with pytest.raises(ApiError) as caught:
        store.upsert_profile("01MISSING", {"email": "y@shop.test"}, None)
    assert caught.value.status == 404 and caught.value.pointer == "/data/"


def test_patch_properties_append_unappend_unset() -> None:
    store = Store()
    p = store.create_profile({"email": "p@shop.test", "properties": {"skus": "1", "keep": True, "gone": 1}})
    store.update_profile(p.id, {}, {"patch_properties": {"append": {"skus": ["2", "3"], "new": "n"},
                                                         "unappend": {"skus": "2"}, "unset": ["gone"]}})
    assert p.properties == {"skus": ["1", "3"], "keep": True, "new": ["n"]}


def test_event_dedup_by_unique_id_or_second() -> None:
    store = Store()
    assert store.create_event(event(unique_id="1"))
    assert not store.create_event(event(unique_id="1"))
    assert store.create_event(event(unique_id="1", name="Other"))
    assert store.create_event(event(email="other@shop.test", unique_id="1"))
    t = "2025-01-01T10:00:00.100000+00:00"
    assert store.create_event(event(time=t))
    assert not store.create_event(event(time="2025-01-01T10:00:00.900000+00:00"))  # same second, no unique_id
    assert store.create_event(event(time="2025-01-01T10:00:01+00:00"))
    assert len(store.events) == 5
    assert store.events[3].time == datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def test_event_profile_upsert_does_not_steal_identifiers() -> None:
    store = Store()
    a = store.create_profile({"email": "a@shop.test"})
    b = store.create_profile({"phone_number": "+15005550006"})
    store.create_event({**event("a@shop.test"), "profile": {"data": {"type": "profile", "attributes": {
        "email": "a@shop.test", "phone_number": "+15005550006", "first_name": "Ann"}}}})
    assert store.events[0].profile_id == a.id
    assert a.attributes["first_name"] == "Ann" and a.attributes["phone_number"] is None
    assert store.owner("phone_number", "+15005550006") == b.id
    assert a.last_event_date is not None


def bulk_entry(email: str, *unique_ids: str, name: str = "Ordered Product") -> dict[str, object]:
    return {"type": "event-bulk-create", "attributes": {
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
        "events": {"data": [{"type": "event", "attributes": {
            "properties": {}, "unique_id": u, "metric": {"data": {"type": "metric", "attributes": {"name": name}}}}}
            for u in unique_ids]}}}


def test_bulk_events_are_all_or_nothing() -> None:
    store = Store()
    with pytest.raises(ApiError) as caught:
        store.bulk_create_events([bulk_entry("a@shop.test", "1", "2"), bulk_entry("b@shop.test", "3", "3")])
    assert caught.value.status == 400 and caught.value.pointer is not None
    assert caught.value.pointer.endswith("/1/attributes/events/data/1/attributes/unique_id")
    assert store.events == [] and store.profiles == {}
    with pytest.raises(ApiError):
        store.bulk_create_events([bulk_entry("a@shop.test", *map(str, range(1001)))])
    assert store.bulk_create_events([bulk_entry("a@shop.test", "1", "2"), bulk_entry("a@shop.test", "3")]) == 3


def test_bulk_import_limits() -> None:
    store = Store()
    with pytest.raises(ApiError):
        store.create_import_job([{"type": "profile", "attributes": {"email": "a@shop.test"}}] * 10_001, [], 100_000)
    with pytest.raises(ApiError) as caught:
        store.create_import_job([{"type": "profile", "attributes": {"properties": {"x": "y" * 200}}}], [], 100)
    assert caught.value.pointer == "/data/attributes/profiles/data/0"


def test_keyset_pages_survive_inserts_between_pages() -> None:
    store = Store()
    ids = [store.create_profile({"email": f"k{i}@shop.test"}).id for i in range(4)]
    first, cursor = paginate(store.profiles.values(), "id", False, 2, None)
    store.create_profile({"email": "late@shop.test"})
    second, _ = paginate(store.profiles.values(), "id", False, 2, cursor)
    assert [r.id for r in first] == ids[:2] and [r.id for r in second] == ids[2:]
