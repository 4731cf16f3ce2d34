"""Event type names in every naming style -> actions."""

from __future__ import annotations

import pytest

from consumer.envelopes import Action, PoisonPill, RecordKind, parse_event_type


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
