"""Tombstones: a delete of the record the key names (and a data-less binary CloudEvent)."""

from __future__ import annotations

import pytest

from consumer.envelopes import Action, ChangeEvent, EnvelopeFormat, PoisonPill, decode


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
