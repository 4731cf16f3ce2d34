"""iPaaS.com hook notifications: notify-then-fetch events without a record."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.envelopes import Action, EnvelopeFormat, NotAChange, PoisonPill, decode
from tests.envelopes.helpers import (
    DATA,
    as_json,
)


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
    [event] = decode("transaction", None, as_json({"scope": "transaction/initialize", "id": 77}), [])
    assert (event.action, event.record_id, event.record) == (Action.UPDATED, "77", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
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
        decode("customer", None, as_json(body), [])
    assert info.value.reason == reason


def test_a_hook_call_that_notifies_nothing_changes_no_record() -> None:
    with pytest.raises(NotAChange) as info:
        decode("customer", None, as_json({"id": "h", "notifications": []}), [])
    assert info.value.reason == "empty_notification_batch"
