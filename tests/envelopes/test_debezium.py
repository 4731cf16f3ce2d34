"""Debezium change events: ops, deletes, the schema wrapper with logical types, the flattened form."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from consumer.envelopes import Action, EnvelopeFormat, NotAChange, PoisonPill, decode
from consumer.records import Customer, Transaction
from tests.envelopes.helpers import (
    CUSTOMER,
    DATA,
    EXPECTED_CUSTOMER,
    as_json,
    debezium_event,
)


@pytest.mark.parametrize(("op", "action"), [("c", Action.CREATED), ("r", Action.CREATED), ("u", Action.UPDATED)])
def test_debezium_ops(op: str, action: Action) -> None:
    [event] = decode("customer", None, as_json(debezium_event(op, CUSTOMER, CUSTOMER if op == "u" else None)), [])
    assert event.action is action and event.record == EXPECTED_CUSTOMER


def test_debezium_delete_uses_before_else_key() -> None:
    [with_before] = decode("customer", b'{"id": 1001}', as_json(debezium_event("d", None, CUSTOMER)), [])
    assert (with_before.action, with_before.record_id, with_before.record) == (
        Action.DELETED,
        "1001",
        EXPECTED_CUSTOMER,
    )
    [key_only] = decode("customer", b'{"id": 1001}', as_json(debezium_event("d", None, None)), [])
    assert (key_only.action, key_only.record_id, key_only.record) == (Action.DELETED, "1001", None)
    # a partial before-image (REPLICA IDENTITY DEFAULT) without a usable record still names the row
    [partial] = decode("customer", None, as_json(debezium_event("d", None, {"id": 5, "addresses": "oops"})), [])
    assert (partial.record_id, partial.record) == ("5", None)
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, as_json(debezium_event("d", None, None)), [])
    assert info.value.reason == "schema_violation"


@pytest.mark.parametrize("op", ["x", "q"])
def test_debezium_unknown_ops_are_unknown_event_types(op: str) -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, as_json(debezium_event(op, None)), [])
    assert info.value.reason == "unknown_event_type"
    assert info.value.code == "POISON_PILL_UNKNOWN_EVENT_TYPE"


@pytest.mark.parametrize(("op", "reason"), [("t", "debezium_truncate"), ("m", "debezium_message")])
def test_debezium_truncates_and_messages_change_no_record(op: str, reason: str) -> None:
    with pytest.raises(NotAChange) as info:
        decode("customer", None, as_json(debezium_event(op, None)), [])
    assert info.value.reason == reason
    with pytest.raises(NotAChange):
        decode("customer", None, as_json({"__op": op, "id": "C1"}), [])


@pytest.mark.parametrize(
    "value",
    [{"ts_ms": 1588252618953},
     {"schema": {"type": "struct", "name": "io.debezium.connector.common.Heartbeat"}, "payload": {"ts_ms": 1}}],
)
def test_connector_heartbeats_change_no_record(value: dict[str, Any]) -> None:
    with pytest.raises(NotAChange) as info:
        decode("customer", b'{"serverName": "shop"}', as_json(value), [])
    assert info.value.reason == "heartbeat"


@pytest.mark.parametrize(
    "value",
    [
        {"op": "t", "ts_ms": 1, "source": {"connector": "postgresql", "table": "customer", "lsn": 1}},
        {"op": "m", "ts_ms": 1, "source": {"lsn": 1}, "message": {"prefix": "p", "content": "Zm9v"}},
    ],
)
def test_debezium_truncate_and_message_events_without_images(value: dict[str, Any]) -> None:
    with pytest.raises(NotAChange):
        decode("customer", None, as_json({"schema": {}, "payload": value}), [])


def test_debezium_create_without_after_is_a_schema_violation() -> None:
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, as_json(debezium_event("c", None)), [])
    assert info.value.reason == "schema_violation"


def test_debezium_flattened_delete_rewrite() -> None:
    value = as_json({**CUSTOMER, "__op": "d", "__deleted": "true", "__lsn": 99})
    [event] = decode("customer", None, value, [])
    assert (event.action, event.record_id, event.record) == (Action.DELETED, "1001", EXPECTED_CUSTOMER)
    assert event.event_id is not None and "lsn=99" in event.event_id
    [no_op] = decode("customer", None, as_json({**CUSTOMER, "__deleted": "false"}), [])
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
