"""CloudEvents 1.0, structured and binary mode, and Debezium change events as CloudEvents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.envelopes import Action, EnvelopeFormat, decode
from consumer.records import Customer
from tests.envelopes.helpers import (
    CUSTOMER,
    DATA,
    EXPECTED_CUSTOMER,
    as_json,
    debezium_event,
    pill_of,
)


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
    [with_extension] = decode("customer", None, as_json(event), [])
    assert (with_extension.action, with_extension.record, with_extension.event_id) == (
        Action.UPDATED,
        EXPECTED_CUSTOMER,
        "name:ipaas;lsn:24023928;txId:555",
    )
    assert with_extension.format is EnvelopeFormat.CLOUDEVENTS_STRUCTURED
    assert with_extension.occurred_at == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    del event["iodebeziumop"]
    event["data"] = {"schema": {}, "payload": debezium_event("d", None, CUSTOMER)}
    [in_data] = decode("customer", None, as_json(event), [])
    assert (in_data.action, in_data.record_id) == (Action.DELETED, "1001")


def test_cloudevent_for_another_entity() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"1"),
        ("ce_source", b"s"),
        ("ce_type", b"com.ipaas.transaction.created"),
    ]
    assert pill_of("customer", None, as_json(CUSTOMER), headers).reason == "unknown_event_type"
    structured = {"specversion": "1.0", "id": "1", "source": "s", "type": "customer.exploded", "data": CUSTOMER}
    assert pill_of("customer", None, as_json(structured), []).reason == "unknown_event_type"


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_cloudevent_missing_required_attributes(missing: str) -> None:
    event = {"specversion": "1.0", "id": "1", "source": "s", "type": "customer/created", "data": CUSTOMER}
    del event[missing]
    headers = [("content-type", b"application/cloudevents+json")]
    assert pill_of("customer", None, as_json(event), headers).reason == "schema_violation"
    binary = [(f"ce_{name}", str(v).encode()) for name, v in event.items() if name != "data"]
    if missing == "specversion":
        binary.append(("ce_specversion", b""))
    assert pill_of("customer", None, as_json(CUSTOMER), binary).reason == "schema_violation"


def test_cloudevent_structured_that_is_not_an_object() -> None:
    headers = [("content-type", b"application/cloudevents+json")]
    assert pill_of("customer", None, b"[1]", headers).reason == "schema_violation"
    bad_base64 = {"specversion": "1.0", "id": "1", "source": "s", "type": "customer/created", "data_base64": "!!"}
    assert pill_of("customer", None, as_json(bad_base64), headers).reason == "schema_violation"


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
