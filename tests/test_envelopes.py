"""Envelope decoding: every envelope -> the same typed change event; every failure -> a poison pill."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from consumer.envelopes import (
    Action,
    ChangeEvent,
    EnvelopeFormat,
    PoisonPill,
    RecordKind,
    decode,
    parse_event_type,
)
from consumer.records import Customer, KlaviyoProfile, Transaction

DATA = Path(__file__).parent / "data" / "envelopes"
LONG = ("Ünïcødé 名前 🚀 " * 800)[:10_000]

CUSTOMER: dict[str, Any] = {
    "id": "1001",
    "tracking_guid": "0d7c5a3e-2222-4444-8888-aaaabbbbcccc",
    "customer_number": "C-1001",
    "first_name": "Zoë",
    "last_name": "Ñúñez-李",
    "email_address": "zoe@example.com",
    "company": "Ørsted & Søn",
    "comment": LONG,
    "created_datetime": "2024-01-05T10:00:00Z",
    "updated_datetime": "2024-02-01T12:30:00+00:00",
    "custom_fields": [{"name": "SubscribeProfile", "value": "true"}],
    "external_ids": [{"system_id": 42, "external_id": "01GDDKASAP8TKDDA2GRZDSVP4H"}],
    "addresses": [{"id": "A2", "address_1": "Storgata 1", "city": "Bergen", "is_primary_billing": True}],
}
EXPECTED_CUSTOMER = Customer.model_validate(CUSTOMER)
Headers = list[tuple[str, bytes]]
Envelope = tuple[bytes | None, bytes | None, Headers]


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _debezium(op: str, after: Any, before: Any = None, *, source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": source
        or {
            "connector": "postgresql",
            "name": "ipaas",
            "ts_ms": 1706790600000,
            "schema": "public",
            "table": "customer",
            "lsn": 24023928,
            "txId": 555,
        },
        "op": op,
        "ts_ms": 1706790600456,
    }


# --------------------------------------------------------------------- one customer, every envelope


def _debezium_bare() -> Envelope:
    return b'{"id": 1001}', _json(_debezium("c", CUSTOMER)), []


def _debezium_schema_wrapped() -> Envelope:
    key = _json({"schema": {"type": "struct"}, "payload": {"id": 1001}})
    return key, _json({"schema": {"type": "struct", "fields": []}, "payload": _debezium("c", CUSTOMER)}), []


def _debezium_flattened() -> Envelope:
    return b"1001", _json({**CUSTOMER, "__op": "c", "__table": "customer", "__source_ts_ms": 1706790600000}), []


def _outbox_routed() -> Envelope:
    payload_as_json_string = _json(_json(CUSTOMER).decode())
    headers = [("id", b"6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001"), ("type", b"CustomerCreated")]
    return b'"1001"', payload_as_json_string, headers


def _outbox_routed_expanded() -> Envelope:
    return b"1001", _json(CUSTOMER), [("id", b"evt-1"), ("eventType", b"customer/created")]


def _outbox_unrouted() -> Envelope:
    row = {
        "id": "6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001",
        "aggregatetype": "Customer",
        "aggregateid": "1001",
        "type": "CustomerCreated",
        "payload": _json(CUSTOMER).decode(),
    }
    return b"x", _json(_debezium("c", row)), []


def _cloudevent_structured() -> Envelope:
    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/ipaas/customers",
        "type": "com.ipaas.customer.created",
        "time": "2024-02-01T12:30:00Z",
        "datacontenttype": "application/json",
        "data": CUSTOMER,
    }
    return b"1001", _json(event), [("content-type", b"application/cloudevents+json; charset=UTF-8")]


def _cloudevent_structured_base64() -> Envelope:
    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/ipaas/customers",
        "type": "CustomerCreated",
        "data_base64": base64.b64encode(_json(CUSTOMER)).decode(),
    }
    return None, _json(event), [("Content-Type", b"Application/CloudEvents+JSON")]


def _cloudevent_binary() -> Envelope:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-2"),
        ("ce_source", b"/ipaas/customers"),
        ("ce_type", b"ipaas.customer.created"),
        ("ce_time", b"2024-02-01T12:30:00Z"),
        ("content-type", b"application/json"),
    ]
    return b"1001", _json(CUSTOMER), headers


def _plain_with_scope_header() -> Envelope:
    return b"1001", _json(CUSTOMER), [("scope", b"customer/created")]


def _plain_scope_wrapper() -> Envelope:
    return None, _json({"scope": "customer/created", "data": CUSTOMER}), []


def _plain_event_type_wrapper() -> Envelope:
    return None, _json({"event_type": "customer.created", "id": "evt-9", "record": CUSTOMER}), []


ENVELOPES: dict[str, Callable[[], Envelope]] = {
    "debezium": _debezium_bare,
    "debezium-schema": _debezium_schema_wrapped,
    "debezium-flattened": _debezium_flattened,
    "outbox-routed-string": _outbox_routed,
    "outbox-routed-expanded": _outbox_routed_expanded,
    "outbox-unrouted": _outbox_unrouted,
    "cloudevents-structured": _cloudevent_structured,
    "cloudevents-structured-base64": _cloudevent_structured_base64,
    "cloudevents-binary": _cloudevent_binary,
    "plain-scope-header": _plain_with_scope_header,
    "plain-scope-wrapper": _plain_scope_wrapper,
    "plain-event-type-wrapper": _plain_event_type_wrapper,
}
EXPECTED_FORMAT = {
    "debezium": EnvelopeFormat.DEBEZIUM,
    "debezium-schema": EnvelopeFormat.DEBEZIUM,
    "debezium-flattened": EnvelopeFormat.DEBEZIUM,
    "outbox-routed-string": EnvelopeFormat.DEBEZIUM,
    "outbox-routed-expanded": EnvelopeFormat.DEBEZIUM,
    "outbox-unrouted": EnvelopeFormat.DEBEZIUM,
    "cloudevents-structured": EnvelopeFormat.CLOUDEVENTS_STRUCTURED,
    "cloudevents-structured-base64": EnvelopeFormat.CLOUDEVENTS_STRUCTURED,
    "cloudevents-binary": EnvelopeFormat.CLOUDEVENTS_BINARY,
    "plain-scope-header": EnvelopeFormat.PLAIN_JSON,
    "plain-scope-wrapper": EnvelopeFormat.PLAIN_JSON,
    "plain-event-type-wrapper": EnvelopeFormat.PLAIN_JSON,
}


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
    [debezium] = decode("customer", *_debezium_bare())
    assert debezium.occurred_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    assert debezium.event_id == "ipaas/public.customer/1001/c@lsn=24023928"
    # the same change decoded twice gives the same id (dedupe), the wrapped form too
    assert decode("customer", *_debezium_schema_wrapped())[0].event_id == debezium.event_id

    [structured] = decode("customer", *_cloudevent_structured())
    assert (structured.event_id, structured.occurred_at) == ("ce-1", datetime(2024, 2, 1, 12, 30, tzinfo=UTC))
    [binary] = decode("customer", *_cloudevent_binary())
    assert (binary.event_id, binary.occurred_at) == ("ce-2", datetime(2024, 2, 1, 12, 30, tzinfo=UTC))
    assert decode("customer", *_outbox_routed())[0].event_id == "6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001"
    assert decode("customer", *_outbox_unrouted())[0].event_id == "6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001"
    assert decode("customer", *_plain_event_type_wrapper())[0].event_id == "evt-9"
    assert decode("customer", *_plain_with_scope_header())[0].event_id is None
    [flat] = decode("customer", *_debezium_flattened())
    assert flat.occurred_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)


def test_change_event_is_frozen() -> None:
    [event] = decode("customer", *_plain_with_scope_header())
    with pytest.raises(ValidationError):
        event.action = Action.DELETED  # type: ignore[misc]


def test_plain_bare_record_is_an_upsert() -> None:
    [event] = decode("customer", None, _json(CUSTOMER), [])
    assert (event.action, event.format, event.record) == (Action.UPDATED, EnvelopeFormat.PLAIN_JSON, EXPECTED_CUSTOMER)


# --------------------------------------------------------------------------------------- Debezium


@pytest.mark.parametrize(("op", "action"), [("c", Action.CREATED), ("r", Action.CREATED), ("u", Action.UPDATED)])
def test_debezium_ops(op: str, action: Action) -> None:
    [event] = decode("customer", None, _json(_debezium(op, CUSTOMER, CUSTOMER if op == "u" else None)), [])
    assert event.action is action and event.record == EXPECTED_CUSTOMER


def test_debezium_delete_uses_before_else_key() -> None:
    [with_before] = decode("customer", b'{"id": 1001}', _json(_debezium("d", None, CUSTOMER)), [])
    assert (with_before.action, with_before.record_id, with_before.record) == (
        Action.DELETED,
        "1001",
        EXPECTED_CUSTOMER,
    )
    [key_only] = decode("customer", b'{"id": 1001}', _json(_debezium("d", None, None)), [])
    assert (key_only.action, key_only.record_id, key_only.record) == (Action.DELETED, "1001", None)
    # a partial before-image (REPLICA IDENTITY DEFAULT) without a usable record still names the row
    [partial] = decode("customer", None, _json(_debezium("d", None, {"id": 5, "addresses": "oops"})), [])
    assert (partial.record_id, partial.record) == ("5", None)
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, _json(_debezium("d", None, None)), [])
    assert info.value.reason == "schema_violation"


@pytest.mark.parametrize("op", ["t", "m", "x"])
def test_debezium_non_row_ops_are_unknown_event_types(op: str) -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, _json(_debezium(op, None)), [])
    assert info.value.reason == "unknown_event_type"
    assert info.value.code == "POISON_PILL_UNKNOWN_EVENT_TYPE"


@pytest.mark.parametrize(
    "value",
    [
        {"op": "t", "ts_ms": 1, "source": {"connector": "postgresql", "table": "customer", "lsn": 1}},
        {"op": "m", "ts_ms": 1, "source": {"lsn": 1}, "message": {"prefix": "p", "content": "Zm9v"}},
    ],
)
def test_debezium_truncate_and_message_events_without_images(value: dict[str, Any]) -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, _json({"schema": {}, "payload": value}), [])
    assert info.value.reason == "unknown_event_type"


def test_change_event_checks_record_against_kind() -> None:
    with pytest.raises(ValidationError):
        ChangeEvent(
            kind="transaction",
            action=Action.CREATED,
            record_id="1001",
            record=EXPECTED_CUSTOMER,
            format=EnvelopeFormat.PLAIN_JSON,
            occurred_at=None,
            event_id=None,
        )


def test_poison_pill_pickles() -> None:
    import pickle

    pill = pickle.loads(pickle.dumps(PoisonPill("invalid_json", "value is not JSON")))
    assert (pill.reason, pill.detail, pill.code) == ("invalid_json", "value is not JSON", "POISON_PILL_INVALID_JSON")


def test_binary_cloudevent_with_empty_value_has_no_data() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"c1"), ("ce_source", b"s"), ("ce_type", b"customer/updated")]
    [event] = decode("customer", b"1001", b"", headers)
    assert (event.action, event.record_id, event.record) == (Action.UPDATED, "1001", None)


def test_debezium_cloudevents_converter() -> None:
    event = {
        "specversion": "1.0",
        "id": "name:ipaas;lsn:24023928;txId:555",
        "source": "/debezium/postgresql/ipaas",
        "type": "io.debezium.postgresql.datachangeevent",
        "time": "2024-02-01T12:30:00Z",
        "iodebeziumop": "u",
        "iodebeziumtable": "customer",
        "datacontenttype": "application/json",
        "data": {"before": None, "after": CUSTOMER},
    }
    [with_extension] = decode("customer", None, _json(event), [])
    assert (with_extension.action, with_extension.record, with_extension.event_id) == (
        Action.UPDATED,
        EXPECTED_CUSTOMER,
        "name:ipaas;lsn:24023928;txId:555",
    )
    assert with_extension.format is EnvelopeFormat.CLOUDEVENTS_STRUCTURED
    assert with_extension.occurred_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    del event["iodebeziumop"]
    event["data"] = {"schema": {}, "payload": _debezium("d", None, CUSTOMER)}
    [in_data] = decode("customer", None, _json(event), [])
    assert (in_data.action, in_data.record_id) == (Action.DELETED, "1001")


def test_debezium_create_without_after_is_a_schema_violation() -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, _json(_debezium("c", None)), [])
    assert info.value.reason == "schema_violation"


def test_debezium_flattened_delete_rewrite() -> None:
    value = _json({**CUSTOMER, "__op": "d", "__deleted": "true", "__lsn": 99})
    [event] = decode("customer", None, value, [])
    assert (event.action, event.record_id, event.record) == (Action.DELETED, "1001", EXPECTED_CUSTOMER)
    assert event.event_id is not None and "lsn=99" in event.event_id
    [no_op] = decode("customer", None, _json({**CUSTOMER, "__deleted": "false"}), [])
    assert no_op.action is Action.UPDATED


def test_debezium_postgres_fixture_with_logical_types() -> None:
    value = (DATA / "debezium_customer_postgres.json").read_bytes()
    [event] = decode("customer", b'{"schema":{},"payload":{"id":1001}}', value, [])
    assert event.format is EnvelopeFormat.DEBEZIUM and event.action is Action.CREATED
    assert isinstance(event.record, Customer)
    assert event.record.id == "1001"
    assert event.record.created_datetime == datetime(2024, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    assert event.record.updated_datetime == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    assert event.record.custom_field("SubscribeProfile") == "true"
    assert event.event_id == "ipaas/public.customer/1001/c@lsn=24023928"


def test_debezium_transaction_fixture_decodes_connect_decimals() -> None:
    value = (DATA / "debezium_transaction_decimal.json").read_bytes()
    [event] = decode("transaction", b'"T-77"', value, [])
    assert event.action is Action.UPDATED
    record = event.record
    assert isinstance(record, Transaction)
    assert record.total == Decimal("123.45")
    assert record.tax_amount == Decimal("-0.200")
    assert record.created_datetime == datetime(2024, 1, 5, 10, tzinfo=UTC)
    assert record.updated_datetime == datetime.combine(date(2024, 1, 1), datetime.min.time(), tzinfo=UTC)
    assert record.lines[0].unit_price == Decimal("61.725") and record.lines[0].qty == Decimal(2)
    assert event.occurred_at == datetime(2024, 1, 5, 10, 0, 1, tzinfo=UTC)
    assert event.event_id == "shop/transaction/T-77/u@file=mysql-bin.000003,pos=154,row=0"


def test_unrouted_outbox_delete_is_housekeeping() -> None:
    row = {"id": "e1", "aggregatetype": "Customer", "aggregateid": "1001", "type": "CustomerCreated", "payload": "{}"}
    assert decode("customer", None, _json(_debezium("d", None, row)), []) == []


def test_outbox_for_another_aggregate_is_refused() -> None:
    row = {"id": "e1", "aggregatetype": "Order", "aggregateid": "1", "type": "OrderCreated", "payload": {"id": "1"}}
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, _json(_debezium("c", row)), [])
    assert info.value.reason == "unknown_event_type"
    [event] = decode("transaction", None, _json(_debezium("c", row)), [])
    assert (event.action, event.record_id) == (Action.CREATED, "1")


# --------------------------------------------------------------------------------------- transactions

TRANSACTION: dict[str, Any] = {
    "id": "T-1",
    "transaction_number": "SO-1",
    "customer_id": "1001",
    "email_address": "zoe@example.com",
    "type": "Order",
    "status": "Complete",
    "subtotal": 100,
    "tax_amount": "8.25",
    "shipping_amount": 5.0,
    "discount_amount": "0",
    "total": "113.25",
    "total_qty": 3,
    "created_datetime": "2024-01-05T10:00:00Z",
    "lines": [
        {
            "id": "L1",
            "sequence_number": 1,
            "sku": "SKU-1",
            "description": "Tröja",
            "qty": 2,
            "unit_price": "25.00",
            "extended_price": "50.00",
            "line_info": {"color": "blå"},
        },
        {"id": "L2", "sequence_number": 2, "sku": "SKU-2", "qty": 1, "unit_price": "50", "options": {"size": "L"}},
    ],
    "addresses": [
        {"type": "Billing", "first_name": "Zoë", "city": "Bergen", "is_primary_billing": True},
        {"type": "Shipping", "first_name": "Zoë", "city": "Oslo", "shipping_method": "UPS"},
    ],
    "payments": [{"method": "card", "amount": "113.25"}],
}


@pytest.mark.parametrize(
    "envelope",
    [
        (None, _json({**_debezium("c", TRANSACTION), "source": {"ts_ms": 1}}), []),
        (None, _json(TRANSACTION), [("scope", b"transaction/created")]),
        (
            None,
            _json(TRANSACTION),
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"OrderCreated")],
        ),
        (
            None,
            _json(
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


# ---------------------------------------------------------------------------------- Klaviyo profiles


def test_klaviyo_profile_document_resource_and_cloudevent() -> None:
    document = (DATA / "klaviyo_profile_document.json").read_bytes()
    [from_document] = decode("klaviyo_profile", None, document, [])
    resource = orjson.loads(document)["data"]
    [from_resource] = decode("klaviyo_profile", None, _json(resource), [])
    [from_ce] = decode(
        "klaviyo_profile",
        b"01GDDKASAP8TKDDA2GRZDSVP4H",
        _json(resource),
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
    [event] = decode("klaviyo_profile", None, _json({"data": resource}), [])
    assert isinstance(event.record, KlaviyoProfile)
    assert event.record.attributes.title == LONG and event.record.attributes.properties["bio"] == LONG
    assert event.record.attributes.first_name == "Zoë 李"


def test_klaviyo_profile_of_the_wrong_type_is_a_schema_violation() -> None:
    with pytest.raises(PoisonPill) as info:
        decode("klaviyo_profile", None, _json({"data": {"type": "event", "id": "1", "attributes": {}}}), [])
    assert info.value.reason == "schema_violation"


# ---------------------------------------------------------------------------------------- tombstones


@pytest.mark.parametrize(
    "key",
    [
        b"1001",
        b'"1001"',
        b"1001 ",
        b'{"id": 1001}',
        b'{"customer_id": "1001"}',
        b'{"schema": {"type": "struct"}, "payload": {"id": 1001}}',
    ],
)
def test_tombstones(key: bytes) -> None:
    assert decode("customer", key, None, []) == [
        ChangeEvent(
            kind="customer",
            action=Action.DELETED,
            record_id="1001",
            record=None,
            format=EnvelopeFormat.TOMBSTONE,
            occurred_at=None,
            event_id=None,
        )
    ]


def test_tombstone_keeps_leading_zero_keys_verbatim() -> None:
    assert decode("customer", b"00123", None, [])[0].record_id == "00123"


@pytest.mark.parametrize("key", [None, b"", b"{}", b'{"a": 1, "b": 2}'])
def test_tombstone_without_a_usable_key_is_a_schema_violation(key: bytes | None) -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", key, None, [])
    assert info.value.reason == "schema_violation"


def test_binary_cloudevent_without_data() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"c9"), ("ce_source", b"s"), ("ce_type", b"customer/deleted")]
    [event] = decode("customer", b"1001", None, headers)
    assert (event.action, event.record_id, event.record, event.format, event.event_id) == (
        Action.DELETED,
        "1001",
        None,
        EnvelopeFormat.CLOUDEVENTS_BINARY,
        "c9",
    )


# ---------------------------------------------------------------------------------------------- hooks


def test_ipaas_hook_notifications_notify_then_fetch() -> None:
    events = decode("customer", None, (DATA / "ipaas_hook_customer.json").read_bytes(), [])
    assert [(e.action, e.record_id, e.record, e.format) for e in events] == [
        (Action.CREATED, "1001", None, EnvelopeFormat.IPAAS_HOOK),
        (Action.UPDATED, "1002", None, EnvelopeFormat.IPAAS_HOOK),
        (Action.UPDATED, "EXT-9", None, EnvelopeFormat.IPAAS_HOOK),
    ]
    assert [e.event_id for e in events] == [
        "b5f0c8e2-7d6a-4f5b-9d8e-1a2b3c4d5e6f/0",
        "b5f0c8e2-7d6a-4f5b-9d8e-1a2b3c4d5e6f/1",
        "b5f0c8e2-7d6a-4f5b-9d8e-1a2b3c4d5e6f/2",
    ]


def test_single_hook_notification_and_initialize_scope() -> None:
    [event] = decode("transaction", None, _json({"scope": "transaction/initialize", "id": 77}), [])
    assert (event.action, event.record_id, event.record) == (Action.UPDATED, "77", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"id": "h", "notifications": []}, "schema_violation"),
        ({"notifications": [{"scope": "customer/created"}]}, "schema_violation"),
        ({"notifications": [{"id": "1"}]}, "schema_violation"),
        ({"notifications": ["x"]}, "schema_violation"),
        ({"notifications": [{"scope": "transaction/created", "id": "1"}]}, "unknown_event_type"),
        ({"notifications": [{"scope": "customer/category/initialize", "id": "1"}]}, "unknown_event_type"),
        ({"notifications": [{"scope": "customer/bulk", "id": "1"}]}, "unknown_event_type"),
    ],
)
def test_bad_hooks(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, _json(body), [])
    assert info.value.reason == reason


# ----------------------------------------------------------------------------------------- poison pills


def _pill(kind: RecordKind, key: bytes | None, value: bytes | None, headers: Headers, **kwargs: Any) -> PoisonPill:
    with pytest.raises(PoisonPill) as info:
        decode(kind, key, value, headers, **kwargs)
    pill = info.value
    assert pill.retryable is False and pill.infrastructure is False
    assert pill.code == f"POISON_PILL_{pill.reason.upper()}"
    assert len(pill.detail) <= 300
    return pill


def test_oversize() -> None:
    value = _json(CUSTOMER)
    pill = _pill("customer", None, value, [], max_value_bytes=len(value) - 1)
    assert pill.reason == "oversize" and pill.code == "POISON_PILL_OVERSIZE"
    assert decode("customer", None, value, [], max_value_bytes=len(value))  # at the limit is fine


@pytest.mark.parametrize("value", [b"\xff\xfe", b'{"id": "\xff"}', b"\xff\xfe{\x00}\x00"])
def test_not_utf8(value: bytes) -> None:
    assert _pill("customer", None, value, []).reason == "not_utf8"


@pytest.mark.parametrize("value", [b'{"id": "1001", "first_name": "Zo', b"", b"{'id': 1}", b"nul", b"{}{}"])
def test_invalid_json(value: bytes) -> None:
    assert _pill("customer", None, value, []).reason == "invalid_json"


@pytest.mark.parametrize("value", [b"[1, 2]", b"[]", b"42", b'"hello"', b"null", b"{}", b'{"foo": 1}'])
def test_unknown_envelope(value: bytes) -> None:
    assert _pill("customer", None, value, []).reason == "unknown_envelope"


def test_customer_without_id_reports_locations_not_values() -> None:
    pill = _pill("customer", None, _json({k: v for k, v in CUSTOMER.items() if k != "id"}), [])
    assert pill.reason == "schema_violation"
    assert "id: missing" in pill.detail
    assert "zoe@example.com" not in pill.detail and "Zoë" not in pill.detail


def test_transaction_with_non_numeric_total() -> None:
    pill = _pill("transaction", None, _json({**TRANSACTION, "total": "abc"}), [])
    assert pill.reason == "schema_violation"
    assert "total: decimal_parsing" in pill.detail and "abc" not in pill.detail
    nested = _pill("transaction", None, _json(_debezium("c", {**TRANSACTION, "lines": [{"qty": "x" * 500}]})), [])
    assert "after (transaction): lines.0.qty: decimal_parsing" in nested.detail and "xxx" not in nested.detail


def test_cloudevent_for_another_entity() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"1"),
        ("ce_source", b"s"),
        ("ce_type", b"com.ipaas.transaction.created"),
    ]
    assert _pill("customer", None, _json(CUSTOMER), headers).reason == "unknown_event_type"
    structured = {"specversion": "1.0", "id": "1", "source": "s", "type": "customer.exploded", "data": CUSTOMER}
    assert _pill("customer", None, _json(structured), []).reason == "unknown_event_type"


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_cloudevent_missing_required_attributes(missing: str) -> None:
    event = {"specversion": "1.0", "id": "1", "source": "s", "type": "customer/created", "data": CUSTOMER}
    del event[missing]
    headers = [("content-type", b"application/cloudevents+json")]
    assert _pill("customer", None, _json(event), headers).reason == "schema_violation"
    binary = [(f"ce_{name}", str(v).encode()) for name, v in event.items() if name != "data"]
    if missing == "specversion":
        binary.append(("ce_specversion", b""))
    assert _pill("customer", None, _json(CUSTOMER), binary).reason == "schema_violation"


def test_cloudevent_structured_that_is_not_an_object() -> None:
    headers = [("content-type", b"application/cloudevents+json")]
    assert _pill("customer", None, b"[1]", headers).reason == "schema_violation"
    bad_base64 = {"specversion": "1.0", "id": "1", "source": "s", "type": "customer/created", "data_base64": "!!"}
    assert _pill("customer", None, _json(bad_base64), headers).reason == "schema_violation"


def test_plain_header_event_type_for_another_entity() -> None:
    assert _pill("customer", None, _json(CUSTOMER), [("scope", b"product/created")]).reason == "unknown_event_type"


def test_header_values_are_decoded_leniently() -> None:
    [event] = decode("customer", None, _json(CUSTOMER), [("x-junk", b"\xff\xfe"), ("scope", b"customer/updated")])
    assert event.action is Action.UPDATED


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        decode("product", None, b"{}", [])  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- event types


@pytest.mark.parametrize(
    ("kind", "event_type", "action"),
    [
        ("customer", "customer/created", Action.CREATED),
        ("customer", "com.ipaas.customer.created", Action.CREATED),
        ("customer", "ipaas.customer.updated", Action.UPDATED),
        ("customer", "CustomerCreated", Action.CREATED),
        ("customer", "customer_deleted", Action.DELETED),
        ("customer", "customers.updated.v1", Action.UPDATED),
        ("customer", "customer/poll", Action.UPDATED),
        ("customer", "created", Action.CREATED),
        ("transaction", "transaction/created", Action.CREATED),
        ("transaction", "OrderCreated", Action.CREATED),
        ("klaviyo_profile", "klaviyo_profile/updated", Action.UPDATED),
        ("klaviyo_profile", "KlaviyoProfileUpdated", Action.UPDATED),
        ("klaviyo_profile", "profile.created", Action.CREATED),
    ],
)
def test_parse_event_type(kind: RecordKind, event_type: str, action: Action) -> None:
    assert parse_event_type(kind, event_type) is action


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [
        ("customer", "transaction/created"),
        ("customer", "CustomerAddressUpdated"),
        ("customer", "customer/all"),
        ("customer", "customer"),
        ("customer", ""),
        ("transaction", "customer/created"),
        ("klaviyo_profile", "customer/updated"),
    ],
)
def test_parse_event_type_refuses(kind: RecordKind, event_type: str) -> None:
    with pytest.raises(PoisonPill) as info:
        parse_event_type(kind, event_type)
    assert info.value.reason == "unknown_event_type"


# ------------------------------------------------------------------------------------------------ fuzz

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
            candidate = _json(doc)
        for kind in ("customer", "transaction", "klaviyo_profile"):
            try:
                events = decode(kind, rng.choice([key, None, b"\xff", b'{"id": [1]}']), candidate, headers)
            except PoisonPill as pill:
                assert pill.detail and len(pill.detail) <= 300
            else:
                assert all(isinstance(event, ChangeEvent) for event in events)


def test_cloudevent_structured_fixture_with_addresses() -> None:
    value = (DATA / "cloudevent_customer_structured.json").read_bytes()
    [event] = decode("customer", b"1001", value, [("content-type", b"application/cloudevents+json; charset=UTF-8")])
    assert (event.action, event.record_id, event.event_id) == (
        Action.UPDATED,
        "1001",
        "9c6f0a56-2f43-4d8e-9c0b-2d8a1e2f3b4c",
    )
    assert event.occurred_at == datetime(2024, 2, 1, 12, 30, 0, 500000, tzinfo=UTC)
    assert isinstance(event.record, Customer)
    billing = event.record.primary_billing_address
    assert billing is not None and (billing.id, billing.postal_code) == ("A2", "5003")
    assert event.record.model_extra == {}
