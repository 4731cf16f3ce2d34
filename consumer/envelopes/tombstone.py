"""Tombstones: a record without a value deletes the record its key names (a log-compaction delete marker)."""

from __future__ import annotations

from collections.abc import Mapping

from consumer.envelopes.base import Action, ChangeEvent, EnvelopeFormat, RecordKind, require_id
from consumer.envelopes.cloudevents import from_binary, is_binary


def from_tombstone(kind: RecordKind, key_id: str | None, headers: Mapping[str, str]) -> list[ChangeEvent]:
    if is_binary(headers):  # a data-less binary CloudEvent
        return from_binary(kind, headers, None, key_id)
    return [
        ChangeEvent(
            kind=kind,
            action=Action.DELETED,
            record_id=require_id(key_id, "tombstone"),
            record=None,
            format=EnvelopeFormat.TOMBSTONE,
            occurred_at=None,
            event_id=headers.get("id") or None,
        )
    ]
