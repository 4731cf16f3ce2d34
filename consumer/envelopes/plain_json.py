"""Plain JSON: a bare record, or a ``{"scope"|"event_type": .., "data"|"record": {..}}`` wrapper.

A bare Klaviyo profile may also be a JSON:API resource or document. Without a type in a wrapper, the event type
comes from a header (``scope``, ``event_type``, ``type``...), else the event is an upsert.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from consumer.envelopes.base import (
    Action,
    ChangeEvent,
    EnvelopeFormat,
    PoisonPill,
    RecordKind,
    change_id,
    stringify_id,
    unstring,
    validate,
)
from consumer.envelopes.event_types import parse_event_type
from consumer.records import Customer, KlaviyoProfile, KlaviyoProfileAttributes, Transaction, parse_datetime

_TYPE_HEADERS = ("scope", "event_type", "event-type", "eventtype", "type", "ce_type", "x-event-type")
_EVENT_ID_HEADERS = ("event_id", "event-id", "eventid", "message_id", "x-event-id")
_WRAPPER_TYPE_KEYS = ("scope", "event_type", "eventType", "event", "action", "type")
WRAPPER_DATA_KEYS = ("data", "record", "payload")
_WRAPPER_TIME_KEYS = ("occurred_at", "time", "timestamp", "event_time")
_RECORD_FIELDS: dict[str, frozenset[str]] = {
    "customer": frozenset(Customer.model_fields),
    "transaction": frozenset(Transaction.model_fields),
    "klaviyo_profile": frozenset(KlaviyoProfile.model_fields) | frozenset(KlaviyoProfileAttributes.model_fields),
}
_WRAPPER_SHARED_FIELDS = frozenset({"id", "type"})


def _header_event_type(headers: Mapping[str, str]) -> str | None:
    for name in _TYPE_HEADERS:
        if headers.get(name):
            return headers[name]
    return None


def _data_member(doc: Mapping[str, Any]) -> str | None:
    for name in WRAPPER_DATA_KEYS:
        member = doc.get(name)
        if isinstance(member, dict) or (isinstance(member, str) and member.lstrip()[:1] == "{"):
            return name
    return None


def from_plain(
    kind: RecordKind,
    doc: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    outbox: bool,
    key_id: str | None = None,
) -> list[ChangeEvent]:
    """``outbox``: an event routed by the outbox EventRouter (:mod:`consumer.envelopes.outbox`), not plain JSON."""
    body: Any = doc
    event_type: str | None = None
    event_id: str | None = None
    occurred_at: datetime | None = None

    # A wrapper has a data member and, besides an event id or type, none of the record's own fields.
    data_key = _data_member(doc)
    wrapper = data_key is not None and not (set(doc) & (_RECORD_FIELDS[kind] - _WRAPPER_SHARED_FIELDS))
    if wrapper and data_key is not None:
        body, _ = unstring(doc[data_key], data_key)
        event_type = next((doc[name] for name in _WRAPPER_TYPE_KEYS if isinstance(doc.get(name), str)), None)
        event_id = stringify_id(doc.get("event_id")) or stringify_id(doc.get("id"))
        occurred_at = next(
            (parse_datetime(doc[name]) for name in _WRAPPER_TIME_KEYS if doc.get(name) is not None), None
        )
    elif not (set(doc) & _RECORD_FIELDS[kind]):
        raise PoisonPill("unknown_envelope", f"JSON object with none of the {kind} fields nor a known envelope's")

    event_type = event_type or _header_event_type(headers)
    action = parse_event_type(kind, event_type) if event_type else Action.UPDATED
    record = validate(kind, body, "data" if wrapper else "value")
    if outbox:
        event_id = headers.get("id") or event_id
    event_id = event_id or next((headers[name] for name in _EVENT_ID_HEADERS if headers.get(name)), None)
    return [
        ChangeEvent(
            kind=kind,
            action=action,
            record_id=change_id(record, key_id, what="value"),
            record=record,
            format=EnvelopeFormat.DEBEZIUM if outbox else EnvelopeFormat.PLAIN_JSON,
            occurred_at=occurred_at,
            event_id=event_id,
        )
    ]
