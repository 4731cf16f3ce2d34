"""Envelope decoding: a Kafka record's key, value and headers -> typed change events.

Decoding happens here, in our own code, never in aiokafka's deserializer: a record that cannot be read must
become a :class:`PoisonPill` with a stable reason (and go to the dead-letter topic), not an exception inside
the client's fetch loop. Everything here is pure: no Kafka, no I/O.

Accepted envelopes (as documented by Debezium's connectors and Outbox Event Router, the CloudEvents 1.0 Kafka
protocol binding and JSON format, and iPaaS.com's hook notifications):

- **tombstone** (value ``None``): a delete of the record named by the key;
- **Debezium** change events, with or without the JsonConverter ``{"schema", "payload"}`` wrapper, the
  flattened ``ExtractNewRecordState`` form (``__op``/``__deleted``), outbox events routed by the
  ``EventRouter`` (header ``id``, optional ``type``/``eventType`` header, payload possibly a JSON string) and
  un-routed outbox rows;
- **CloudEvents 1.0** in structured (``content-type: application/cloudevents+json``) and binary (``ce_*``
  headers) mode;
- **iPaaS.com hook notifications** ``{"id", "attempt", "notifications": [{"scope", "id"|"external_id"}]}``:
  notify-then-fetch, the events carry no record;
- **plain JSON**: a bare record (a Klaviyo profile also as a JSON:API resource or document), or a
  ``{"scope"|"event_type": .., "data"|"record": {..}}`` wrapper.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, model_validator

from consumer.records import Customer, KlaviyoProfile, KlaviyoProfileAttributes, Transaction, parse_datetime

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "Action",
    "ChangeEvent",
    "EnvelopeFormat",
    "PoisonPill",
    "PoisonReason",
    "RecordKind",
    "decode",
    "parse_event_type",
]

RecordKind = Literal["customer", "transaction", "klaviyo_profile"]
PoisonReason = Literal[
    "oversize", "not_utf8", "invalid_json", "schema_violation", "unknown_event_type", "unknown_envelope"
]
DEFAULT_MAX_VALUE_BYTES = 1_048_576

_KINDS: frozenset[str] = frozenset(get_args(RecordKind))
_MODELS: dict[str, type[Customer] | type[Transaction] | type[KlaviyoProfile]] = {
    "customer": Customer,
    "transaction": Transaction,
    "klaviyo_profile": KlaviyoProfile,
}


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class EnvelopeFormat(StrEnum):
    DEBEZIUM = "debezium"
    CLOUDEVENTS_STRUCTURED = "cloudevents_structured"
    CLOUDEVENTS_BINARY = "cloudevents_binary"
    PLAIN_JSON = "plain_json"
    IPAAS_HOOK = "ipaas_hook"
    TOMBSTONE = "tombstone"


class ChangeEvent(BaseModel):
    """One change of one source record, whatever envelope it came in."""

    model_config = ConfigDict(frozen=True)

    kind: RecordKind
    action: Action
    record_id: Annotated[str, StringConstraints(min_length=1)]
    record: Customer | Transaction | KlaviyoProfile | None
    """``None`` for a hook notification or a data-less CloudEvent (notify-then-fetch) and for most deletes."""
    format: EnvelopeFormat
    occurred_at: datetime | None = None
    event_id: str | None = None
    """CloudEvents ``id``, outbox ``id`` header, hook id + position or Debezium source position."""

    @property
    def event_type(self) -> str:
        """``"<kind>/<action>"``, e.g. ``"customer/created"`` (iPaaS.com scope style)."""
        return f"{self.kind}/{self.action}"

    @model_validator(mode="after")
    def _record_matches_kind(self) -> ChangeEvent:
        if self.record is not None and not isinstance(self.record, _MODELS[self.kind]):
            raise ValueError(f"a {self.kind} event cannot carry a {type(self.record).__name__}")
        return self


class PoisonPill(Exception):
    """A record that can never be decoded: dead-letter it, don't retry.

    ``reason`` is a short stable code; ``detail`` is short human text that never echoes payload values
    (field locations and error types only).
    """

    retryable = False
    infrastructure = False

    def __init__(self, reason: PoisonReason, detail: str) -> None:
        self.reason: PoisonReason = reason
        self.detail = detail
        self.code = f"POISON_PILL_{reason.upper()}"
        super().__init__(f"{reason}: {detail}")

    def __repr__(self) -> str:
        return f"PoisonPill(reason={self.reason!r}, detail={self.detail!r})"

    def __reduce__(self) -> tuple[type[PoisonPill], tuple[PoisonReason, str]]:
        return type(self), (self.reason, self.detail)


# ------------------------------------------------------------------------------------------ small helpers

_MAX_DETAIL = 300


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Header names lower-cased, values decoded as UTF-8 leniently; the last of a repeated name wins."""
    out: dict[str, str] = {}
    for name, raw in headers or ():
        if isinstance(raw, bytes | bytearray | memoryview):
            text = bytes(raw).decode("utf-8", errors="replace")
        elif raw is None:
            text = ""
        else:
            text = str(raw)
        out[str(name).strip().lower()] = text.strip()
    return out


