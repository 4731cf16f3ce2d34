"""Outbox events: un-routed outbox rows (the routed forms are in test_decode)."""

from __future__ import annotations

import pytest

from consumer.envelopes import Action, PoisonPill, decode
from tests.envelopes.helpers import (
    as_json,
    debezium_event,
)


def test_unrouted_outbox_delete_is_housekeeping() -> None:
    row = {"id": "e1", "aggregatetype": "Customer", "aggregateid": "1001", "type": "CustomerCreated", "payload": "{}"}
    assert decode("customer", None, as_json(debezium_event("d", None, row)), []) == []


def test_outbox_for_another_aggregate_is_refused() -> None:
    row = {"id": "e1", "aggregatetype": "Order", "aggregateid": "1", "type": "OrderCreated", "payload": {"id": "1"}}
    with pytest.raises(PoisonPill) as info:
        decode("customer", None, as_json(debezium_event("c", row)), [])
    assert info.value.reason == "unknown_event_type"
    [event] = decode("transaction", None, as_json(debezium_event("c", row)), [])
    assert (event.action, event.record_id) == (Action.CREATED, "1")
