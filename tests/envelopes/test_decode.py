"""decode(): every envelope -> the same typed change event; anything else -> a poison pill, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.envelopes import Action, ChangeEvent, PoisonPill, decode
from consumer.records import Customer, KlaviyoProfile, Transaction
from tests.envelopes.helpers import (
    CUSTOMER,
    DATA,
    ENVELOPES,
    EXPECTED_CUSTOMER,
    EXPECTED_FORMAT,
    LONG,
    TRANSACTION,
    Envelope,
    as_json,
    cloudevent_binary,
    cloudevent_structured,
    debezium_bare,
    debezium_event,
    debezium_flattened,
    debezium_schema_wrapped,
    outbox_routed,
    outbox_unrouted,
    pill_of,
    plain_event_type_wrapper,
    plain_with_scope_header,
)


@pytest.mark.parametrize("name", list(ENVELOPES))
def test_every_envelope_decodes_to_the_same_customer_event(name: str) -> None:
    key, value, headers = ENVELOPES[name]()
    [event] = decode("customer", key, value, headers)
    assert (event.kind, event.action, event.record_id, event.record) == (
        "customer",
        Action.CREATED,
        "1001",
        EXPECTED_CUSTOMER,
    )
    assert event.format is EXPECTED_FORMAT[name]
    assert event.event_type == "customer/created"
    assert isinstance(event.record, Customer)
    # unicode and a 10,000-character value arrive unchanged
    assert event.record.comment == LONG and event.record.last_name == "Ñúñez-李"


def test_event_ids_and_times_per_envelope() -> None:
    [debezium] = decode("customer", *debezium_bare())
    assert debezium.occurred_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    assert debezium.event_id == "ipaas/public.customer/1001/c@lsn=24023928"
    # the same change decoded twice gives the same id (dedupe), the wrapped form too
    assert decode("customer", *debezium_schema_wrapped())[0].event_id == debezium.event_id

    [structured] = decode("customer", *cloudevent_structured())
    assert (structured.event_id, structured.occurred_at) == ("ce-1", datetime(2024, 2, 1, 12, 30, tzinfo=UTC))
    [binary] = decode("customer", *cloudevent_binary())
    assert (binary.event_id, binary.occurred_at) == ("ce-2", datetime(2024, 2, 1, 12, 30, tzinfo=UTC))
    assert decode("customer", *outbox_routed())[0].event_id == "6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001"
    assert decode("customer", *outbox_unrouted())[0].event_id == "6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001"
    assert decode("customer", *plain_event_type_wrapper())[0].event_id == "evt-9"
    assert decode("customer", *plain_with_scope_header())[0].event_id is None
    [flat] = decode("customer", *debezium_flattened())
    assert flat.occurred_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "envelope",
    [
        (None, as_json({**debezium_event("c", TRANSACTION), "source": {"ts_ms": 1}}), []),
        (None, as_json(TRANSACTION), [("scope", b"transaction/created")]),
        (
            None,
            as_json(TRANSACTION),
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"OrderCreated")],
        ),
        (
            None,
            as_json(
                {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "s",
                    "type": "com.ipaas.transaction.created",
                    "data": TRANSACTION,
                }
            ),
            [],
        ),
    ],
)
def test_transactions_with_lines_and_addresses(envelope: Envelope) -> None:
    [event] = decode("transaction", *envelope)
    assert (event.kind, event.action, event.record_id) == ("transaction", Action.CREATED, "T-1")
    record = event.record
    assert isinstance(record, Transaction)
    assert record == Transaction.model_validate(TRANSACTION)
    assert record.total == Decimal("113.25") and record.shipping_amount == Decimal("5.0")
    assert [(line.sku, line.qty, line.unit_price) for line in record.lines] == [
        ("SKU-1", Decimal(2), Decimal("25.00")),
        ("SKU-2", Decimal(1), Decimal(50)),
    ]
    assert record.lines[0].line_info == {"color": "blå"}
    assert record.billing_address is not None and record.billing_address.city == "Bergen"
    assert record.shipping_address is not None and record.shipping_address.shipping_method == "UPS"


_NO_ID = {name: value for name, value in TRANSACTION.items() if name != "id"}


@pytest.mark.parametrize("body", [_NO_ID, {**_NO_ID, "id": None}, {**_NO_ID, "id": "  "}])
@pytest.mark.parametrize("wrap", [
    lambda body: (as_json({**debezium_event("c", body), "source": {"ts_ms": 1}}), []),
    lambda body: (as_json(body), [("scope", b"transaction/created")]),
    lambda body: (as_json(body), [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"),
                                  ("ce_type", b"transaction.created")]),
    lambda body: (as_json({"specversion": "1.0", "id": "1", "source": "s", "type": "transaction.created",
                           "data": body}), []),
], ids=["debezium", "plain", "cloudevent-binary", "cloudevent-structured"])
@pytest.mark.parametrize("key", [b"T-9", None])
def test_a_transaction_without_an_id_is_read_for_its_flow_to_report(body: dict[str, Any], wrap: Any,
                                                                     key: bytes | None) -> None:
    value, headers = wrap(body)
    [event] = decode("transaction", key, value, headers)
    assert isinstance(event.record, Transaction) and event.record.id is None
    assert event.record.lines and event.action == Action.CREATED
    assert event.record_id == ("T-9" if key else "")  # the error log's transfer: the key's id when it has one


def test_a_customer_without_an_id_is_still_unreadable() -> None:
    body = {name: value for name, value in CUSTOMER.items() if name != "id"}
    pill = pill_of("customer", None, as_json(body), [("scope", b"customer/created")])
    assert pill.reason == "schema_violation"
    with pytest.raises(ValueError, match="needs a record id"):
        ChangeEvent(kind="customer", action=Action.CREATED, record_id="", record=None, format="plain_json")


# -------------------------------------------------------------------------------------- Klaviyo profiles


def test_klaviyo_profile_document_resource_and_cloudevent() -> None:
    document = (DATA / "klaviyo_profile_document.json").read_bytes()
    [from_document] = decode("klaviyo_profile", None, document, [])
    resource = orjson.loads(document)["data"]
    [from_resource] = decode("klaviyo_profile", None, as_json(resource), [])
    [from_ce] = decode(
        "klaviyo_profile",
        b"01GDDKASAP8TKDDA2GRZDSVP4H",
        as_json(resource),
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"p1"),
            ("ce_source", b"klaviyo"),
            ("ce_type", b"com.klaviyo.profile.updated"),
        ],
    )
    for event in (from_document, from_resource, from_ce):
        assert (event.kind, event.action, event.record_id) == (
            "klaviyo_profile",
            Action.UPDATED,
            "01GDDKASAP8TKDDA2GRZDSVP4H",
        )
        assert event.record == KlaviyoProfile.model_validate(resource)
    profile = from_document.record
    assert isinstance(profile, KlaviyoProfile)
    assert profile.attributes.email == "sarah.mason@klaviyo-demo.com"
    assert profile.attributes.location is not None and profile.attributes.location.city == "New York"
    assert profile.attributes.updated == datetime(2022, 11, 8, tzinfo=UTC)
    assert profile.attributes.subscriptions is not None
    assert profile.model_extra is not None and "relationships" in profile.model_extra


def test_klaviyo_profile_unicode_and_long_values() -> None:
    resource = {
        "type": "profile",
        "id": "01X",
        "attributes": {"first_name": "Zoë 李", "title": LONG, "properties": {"bio": LONG}},
    }
    [event] = decode("klaviyo_profile", None, as_json({"data": resource}), [])
    assert isinstance(event.record, KlaviyoProfile)
    assert event.record.attributes.title == LONG and event.record.attributes.properties["bio"] == LONG
    assert event.record.attributes.first_name == "Zoë 李"


def test_klaviyo_profile_of_the_wrong_type_is_a_schema_violation() -> None:
    with pytest.raises(PoisonPill) as info:
        decode("klaviyo_profile", None, as_json({"data": {"type": "event", "id": "1", "attributes": {}}}), [])
    assert info.value.reason == "schema_violation"


# ------------------------------------------------------------------------------------------ poison pills


def test_oversize() -> None:
    value = as_json(CUSTOMER)
    pill = pill_of("customer", None, value, [], max_value_bytes=len(value) - 1)
    assert pill.reason == "oversize" and pill.code == "POISON_PILL_OVERSIZE"
    assert decode("customer", None, value, [], max_value_bytes=len(value))  # at the limit is fine


@pytest.mark.parametrize("value", [b"[1, 2]", b"[]", b"42", b'"hello"', b"null", b"{}", b'{"foo": 1}'])
def test_unknown_envelope(value: bytes) -> None:
    assert pill_of("customer", None, value, []).reason == "unknown_envelope"


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        decode("product", None, b"{}", [])  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------------- fuzz


_FUZZ_VALUES: list[Any] = [None, 0, -1, 1.5, "", "x", '{"id": 1}', [], [1], {}, {"id": None}, True, "c", "t"]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for name, child in node.items():
            found += _paths(child, (*path, name))
    elif isinstance(node, list):
        for position, child in enumerate(node):
            found += _paths(child, (*path, position))
    return found


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = node
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return node


def test_fuzzed_envelopes_only_ever_raise_poison_pills() -> None:
    """Bytes mutations and type confusion in every envelope: an event list or a PoisonPill, nothing else."""
    import copy
    import random

    rng = random.Random(20240501)
    samples = [build() for build in ENVELOPES.values()]
    samples += [(b"1", path.read_bytes(), []) for path in sorted(DATA.glob("*.json"))]
    for _ in range(1500):
        key, value, headers = rng.choice(samples)
        assert value is not None
        if rng.random() < 0.5:
            mutated = bytearray(value)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(mutated))
                if rng.random() < 0.5:
                    del mutated[at : at + rng.randint(1, 20)]
                else:
                    mutated[at:at] = bytes(rng.choice(b'{}[]":,0129nul\xff a') for _ in range(rng.randint(1, 4)))
            candidate = bytes(mutated)
        else:
            doc = orjson.loads(value)
            for _ in range(rng.randint(1, 3)):
                doc = _replace(doc, rng.choice(_paths(doc)), copy.deepcopy(rng.choice(_FUZZ_VALUES)))
            candidate = as_json(doc)
        for kind in ("customer", "transaction", "klaviyo_profile"):
            try:
                events = decode(kind, rng.choice([key, None, b"\xff", b'{"id": [1]}']), candidate, headers)
            except PoisonPill as pill:
                assert pill.detail and len(pill.detail) <= 300
            else:
                assert all(isinstance(event, ChangeEvent) for event in events)