def _loads(data: bytes | str, where: str) -> Any:
    """JSON -> value; tells bytes that are not UTF-8 apart from text that is not JSON."""
    if isinstance(data, bytes) and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise PoisonPill("not_utf8", f"{where} is not UTF-8 (byte {bad.start})") from None
        raise PoisonPill("invalid_json", f"{where} is not JSON: {_short(str(exc), 120)}") from None


def _unstring(value: Any, where: str) -> tuple[Any, bool]:
    """A JSON *string* holding JSON (an outbox payload without ``expand.json.payload``) -> the inner value."""
    decoded = False
    for _ in range(2):
        if isinstance(value, str) and value.strip()[:1] in ("{", "[", '"'):
            value = _loads(value.strip(), where)
            decoded = True
        else:
            break
    return value, decoded


def _stringify_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _id_from_doc(doc: Any) -> str | None:
    """The record id in a decoded key: a scalar, ``{"id": ..}``, a one-column key struct, or a Debezium key."""
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc:
        doc = doc["payload"]
    if isinstance(doc, dict):
        for name, item in doc.items():
            if name.lower() == "id":
                return _stringify_id(item)
        if len(doc) == 1:
            return _stringify_id(next(iter(doc.values())))
        return None
    return _stringify_id(doc)


def _key_id(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        raise PoisonPill("not_utf8", "record key is not UTF-8") from None
    if not text:
        return None
    if text[0] in '{["':  # only JSON-looking keys are parsed: a plain "00123" or "1e5" stays as it is
        try:
            return _id_from_doc(orjson.loads(text))
        except orjson.JSONDecodeError:
            return text
    return text


def _validation_detail(where: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False)[:5]:
        loc = ".".join(_short(str(part), 40) for part in error["loc"]) or "(root)"
        parts.append(f"{loc}: {error['type']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"+{more} more")
    return _short(f"{where}: " + "; ".join(parts), _MAX_DETAIL)


def _unwrap_jsonapi(kind: str, data: Any) -> Any:
    """A Klaviyo JSON:API document ``{"data": {resource}}`` -> the resource."""
    if kind == "klaviyo_profile" and isinstance(data, dict) and "attributes" not in data and "id" not in data:
        inner = data.get("data")
        if isinstance(inner, dict):
            return inner
    return data


def _validate(kind: str, data: Any, where: str) -> Customer | Transaction | KlaviyoProfile:
    data = _unwrap_jsonapi(kind, data)
    if not isinstance(data, dict):
        raise PoisonPill("schema_violation", f"{where}: expected a JSON object, got {_type_name(data)}")
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        raise PoisonPill("schema_violation", _validation_detail(f"{where} ({kind})", exc)) from None


def _validate_lenient(kind: str, data: Any) -> Customer | Transaction | KlaviyoProfile | None:
    """A delete's before-image: informative only, so a partial or malformed one is dropped, not fatal."""
    if not isinstance(data, dict):
        return None
    try:
        return _validate(kind, data, "before")
    except PoisonPill:
        return None


def _require_id(record_id: str | None, what: str) -> str:
    if not record_id:
        raise PoisonPill("schema_violation", f"{what}: no record id (neither in the record nor in the key)")
    return record_id


# ------------------------------------------------------------------------------------------- event types

_ENTITY_ALIASES: dict[str, frozenset[str]] = {
    "customer": frozenset({"customer"}),
    "transaction": frozenset({"transaction", "order"}),
    "klaviyo_profile": frozenset({"profile", "klaviyoprofile"}),
}
_ACTIONS: dict[str, Action] = {
    **dict.fromkeys(("created", "create", "inserted", "insert", "added", "add", "new"), Action.CREATED),
    **dict.fromkeys(
        (
            "updated",
            "update",
            "modified",
            "modify",
            "changed",
            "change",
            "upserted",
            "upsert",
            "saved",
            "poll",
            "polled",
            "initialize",
            "initialized",
            "initialise",
            "initialised",
        ),
        Action.UPDATED,
    ),
    **dict.fromkeys(("deleted", "delete", "removed", "remove", "destroyed"), Action.DELETED),
}
_SEPARATORS = re.compile(r"[/.:_\-\s]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_VERSION = re.compile(r"^v?\d+$")


def _entity_matches(kind: str, word: str) -> bool:
    word = word.lower()
    aliases = _ENTITY_ALIASES[kind]
    return word in aliases or (word.endswith("s") and word[:-1] in aliases)


def parse_event_type(kind: RecordKind, event_type: str) -> Action:
    """The action of an event type naming ``kind``; else :class:`PoisonPill` ``unknown_event_type``.

    Accepts scope style (``customer/created``), reverse-DNS style (``com.ipaas.customer.created``,
    ``ipaas.customer.updated``), PascalCase (``CustomerCreated``, ``OrderCreated``) and snake/kebab case. The
    action is the last word; the word before it, when there is one, must name ``kind``. ``poll`` and
    ``initialize`` scopes are updates.
    """
    words = [
        word.lower()
        for segment in _SEPARATORS.split(event_type.strip())
        if not _VERSION.match(segment.lower())
        for word in _WORDS.findall(segment)
    ]
    if not words or words[-1] not in _ACTIONS:
        raise PoisonPill("unknown_event_type", f"event type {_short(event_type)!r}: unknown action")
    if len(words) >= 2 and not _entity_matches(kind, words[-2]):
        raise PoisonPill("unknown_event_type", f"event type {_short(event_type)!r} is not about a {kind} record")
    return _ACTIONS[words[-1]]


_TYPE_HEADERS = ("scope", "event_type", "event-type", "eventtype", "type", "ce_type", "x-event-type")
_EVENT_ID_HEADERS = ("event_id", "event-id", "eventid", "message_id", "x-event-id")
_WRAPPER_TYPE_KEYS = ("scope", "event_type", "eventType", "event", "action", "type")
_WRAPPER_DATA_KEYS = ("data", "record", "payload")
_WRAPPER_TIME_KEYS = ("occurred_at", "time", "timestamp", "event_time")


def _header_event_type(headers: Mapping[str, str]) -> str | None:
    for name in _TYPE_HEADERS:
        if headers.get(name):
            return headers[name]
    return None


# --------------------------------------------------------------------------------------------- Debezium

_DEBEZIUM_OPS: dict[str, Action] = {"c": Action.CREATED, "r": Action.CREATED, "u": Action.UPDATED, "d": Action.DELETED}
_POSITION_KEYS = (
    "lsn",
    "change_lsn",
    "commit_lsn",
    "event_serial_no",
    "scn",
    "commit_scn",
    "file",
    "pos",
    "row",
    "ord",
    "gtid",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)


def _ms_to_datetime(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        return None


def _decode_connect_decimal(encoded: Any, scale: Any) -> Decimal | None:
    if not isinstance(encoded, str):
        return None
    try:
        unscaled = int.from_bytes(base64.b64decode(encoded, validate=True), "big", signed=True)
        return Decimal(unscaled).scaleb(-int(scale))
    except (binascii.Error, ValueError, TypeError, ArithmeticError):  # DecimalException is an ArithmeticError
        return None


def _convert_connect_value(name: str, parameters: Any, value: Any) -> Any:
    """One column of a Kafka Connect struct, by its logical type (JsonConverter with schemas enabled)."""
    if value is None:
        return None
    converted: Any = None
    if name == "org.apache.kafka.connect.data.Decimal":
        scale = parameters.get("scale", 0) if isinstance(parameters, dict) else 0
        converted = _decode_connect_decimal(value, scale)
    elif name == "io.debezium.data.VariableScaleDecimal" and isinstance(value, dict):
        converted = _decode_connect_decimal(value.get("value"), value.get("scale", 0))
    elif name in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                converted = _EPOCH_DAY + timedelta(days=value)
            except OverflowError:
                converted = None
    elif name in ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"):
        converted = _ms_to_datetime(value)
    elif name == "io.debezium.time.MicroTimestamp" and isinstance(value, int):
        converted = _ms_to_datetime(value / 1_000)
    elif name == "io.debezium.time.NanoTimestamp" and isinstance(value, int):
        converted = _ms_to_datetime(value / 1_000_000)
    return value if converted is None else converted


def _apply_struct_schema(row: Any, schema: Any) -> Any:
    """Decode the logical types (decimals as base64, dates as day numbers, ...) of a row's columns."""
    if not isinstance(row, dict) or not isinstance(schema, dict):
        return row
    fields = schema.get("fields")
    if not isinstance(fields, list):
        return row
    out = dict(row)
    for field in fields:
        if not isinstance(field, dict):
            continue
        column, logical = field.get("field"), field.get("name")
        if isinstance(column, str) and isinstance(logical, str) and column in out:
            out[column] = _convert_connect_value(logical, field.get("parameters"), out[column])
    return out


def _envelope_field_schema(schema: Any, name: str) -> Any:
    fields = schema.get("fields") if isinstance(schema, dict) else None
    for field in fields if isinstance(fields, list) else ():
        if isinstance(field, dict) and field.get("field") == name:
            return field
    return None


def _debezium_event_id(
    source: Mapping[str, Any], table: Any, record_id: str, op: str, *, prefix: str = ""
) -> str | None:
    position = ",".join(
        f"{name}={source[prefix + name]}" for name in _POSITION_KEYS if source.get(prefix + name) is not None
    )
    if not position:
        return None
    origin = source.get(f"{prefix}name") or source.get(f"{prefix}connector") or ""
    return f"{origin}/{table or ''}/{record_id}/{op}@{position}"


def _is_debezium(doc: Mapping[str, Any]) -> bool:
    """A change event: images plus op or source; or op plus source (truncate and message events have no images)."""
    has_images = "after" in doc or "before" in doc
    return ("op" in doc and ("source" in doc or has_images)) or (has_images and "source" in doc)


def _is_flattened(doc: Mapping[str, Any]) -> bool:
    return "__op" in doc or "__deleted" in doc


def _is_outbox_row(row: Any) -> bool:
    return isinstance(row, dict) and "aggregatetype" in row and "aggregateid" in row and "payload" in row


def _from_debezium(kind: RecordKind, doc: Mapping[str, Any], schema: Any, key_id: str | None) -> list[ChangeEvent]:
    op = doc.get("op")
    if not isinstance(op, str) or not op:
        raise PoisonPill("schema_violation", "Debezium event without an op")
    if op not in _DEBEZIUM_OPS:
        raise PoisonPill("unknown_event_type", f"Debezium op {_short(op, 10)!r} is not a row change")
    action = _DEBEZIUM_OPS[op]
    source = doc.get("source")
    if not isinstance(source, dict):
        source = {}
    occurred_at = _ms_to_datetime(source.get("ts_ms")) or _ms_to_datetime(doc.get("ts_ms"))
    table = source.get("table") or source.get("collection")
    if table and source.get("schema"):
        table = f"{source['schema']}.{table}"

    after_schema = _envelope_field_schema(schema, "after")
    before_schema = _envelope_field_schema(schema, "before")
    after = _apply_struct_schema(doc.get("after"), after_schema)
    before = _apply_struct_schema(doc.get("before"), before_schema)

    if _is_outbox_row(after if action is not Action.DELETED else before):
        return _from_outbox_row(kind, action, after, occurred_at)

    if action is not Action.DELETED and after is None:
        raise PoisonPill("schema_violation", f"Debezium op {op!r} without an after image")
    image, where = (before, "before") if action is Action.DELETED else (after, "after")
    return [_row_change(kind, action, image, where, key_id, occurred_at, source, table, op)]


def _row_change(kind: RecordKind, action: Action, row: Any, where: str, key_id: str | None,
                occurred_at: datetime | None, position: Mapping[str, Any], table: Any, op: str) -> ChangeEvent:
    """The change event of one Debezium row image (a delete keeps what it can read of the row it had)."""
    record: Customer | Transaction | KlaviyoProfile | None
    if action is Action.DELETED:
        record = _validate_lenient(kind, row)
        record_id = _require_id(record.id if record else _row_id(row) or key_id, "Debezium delete")
    else:
        record = _validate(kind, row, where)
        record_id = record.id
    return ChangeEvent(kind=kind, action=action, record_id=record_id, record=record,
                       format=EnvelopeFormat.DEBEZIUM, occurred_at=occurred_at,
                       event_id=_debezium_event_id(position, table, record_id, op))


def _row_id(row: Any) -> str | None:
    if isinstance(row, dict):
        return _stringify_id(row.get("id"))
    return None


def _from_flattened(kind: RecordKind, doc: Mapping[str, Any], schema: Any, key_id: str | None) -> list[ChangeEvent]:
    meta = {name[2:]: item for name, item in doc.items() if name.startswith("__")}
    row = _apply_struct_schema({name: item for name, item in doc.items() if not name.startswith("__")}, schema)
    op = meta.get("op")
    deleted = str(meta.get("deleted", "")).lower() == "true"
    if deleted:
        action = Action.DELETED
    elif op is None:
        action = Action.UPDATED
    elif isinstance(op, str) and op in _DEBEZIUM_OPS:
        action = _DEBEZIUM_OPS[op]
    else:
        raise PoisonPill("unknown_event_type", f"Debezium op {_short(str(op), 10)!r} is not a row change")

    occurred_at = _ms_to_datetime(meta.get("source_ts_ms")) or _ms_to_datetime(meta.get("ts_ms"))
    position = {name.removeprefix("source_"): item for name, item in meta.items()}
    table = position.get("table") or position.get("collection")
    return [_row_change(kind, action, row, "value", key_id, occurred_at, position, table,
                        str(op or ("d" if deleted else "u")))]


def _from_outbox_row(kind: RecordKind, action: Action, row: Any, occurred_at: datetime | None) -> list[ChangeEvent]:
    """An outbox table row captured without the EventRouter: the event is the row's ``payload``."""
    if action is Action.DELETED:
        return []  # outbox rows are deleted right after insert; that is housekeeping, not a change
    assert isinstance(row, dict)
    aggregate = str(row.get("aggregatetype") or "")
    if not _entity_matches(kind, re.sub(r"[^a-z]", "", aggregate.lower())):
        raise PoisonPill("unknown_event_type", f"outbox aggregate {_short(aggregate, 40)!r} is not a {kind}")
    event_type = row.get("type") or row.get("eventtype") or row.get("event_type")
    event_action = parse_event_type(kind, str(event_type)) if event_type else Action.UPDATED
    payload, _ = _unstring(row.get("payload"), "outbox payload")
    record = _validate(kind, payload, "payload") if payload is not None else None
    record_id = _require_id(record.id if record else _stringify_id(row.get("aggregateid")), "outbox event")
    return [
        ChangeEvent(
            kind=kind,
            action=event_action,
            record_id=record_id,
            record=record,
            format=EnvelopeFormat.DEBEZIUM,
            occurred_at=occurred_at,
            event_id=_stringify_id(row.get("id")),
        )
    ]


# ------------------------------------------------------------------------------------------ CloudEvents

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
        if isinstance(inner, dict) and "op" in inner and _is_debezium(inner):
            events = _from_debezium(kind, inner, inner_schema, key_id)
            return [
                event.model_copy(
                    update={"format": fmt, "event_id": event_id, "occurred_at": event.occurred_at or occurred_at}
                )
                for event in events
            ]

    action = parse_event_type(kind, event_type)
    record = None if data is None else _validate(kind, data, "data")
    record_id = record.id if record else key_id or _stringify_id(attributes.get("subject"))
    return [
        ChangeEvent(
            kind=kind,
            action=action,
            record_id=_require_id(record_id, "CloudEvent"),
            record=record,
            format=fmt,
            occurred_at=occurred_at,
            event_id=event_id,
        )
    ]


def _structured_cloudevent(kind: RecordKind, doc: Any, key_id: str | None) -> list[ChangeEvent]:
    if not isinstance(doc, dict):
        raise PoisonPill("schema_violation", f"structured CloudEvent is a JSON {_type_name(doc)}, not an object")
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
        data = _loads(raw, "CloudEvent data_base64") if raw else None
    else:
        data = doc.get("data")
    data, _ = _unstring(data, "CloudEvent data")
    return _from_cloudevent(kind, doc, data, EnvelopeFormat.CLOUDEVENTS_STRUCTURED, key_id)


def _binary_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    attributes = {name[3:]: item for name, item in headers.items() if name.startswith("ce_")}
    if "content-type" in headers:
        attributes.setdefault("datacontenttype", headers["content-type"])
    return attributes


def _is_binary_cloudevent(headers: Mapping[str, str]) -> bool:
    return "ce_specversion" in headers or ("ce_id" in headers and "ce_source" in headers)


# ------------------------------------------------------------------------------------------- iPaaS hooks


def _from_hook(kind: RecordKind, doc: Mapping[str, Any]) -> list[ChangeEvent]:
    notifications = doc.get("notifications")
    if not isinstance(notifications, list) or not notifications:
        raise PoisonPill("schema_violation", "hook notification without notifications")
    hook_id = _stringify_id(doc.get("id"))
    events = []
    for position, notification in enumerate(notifications):
        if not isinstance(notification, dict):
            raise PoisonPill("schema_violation", f"notifications.{position}: not an object")
        scope = notification.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            raise PoisonPill("schema_violation", f"notifications.{position}: no scope")
        action = parse_event_type(kind, scope)
        record_id = _stringify_id(notification.get("id")) or _stringify_id(notification.get("external_id"))
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


# ------------------------------------------------------------------------------------------- plain JSON

_RECORD_FIELDS: dict[str, frozenset[str]] = {
    "customer": frozenset(Customer.model_fields),
    "transaction": frozenset(Transaction.model_fields),
    "klaviyo_profile": frozenset(KlaviyoProfile.model_fields) | frozenset(KlaviyoProfileAttributes.model_fields),
}
_WRAPPER_SHARED_FIELDS = frozenset({"id", "type"})


def _data_member(doc: Mapping[str, Any]) -> str | None:
    for name in _WRAPPER_DATA_KEYS:
        member = doc.get(name)
        if isinstance(member, dict) or (isinstance(member, str) and member.lstrip()[:1] == "{"):
            return name
    return None


def _from_plain(
    kind: RecordKind,
    doc: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    outbox: bool,
) -> list[ChangeEvent]:
    body: Any = doc
    event_type: str | None = None
    event_id: str | None = None
    occurred_at: datetime | None = None

    # A wrapper has a data member and, besides an event id or type, none of the record's own fields.
    data_key = _data_member(doc)
    wrapper = data_key is not None and not (set(doc) & (_RECORD_FIELDS[kind] - _WRAPPER_SHARED_FIELDS))
    if wrapper and data_key is not None:
        body, _ = _unstring(doc[data_key], data_key)
        event_type = next((doc[name] for name in _WRAPPER_TYPE_KEYS if isinstance(doc.get(name), str)), None)
        event_id = _stringify_id(doc.get("event_id")) or _stringify_id(doc.get("id"))
        occurred_at = next(
            (parse_datetime(doc[name]) for name in _WRAPPER_TIME_KEYS if doc.get(name) is not None), None
        )
    elif not (set(doc) & _RECORD_FIELDS[kind]):
        raise PoisonPill("unknown_envelope", f"JSON object with none of the {kind} fields nor a known envelope's")

    event_type = event_type or _header_event_type(headers)
    action = parse_event_type(kind, event_type) if event_type else Action.UPDATED
    record = _validate(kind, body, "data" if wrapper else "value")
    if outbox:
        event_id = headers.get("id") or event_id
    event_id = event_id or next((headers[name] for name in _EVENT_ID_HEADERS if headers.get(name)), None)
    return [
        ChangeEvent(
            kind=kind,
            action=action,
            record_id=record.id,
            record=record,
            format=EnvelopeFormat.DEBEZIUM if outbox else EnvelopeFormat.PLAIN_JSON,
            occurred_at=occurred_at,
            event_id=event_id,
        )
    ]


# ------------------------------------------------------------------------------------------------ decode


def _tombstone(kind: RecordKind, key_id: str | None, headers: Mapping[str, str]) -> list[ChangeEvent]:
    if _is_binary_cloudevent(headers):  # a data-less binary CloudEvent
        return _from_cloudevent(kind, _binary_attributes(headers), None, EnvelopeFormat.CLOUDEVENTS_BINARY, key_id)
    return [
        ChangeEvent(
            kind=kind,
            action=Action.DELETED,
            record_id=_require_id(key_id, "tombstone"),
            record=None,
            format=EnvelopeFormat.TOMBSTONE,
            occurred_at=None,
            event_id=headers.get("id") or None,
        )
    ]


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
    outbox row's delete (none). Raises :class:`PoisonPill` for anything that cannot be decoded.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    header_map = _headers(headers)
    if value is None:
        return _tombstone(kind, _key_id(key), header_map)
    if len(value) > max_value_bytes:
        raise PoisonPill("oversize", f"value is {len(value)} bytes, the limit is {max_value_bytes}")

    content_type = header_map.get("content-type", "").lower()
    if content_type.startswith("application/cloudevents"):
        doc, _ = _unstring(_loads(value, "value"), "value")
        return _structured_cloudevent(kind, doc, _key_id(key))
    if _is_binary_cloudevent(header_map):
        data = None if not value.strip() else _unstring(_loads(value, "value"), "value")[0]
        return _from_cloudevent(
            kind, _binary_attributes(header_map), data, EnvelopeFormat.CLOUDEVENTS_BINARY, _key_id(key)
        )

    doc, was_string = _unstring(_loads(value, "value"), "value")
    schema: Any = None
    if isinstance(doc, dict) and "schema" in doc and "payload" in doc:  # JsonConverter, schemas enabled
        schema = doc["schema"]
        doc, unstrung = _unstring(doc["payload"], "payload")
        was_string = was_string or unstrung
        if doc is None:
            return _tombstone(kind, _key_id(key), header_map)
    if not isinstance(doc, dict) or not doc:
        raise PoisonPill("unknown_envelope", f"value is a JSON {_type_name(doc)}, not a known envelope")

    if "specversion" in doc and "type" in doc:
        return _structured_cloudevent(kind, doc, _key_id(key))
    if "notifications" in doc:
        return _from_hook(kind, doc)
    if _is_debezium(doc):
        return _from_debezium(kind, doc, schema, _key_id(key))
    if _is_flattened(doc):
        return _from_flattened(kind, doc, schema, _key_id(key))
    if (
        isinstance(doc.get("scope"), str)
        and ("id" in doc or "external_id" in doc)
        and not any(name in doc for name in _WRAPPER_DATA_KEYS)
    ):  # a single hook notification without its envelope
        return _from_hook(kind, {"notifications": [doc]})
    outbox = was_string or "id" in header_map
    return _from_plain(kind, doc, header_map, outbox=outbox)
