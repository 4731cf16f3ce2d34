"""Debezium change events (the iPaaS.com and CDC reference, section 3.1).

With or without the JsonConverter ``{"schema", "payload"}`` wrapper (the schema's logical types are decoded:
Connect decimals, day numbers, epoch timestamps), and the flattened ``ExtractNewRecordState`` form
(``__op``/``__deleted``). A captured outbox table row is handed to :mod:`consumer.envelopes.outbox`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from consumer.envelopes.base import (
    Action,
    ChangeEvent,
    EnvelopeFormat,
    NotAChange,
    PoisonPill,
    RecordKind,
    SkipReason,
    change_id,
    require_id,
    short,
    stringify_id,
    validate,
    validate_lenient,
)
from consumer.envelopes.outbox import from_outbox_row, is_outbox_row
from consumer.records import Customer, KlaviyoProfile, Transaction

_DEBEZIUM_OPS: dict[str, Action] = {"c": Action.CREATED, "r": Action.CREATED, "u": Action.UPDATED, "d": Action.DELETED}
_NOT_ROW_CHANGES: dict[str, SkipReason] = {"t": "debezium_truncate", "m": "debezium_message"}
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


def _debezium_event_id(source: Mapping[str, Any], table: Any, record_id: str, op: str) -> str | None:
    position = ",".join(f"{name}={source[name]}" for name in _POSITION_KEYS if source.get(name) is not None)
    if not position:
        return None
    origin = source.get("name") or source.get("connector") or ""
    return f"{origin}/{table or ''}/{record_id}/{op}@{position}"


def is_change_event(doc: Mapping[str, Any]) -> bool:
    """A change event: images plus op or source; or op plus source (truncate and message events have no images)."""
    has_images = "after" in doc or "before" in doc
    return ("op" in doc and ("source" in doc or has_images)) or (has_images and "source" in doc)


def is_flattened(doc: Mapping[str, Any]) -> bool:
    return "__op" in doc or "__deleted" in doc


def from_change_event(kind: RecordKind, doc: Mapping[str, Any], schema: Any, key_id: str | None) -> list[ChangeEvent]:
    op = doc.get("op")
    if not isinstance(op, str) or not op:
        raise PoisonPill("schema_violation", "Debezium event without an op")
    if op in _NOT_ROW_CHANGES:
        raise NotAChange(_NOT_ROW_CHANGES[op])
    if op not in _DEBEZIUM_OPS:
        raise PoisonPill("unknown_event_type", f"Debezium op {short(op, 10)!r} is not a row change")
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

    if is_outbox_row(after if action is not Action.DELETED else before):
        return from_outbox_row(kind, action, after, occurred_at)

    if action is not Action.DELETED and after is None:
        raise PoisonPill("schema_violation", f"Debezium op {op!r} without an after image")
    image, where = (before, "before") if action is Action.DELETED else (after, "after")
    return [_row_change(kind, action, image, where, key_id, occurred_at, source, table, op)]


def _row_change(kind: RecordKind, action: Action, row: Any, where: str, key_id: str | None,
                occurred_at: datetime | None, position: Mapping[str, Any], table: Any, op: str) -> ChangeEvent:
    """The change event of one Debezium row image (a delete keeps what it can read of the row it had)."""
    record: Customer | Transaction | KlaviyoProfile | None
    if action is Action.DELETED:
        record = validate_lenient(kind, row)
        record_id = require_id((record.id if record else None) or _row_id(row) or key_id, "Debezium delete")
    else:
        record = validate(kind, row, where)
        record_id = change_id(record, key_id, what=f"Debezium {where} image")
    return ChangeEvent(kind=kind, action=action, record_id=record_id, record=record,
                       format=EnvelopeFormat.DEBEZIUM, occurred_at=occurred_at,
                       event_id=_debezium_event_id(position, table, record_id, op))


def _row_id(row: Any) -> str | None:
    if isinstance(row, dict):
        return stringify_id(row.get("id"))
    return None


def from_flattened(kind: RecordKind, doc: Mapping[str, Any], schema: Any, key_id: str | None) -> list[ChangeEvent]:
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
    elif isinstance(op, str) and op in _NOT_ROW_CHANGES:
        raise NotAChange(_NOT_ROW_CHANGES[op])
    else:
        raise PoisonPill("unknown_event_type", f"Debezium op {short(str(op), 10)!r} is not a row change")

    occurred_at = _ms_to_datetime(meta.get("source_ts_ms")) or _ms_to_datetime(meta.get("ts_ms"))
    position = {name.removeprefix("source_"): item for name, item in meta.items()}
    table = position.get("table") or position.get("collection")
    return [_row_change(kind, action, row, "value", key_id, occurred_at, position, table,
                        str(op or ("d" if deleted else "u")))]
