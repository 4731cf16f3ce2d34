"""What the envelope tests share: one customer and one transaction, and the customer in every envelope."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.envelopes import EnvelopeFormat, PoisonPill, RecordKind, decode
from consumer.records import Customer

DATA = Path(__file__).parents[1] / "data" / "envelopes"
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


def as_json(value: Any) -> bytes:
    return orjson.dumps(value)


def debezium_event(op: str, after: Any, before: Any = None, *, source: dict[str, Any] | None = None) -> dict[str, Any]:
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


def pill_of(kind: RecordKind, key: bytes | None, value: bytes | None, headers: Headers, **kwargs: Any) -> PoisonPill:
    with pytest.raises(PoisonPill) as info:
        decode(kind, key, value, headers, **kwargs)
    pill = info.value
    assert pill.retryable is False and pill.infrastructure is False
    assert pill.code == f"POISON_PILL_{pill.reason.upper()}"
    assert len(pill.detail) <= 300
    return pill


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


# -------------------------------------------------------------------------- one customer, every envelope


def debezium_bare() -> Envelope:
    return b'{"id": 1001}', as_json(debezium_event("c", CUSTOMER)), []


def debezium_schema_wrapped() -> Envelope:
    key = as_json({"schema": {"type": "struct"}, "payload": {"id": 1001}})
    return key, as_json({"schema": {"type": "struct", "fields": []}, "payload": debezium_event("c", CUSTOMER)}), []


def debezium_flattened() -> Envelope:
    return b"1001", as_json({**CUSTOMER, "__op": "c", "__table": "customer", "__source_ts_ms": 1706790600000}), []


def outbox_routed() -> Envelope:
    payload_as_json_string = as_json(as_json(CUSTOMER).decode())
    headers = [("id", b"6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001"), ("type", b"CustomerCreated")]
    return b'"1001"', payload_as_json_string, headers


def outbox_routed_expanded() -> Envelope:
    return b"1001", as_json(CUSTOMER), [("id", b"evt-1"), ("eventType", b"customer/created")]


def outbox_unrouted() -> Envelope:
    row = {
        "id": "6f9f5f7e-0d1c-4c3a-9b43-5e0d7c1a0001",
        "aggregatetype": "Customer",
        "aggregateid": "1001",
        "type": "CustomerCreated",
        "payload": as_json(CUSTOMER).decode(),
    }
    return b"x", as_json(debezium_event("c", row)), []


def cloudevent_structured() -> Envelope:
    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/ipaas/customers",
        "type": "com.ipaas.customer.created",
        "time": "2024-02-01T12:30:00Z",
        "datacontenttype": "application/json",
        "data": CUSTOMER,
    }
    return b"1001", as_json(event), [("content-type", b"application/cloudevents+json; charset=UTF-8")]


def cloudevent_structured_base64() -> Envelope:
    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/ipaas/customers",
        "type": "CustomerCreated",
        "data_base64": base64.b64encode(as_json(CUSTOMER)).decode(),
    }
    return None, as_json(event), [("Content-Type", b"Application/CloudEvents+JSON")]


def cloudevent_binary() -> Envelope:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-2"),
        ("ce_source", b"/ipaas/customers"),
        ("ce_type", b"ipaas.customer.created"),
        ("ce_time", b"2024-02-01T12:30:00Z"),
        ("content-type", b"application/json"),
    ]
    return b"1001", as_json(CUSTOMER), headers


def plain_with_scope_header() -> Envelope:
    return b"1001", as_json(CUSTOMER), [("scope", b"customer/created")]


def plain_scope_wrapper() -> Envelope:
    return None, as_json({"scope": "customer/created", "data": CUSTOMER}), []


def plain_event_type_wrapper() -> Envelope:
    return None, as_json({"event_type": "customer.created", "id": "evt-9", "record": CUSTOMER}), []


ENVELOPES: dict[str, Callable[[], Envelope]] = {
    "debezium": debezium_bare,
    "debezium-schema": debezium_schema_wrapped,
    "debezium-flattened": debezium_flattened,
    "outbox-routed-string": outbox_routed,
    "outbox-routed-expanded": outbox_routed_expanded,
    "outbox-unrouted": outbox_unrouted,
    "cloudevents-structured": cloudevent_structured,
    "cloudevents-structured-base64": cloudevent_structured_base64,
    "cloudevents-binary": cloudevent_binary,
    "plain-scope-header": plain_with_scope_header,
    "plain-scope-wrapper": plain_scope_wrapper,
    "plain-event-type-wrapper": plain_event_type_wrapper,
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
