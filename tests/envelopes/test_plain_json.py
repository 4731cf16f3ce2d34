"""Plain JSON: a bare record, a wrapper, an event type from a header."""

from __future__ import annotations

from consumer.envelopes import Action, EnvelopeFormat, decode
from tests.envelopes.helpers import (
    CUSTOMER,
    EXPECTED_CUSTOMER,
    as_json,
    pill_of,
)


def test_plain_bare_record_is_an_upsert() -> None:
    [event] = decode("customer", None, as_json(CUSTOMER), [])
    assert (event.action, event.format, event.record) == (Action.UPDATED, EnvelopeFormat.PLAIN_JSON, EXPECTED_CUSTOMER)


def test_plain_header_event_type_for_another_entity() -> None:
    assert pill_of("customer", None, as_json(CUSTOMER), [("scope", b"product/created")]).reason == "unknown_event_type"
