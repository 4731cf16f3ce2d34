"""What every envelope format shares: the decoded event, the poison pill, and the byte, JSON, key and record checks.

Everything here is pure: no Kafka, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from consumer.errors import IntegrationError
from consumer.records import Customer, KlaviyoProfile, Transaction

RecordKind = Literal["customer", "transaction", "klaviyo_profile"]
PoisonReason = Literal[
    "oversize", "not_utf8", "invalid_json", "schema_violation", "unknown_event_type", "unknown_envelope"
]
DEFAULT_MAX_VALUE_BYTES = 1_048_576

KINDS: frozenset[str] = frozenset(get_args(RecordKind))
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
    record_id: str
    """The record's id, else the id its Kafka key (or envelope) names; empty only for a Transaction that names
    none (``change_id``)."""
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
        if not self.record_id and not _unidentified_transaction(self.record):
            raise ValueError("a change event needs a record id")
        return self


SkipReason = Literal["debezium_truncate", "debezium_message", "heartbeat", "empty_notification_batch"]


class NotAChange(Exception):
    """A readable record that changes no record: a Debezium truncate or logical-decoding message, a connector
    heartbeat, a hook call that notifies nothing. Acknowledged and counted as skipped; never dead-lettered."""

    def __init__(self, reason: SkipReason) -> None:
        self.reason: SkipReason = reason
        super().__init__(reason)


class PoisonPill(IntegrationError):
    """A record that can never be decoded: dead-letter it, don't retry.

    ``reason`` is a short stable code; ``detail`` is short human text that never echoes payload values
    (field locations and error types only).
    """

    # The dead-letter header kafka_dlt-exception-fqcn and pickling name the class where callers import it from.
    __module__ = "consumer.envelopes"

    retryable = False

    detail: str

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


def short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def type_name(value: Any) -> str:
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


def read_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
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


def load_json(data: bytes | str, where: str) -> Any:
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
        raise PoisonPill("invalid_json", f"{where} is not JSON: {short(str(exc), 120)}") from None


def unstring(value: Any, where: str) -> tuple[Any, bool]:
    """A JSON *string* holding JSON (an outbox payload without ``expand.json.payload``) -> the inner value."""
    decoded = False
    for _ in range(2):
        if isinstance(value, str) and value.strip()[:1] in ("{", "[", '"'):
            value = load_json(value.strip(), where)
            decoded = True
        else:
            break
    return value, decoded


def stringify_id(value: Any) -> str | None:
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
                return stringify_id(item)
        if len(doc) == 1:
            return stringify_id(next(iter(doc.values())))
        return None
    return stringify_id(doc)


def read_key_id(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        return None  # an odd key: the value's id is used; a record that needs the key fails for want of an id
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
        loc = ".".join(short(str(part), 40) for part in error["loc"]) or "(root)"
        parts.append(f"{loc}: {error['type']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"+{more} more")
    return short(f"{where}: " + "; ".join(parts), _MAX_DETAIL)


def _unwrap_jsonapi(kind: str, data: Any) -> Any:
    """A Klaviyo JSON:API document ``{"data": {resource}}`` -> the resource."""
    if kind == "klaviyo_profile" and isinstance(data, dict) and "attributes" not in data and "id" not in data:
        inner = data.get("data")
        if isinstance(inner, dict):
            return inner
    return data


def validate(kind: str, data: Any, where: str) -> Customer | Transaction | KlaviyoProfile:
    data = _unwrap_jsonapi(kind, data)
    if not isinstance(data, dict):
        raise PoisonPill("schema_violation", f"{where}: expected a JSON object, got {type_name(data)}")
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        raise PoisonPill("schema_violation", _validation_detail(f"{where} ({kind})", exc)) from None


def validate_lenient(kind: str, data: Any) -> Customer | Transaction | KlaviyoProfile | None:
    """A delete's before-image: informative only, so a partial or malformed one is dropped, not fatal."""
    if not isinstance(data, dict):
        return None
    try:
        return validate(kind, data, "before")
    except PoisonPill:
        return None


def _unidentified_transaction(record: Any) -> bool:
    return isinstance(record, Transaction) and record.id is None


def change_id(record: Customer | Transaction | KlaviyoProfile | None, *fallbacks: str | None, what: str) -> str:
    """The id a change names: its record's, else the first of ``fallbacks`` (the Kafka key's id, a CloudEvent's
    subject, an outbox aggregate id). A Transaction that names none at all is still read (id ``""``): its order
    flow reports the missing unique order id. Anything else without an id is a poison pill."""
    if record is not None and record.id:
        return record.id
    for fallback in fallbacks:
        if fallback:
            return fallback
    if _unidentified_transaction(record):
        return ""
    return require_id(None, what)


def require_id(record_id: str | None, what: str) -> str:
    if not record_id:
        raise PoisonPill("schema_violation", f"{what}: no record id (neither in the record nor in the key)")
    return record_id
