"""``decode()``: checks a record's size, finds its envelope format and hands it to that format's module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumer.envelopes.base import (
    DEFAULT_MAX_VALUE_BYTES,
    KINDS,
    ChangeEvent,
    NotAChange,
    PoisonPill,
    RecordKind,
    load_json,
    read_headers,
    read_key_id,
    type_name,
    unstring,
)
from consumer.envelopes.cloudevents import from_binary, from_structured, is_binary, is_structured
from consumer.envelopes.debezium import from_change_event, from_flattened, is_change_event, is_flattened
from consumer.envelopes.ipaas_hook import from_hook, is_single_notification
from consumer.envelopes.outbox import from_routed
from consumer.envelopes.plain_json import from_plain
from consumer.envelopes.tombstone import from_tombstone


def _is_heartbeat(doc: dict[str, Any], schema: Any) -> bool:
    """A Debezium connector heartbeat (``{"ts_ms": ...}``, schema ``io.debezium.connector.common.Heartbeat``)."""
    named = isinstance(schema, dict) and str(schema.get("name", "")).endswith(".Heartbeat")
    return named or set(doc) == {"ts_ms"}


def decode(
    kind: RecordKind,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> list[ChangeEvent]:
    """Decode one Kafka record of a topic carrying ``kind`` records into its change events.

    Returns one event, except for an iPaaS.com hook with several notifications (one each) and an un-routed
    outbox row's delete (none). Raises :class:`NotAChange` for a readable record that changes nothing (a truncate,
    a logical-decoding message, a heartbeat, an empty hook call) and :class:`PoisonPill` for anything that cannot
    be decoded.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    header_map = read_headers(headers)
    if value is None:
        return from_tombstone(kind, read_key_id(key), header_map)
    if len(value) > max_value_bytes:
        raise PoisonPill("oversize", f"value is {len(value)} bytes, the limit is {max_value_bytes}")

    content_type = header_map.get("content-type", "").lower()
    if content_type.startswith("application/cloudevents"):
        doc, _ = unstring(load_json(value, "value"), "value")
        return from_structured(kind, doc, read_key_id(key))
    if is_binary(header_map):
        data = None if not value.strip() else unstring(load_json(value, "value"), "value")[0]
        return from_binary(kind, header_map, data, read_key_id(key))

    doc, was_string = unstring(load_json(value, "value"), "value")
    schema: Any = None
    if isinstance(doc, dict) and "schema" in doc and "payload" in doc:  # JsonConverter, schemas enabled
        schema = doc["schema"]
        doc, unstrung = unstring(doc["payload"], "payload")
        was_string = was_string or unstrung
        if doc is None:
            return from_tombstone(kind, read_key_id(key), header_map)
    if not isinstance(doc, dict) or not doc:
        raise PoisonPill("unknown_envelope", f"value is a JSON {type_name(doc)}, not a known envelope")
    if _is_heartbeat(doc, schema):
        raise NotAChange("heartbeat")

    if is_structured(doc):
        return from_structured(kind, doc, read_key_id(key))
    if "notifications" in doc:
        return from_hook(kind, doc)
    if is_change_event(doc):
        return from_change_event(kind, doc, schema, read_key_id(key))
    if is_flattened(doc):
        return from_flattened(kind, doc, schema, read_key_id(key))
    if is_single_notification(doc):
        return from_hook(kind, {"notifications": [doc]})
    if was_string or "id" in header_map:  # an outbox event routed by the EventRouter
        return from_routed(kind, doc, header_map, read_key_id(key))
    return from_plain(kind, doc, header_map, outbox=False, key_id=read_key_id(key))
