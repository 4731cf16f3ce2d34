"""Transactional outbox events (the iPaaS.com and CDC reference, section 3.3).

Routed by Debezium's ``EventRouter``: the value is the event payload (possibly a JSON string, without
``expand.json.payload``), the ``id`` header the event id and an optional ``type``/``eventType`` header its type.
Un-routed: a captured outbox table row inside a Debezium change event, the event being the row's ``payload``.
Both are tagged :attr:`EnvelopeFormat.DEBEZIUM`.
"""

from __future__ import annotations

import re
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
    short,
    stringify_id,
    unstring,
    validate,
)
from consumer.envelopes.event_types import entity_matches, parse_event_type
from consumer.envelopes.plain_json import from_plain


def from_routed(kind: RecordKind, doc: Mapping[str, Any], headers: Mapping[str, str],
                key_id: str | None = None) -> list[ChangeEvent]:
    """An event routed by the EventRouter: read like plain JSON, the ``id`` header winning as the event id."""
    return from_plain(kind, doc, headers, outbox=True, key_id=key_id)


def is_outbox_row(row: Any) -> bool:
    return isinstance(row, dict) and "aggregatetype" in row and "aggregateid" in row and "payload" in row


def from_outbox_row(kind: RecordKind, action: Action, row: Any, occurred_at: datetime | None) -> list[ChangeEvent]:
    """An outbox table row captured without the EventRouter: the event is the row's ``payload``."""
    if action is Action.DELETED:
        return []  # outbox rows are deleted right after insert; that is housekeeping, not a change
    assert isinstance(row, dict)
    aggregate = str(row.get("aggregatetype") or "")
    if not entity_matches(kind, re.sub(r"[^a-z]", "", aggregate.lower())):
        raise PoisonPill("unknown_event_type", f"outbox aggregate {short(aggregate, 40)!r} is not a {kind}")
    event_type = row.get("type") or row.get("eventtype") or row.get("event_type")
    event_action = parse_event_type(kind, str(event_type)) if event_type else Action.UPDATED
    payload, _ = unstring(row.get("payload"), "outbox payload")
    record = validate(kind, payload, "payload") if payload is not None else None
    record_id = change_id(record, stringify_id(row.get("aggregateid")), what="outbox event")
    return [
        ChangeEvent(
            kind=kind,
            action=event_action,
            record_id=record_id,
            record=record,
            format=EnvelopeFormat.DEBEZIUM,
            occurred_at=occurred_at,
            event_id=stringify_id(row.get("id")),
        )
    ]
