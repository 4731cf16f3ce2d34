"""What every format shares: the change event, the poison pill, the UTF-8, JSON and record checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.envelopes import Action, ChangeEvent, EnvelopeFormat, PoisonPill, decode
from tests.envelopes.helpers import (
    CUSTOMER,
    EXPECTED_CUSTOMER,
    TRANSACTION,
    as_json,
    debezium_event,
    pill_of,
    plain_with_scope_header,
)


def test_change_event_is_frozen() -> None:
    [event] = decode("customer", *plain_with_scope_header())
    with pytest.raises(ValidationError):
        event.action = Action.DELETED  # type: ignore[misc]


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


@pytest.mark.parametrize("value", [b"\xff\xfe", b'{"id": "\xff"}', b"\xff\xfe{\x00}\x00"])
def test_not_utf8(value: bytes) -> None:
    assert pill_of("customer", None, value, []).reason == "not_utf8"


@pytest.mark.parametrize("value", [b'{"id": "1001", "first_name": "Zo', b"", b"{'id': 1}", b"nul", b"{}{}"])
def test_invalid_json(value: bytes) -> None:
    assert pill_of("customer", None, value, []).reason == "invalid_json"


def test_customer_without_id_reports_locations_not_values() -> None:
    pill = pill_of("customer", None, as_json({k: v for k, v in CUSTOMER.items() if k != "id"}), [])
    assert pill.reason == "schema_violation"
    assert "id: missing" in pill.detail
    assert "zoe@example.com" not in pill.detail and "Zoë" not in pill.detail


def test_transaction_with_non_numeric_total() -> None:
    pill = pill_of("transaction", None, as_json({**TRANSACTION, "total": "abc"}), [])
    assert pill.reason == "schema_violation"
    assert "total: decimal_parsing" in pill.detail and "abc" not in pill.detail
    bad_line = {**TRANSACTION, "lines": [{"qty": "x" * 500}]}
    nested = pill_of("transaction", None, as_json(debezium_event("c", bad_line)), [])
    assert "after (transaction): lines.0.qty: decimal_parsing" in nested.detail and "xxx" not in nested.detail


def test_header_values_are_decoded_leniently() -> None:
    [event] = decode("customer", None, as_json(CUSTOMER), [("x-junk", b"\xff\xfe"), ("scope", b"customer/updated")])
    assert event.action is Action.UPDATED


def test_an_odd_key_does_not_fail_a_record_whose_value_has_its_id() -> None:
    [event] = decode("customer", b"\xff\xfe\x00odd", b'{"id": "1001", "first_name": "Zoe"}', [])
    assert event.record_id == "1001"
    # a tombstone has nothing but its key: an unreadable one leaves no record to name
    assert pill_of("customer", b"\xff\xfe", None, []).reason == "schema_violation"
