"""CloudEvents 1.0 with the Kafka protocol binding (the iPaaS.com and CDC reference, section 3.2).

Structured mode (``content-type: application/cloudevents+json``, or a JSON object with ``specversion`` and
``type``; ``data`` or ``data_base64``) and binary mode (``ce_*`` headers, the value is the data). A Debezium
change event as the data (Debezium's CloudEventsConverter) is read as one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from consumer.envelopes.base import (
    ChangeEvent,
    EnvelopeFormat,
    PoisonPill,
    RecordKind,
    change_id,
    load_json,
    stringify_id,
    type_name,
    unstring,
    validate,
)
from consumer.envelopes.debezium import from_change_event, is_change_event
from consumer.envelopes.event_types import parse_event_type
from consumer.records import parse_datetime

_CE_REQUIRED = ("specversion", "id", "source", "type")


def _from_cloudevent(
    kind: RecordKind,
    attributes: Mapping[str, Any],
    data: Any,
    fmt: EnvelopeFormat,
    key_id: str | None,
) -> list[ChangeEvent]:
    missing = [name for name in _CE_REQUIRED if not attributes.get(name)]
    if missing:
        raise PoisonPill("schema_violation", f"CloudEvent without required attribute(s) {', '.join(missing)}")
    event_id = str(attributes["id"])
    occurred_at = parse_datetime(attributes.get("time"))
    event_type = str(attributes["type"])

    if isinstance(data, dict):  # Debezium's CloudEventsConverter: the data is a change event
        inner_schema = data.get("schema") if "payload" in data and "schema" in data else None
        inner = data["payload"] if inner_schema is not None else data
        if isinstance(inner, dict) and "op" not in inner and attributes.get("iodebeziumop"):
            # op and source travel as ``iodebezium*`` extension attributes
            source = {name[10:]: item for name, item in attributes.items() if name.startswith("iodebezium")}
            inner = {"source": source, **inner, "op": attributes["iodebeziumop"]}
        if isinstance(inner, dict) and "op" in inner and is_change_event(inner):
            events = from_change_event(kind, inner, inner_schema, key_id)
            return [
                event.model_copy(
                    update={"format": fmt, "event_id": event_id, "occurred_at": event.occurred_at or occurred_at}
                )
                for event in events
            ]

    action = parse_event_type(kind, event_type)
    record = None if data is None else validate(kind, data, "data")
    return [
        ChangeEvent(
            kind=kind,
            action=action,
            record_id=change_id(record, key_id, stringify_id(attributes.get("subject")), what="CloudEvent"),
            record=record,
            format=fmt,
            occurred_at=occurred_at,
            event_id=event_id,
        )
    ]


def is_structured(doc: Mapping[str, Any]) -> bool:
    """A structured CloudEvent sent without its content type."""
    return "specversion" in doc and "type" in doc


def from_structured(kind: RecordKind, doc: Any, key_id: str | None) -> list[ChangeEvent]:
    if not isinstance(doc, dict):
        raise PoisonPill("schema_violation", f"structured CloudEvent is a JSON {type_name(doc)}, not an object")
    if "data_base64" in doc and doc["data_base64"] is not None:
        if doc.get("data") is not None:
            raise PoisonPill("schema_violation", "CloudEvent has both data and data_base64")
        encoded = doc["data_base64"]
        try:
            if not isinstance(encoded, str):
                raise ValueError("data_base64 is not a string")
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PoisonPill("schema_violation", "CloudEvent data_base64 is not base64") from None
        data = load_json(raw, "CloudEvent data_base64") if raw else None
    else:
        data = doc.get("data")
    data, _ = unstring(data, "CloudEvent data")
    return _from_cloudevent(kind, doc, data, EnvelopeFormat.CLOUDEVENTS_STRUCTURED, key_id)


def is_binary(headers: Mapping[str, str]) -> bool:
    return "ce_specversion" in headers or ("ce_id" in headers and "ce_source" in headers)


def _binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    attributes = {name[3:]: item for name, item in headers.items() if name.startswith("ce_")}
    if "content-type" in headers:
        attributes.setdefault("datacontenttype", headers["content-type"])
    return attributes


def from_binary(kind: RecordKind, headers: Mapping[str, str], data: Any, key_id: str | None) -> list[ChangeEvent]:
    """A binary-mode CloudEvent: the attributes are the ``ce_*`` headers, ``data`` the decoded value or ``None``."""
    return _from_cloudevent(kind, _binary_attributes(headers), data, EnvelopeFormat.CLOUDEVENTS_BINARY, key_id)
