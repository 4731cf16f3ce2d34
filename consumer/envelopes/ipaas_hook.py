"""iPaaS.com hook notifications (the iPaaS.com and CDC reference, section 1.5).

``{"id", "attempt", "notifications": [{"scope", "id"|"external_id"}]}``, or one notification without its
envelope: notify-then-fetch, the events carry no record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumer.envelopes.base import ChangeEvent, EnvelopeFormat, NotAChange, PoisonPill, RecordKind, stringify_id
from consumer.envelopes.event_types import parse_event_type
from consumer.envelopes.plain_json import WRAPPER_DATA_KEYS


def is_single_notification(doc: Mapping[str, Any]) -> bool:
    """One notification without its envelope (and not a plain-JSON wrapper with a scope)."""
    return (
        isinstance(doc.get("scope"), str)
        and ("id" in doc or "external_id" in doc)
        and not any(name in doc for name in WRAPPER_DATA_KEYS)
    )


def from_hook(kind: RecordKind, doc: Mapping[str, Any]) -> list[ChangeEvent]:
    notifications = doc.get("notifications")
    if isinstance(notifications, list) and not notifications:
        raise NotAChange("empty_notification_batch")
    if not isinstance(notifications, list):
        raise PoisonPill("schema_violation", "hook notification without notifications")
    hook_id = stringify_id(doc.get("id"))
    events = []
    for position, notification in enumerate(notifications):
        if not isinstance(notification, dict):
            raise PoisonPill("schema_violation", f"notifications.{position}: not an object")
        scope = notification.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            raise PoisonPill("schema_violation", f"notifications.{position}: no scope")
        action = parse_event_type(kind, scope)
        record_id = stringify_id(notification.get("id")) or stringify_id(notification.get("external_id"))
        if not record_id:
            raise PoisonPill("schema_violation", f"notifications.{position}: neither id nor external_id")
        events.append(
            ChangeEvent(
                kind=kind,
                action=action,
                record_id=record_id,
                record=None,
                format=EnvelopeFormat.IPAAS_HOOK,
                occurred_at=None,
                event_id=f"{hook_id}/{position}" if hook_id else None,
            )
        )
    return events
