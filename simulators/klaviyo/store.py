"""The simulator's in-memory Klaviyo account: profiles, metrics, events and bulk import jobs.

Domain rules follow the fact sheet: unique email / phone_number / external_id (409 duplicate_profile with
``meta.duplicate_profile_id``), PATCH semantics (null clears, absent keeps, properties merge key by key),
profile-import matching, event de-duplication by (profile, metric, unique_id or time to the second), and the
bulk limits. Failures raise ``ApiError``, which the app renders as Klaviyo's error body.
"""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from simulators.klaviyo.filters import (
    Condition,
    FieldRule,
    FilterError,
    compile_filter,
    parse_datetime,
    parse_filter,
)

PROFILE_FIELDS = (
    "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image",
)
LOCATION_FIELDS = (
    "address1", "address2", "city", "country", "latitude", "longitude", "region", "zip", "timezone", "ip",
)
IDENTIFIERS = ("email", "phone_number", "external_id")
MATCH_ORDER = ("email", "external_id", "phone_number")
MAX_BULK_EVENTS = 1000
MAX_BULK_PROFILES = 10_000
MAX_EVENT_PROPERTIES = 400
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict.",
    410: "Gone.",
    413: "Request entity too large.",
    415: "Unsupported media type.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    503: "Service unavailable.",
}


class ApiError(Exception):
    """A Klaviyo error answer: status, ``code``, ``detail`` and where in the request it points."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        pointer: str | None = None,
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or TITLES.get(status, "Error.")
        self.pointer = pointer
        self.parameter = parameter
        self.meta = meta or {}

    def document(self) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.pointer is not None:
            source["pointer"] = self.pointer
        if self.parameter is not None:
            source["parameter"] = self.parameter
        error = {
            "id": str(uuid.uuid4()),
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "source": source,
            "links": {},
            "meta": self.meta,
        }
        return {"errors": [error]}


def invalid(detail: str, *, pointer: str | None = None, parameter: str | None = None) -> ApiError:
    return ApiError(400, "invalid", detail, pointer=pointer, parameter=parameter)


class _Ulid:
    """Monotonic 26-character ULIDs (profile and job ids look like ``01GDDKASAP8TKDDA2GRZDSVP4H``)."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def __call__(self) -> str:
        ms = int(time.time() * 1000)
        if ms <= self._last_ms:
            ms = self._last_ms
            self._last_random += 1
        else:
            self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
        self._last_ms = ms
        value = (ms << 80) | (self._last_random & ((1 << 80) - 1))
        return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _short_id() -> str:
    raw = int.from_bytes(os.urandom(8), "big")
    chars = []
    for _ in range(6):
        raw, index = divmod(raw, len(_ALNUM))
        chars.append(_ALNUM[index])
    return "".join(chars)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(slots=True)
class ProfileRecord:
    id: str
    attributes: dict[str, Any]
    location: dict[str, Any]
    properties: dict[str, Any]
    created: datetime
    updated: datetime
    last_event_date: datetime | None = None
    email_consent: str = "NEVER_SUBSCRIBED"
    """Email marketing consent: NEVER_SUBSCRIBED, SUBSCRIBED or UNSUBSCRIBED (only a subscribe job sets it back)."""
    consent_timestamp: datetime | None = None

    def get(self, name: str) -> Any:
        if name == "id":
            return self.id
        if name in ("created", "updated"):
            return getattr(self, name)
        return self.attributes.get(name)


@dataclass(slots=True)
class EventRecord:
    id: str
    profile_id: str
    metric_id: str
    metric_name: str
    time: datetime
    properties: dict[str, Any]
    value: float | None
    value_currency: str | None
    unique_id: str | None
    backfill: bool

    def get(self, name: str) -> Any:
        return {"metric_id": self.metric_id, "profile_id": self.profile_id, "datetime": self.time,
                "timestamp": int(self.time.timestamp())}.get(name)


@dataclass(slots=True)
class ListRecord:
    id: str
    name: str
    created: datetime
    updated: datetime | None = None
    members: set[str] = field(default_factory=set)

    def get(self, name: str) -> Any:
        return {"id": self.id, "name": self.name, "created": self.created, "updated": self.updated}.get(name)


@dataclass(frozen=True, slots=True)
class ImportPace:
    """How fast bulk profile import jobs run when time moves them: queued for ``queued_s``, then
    ``profiles_per_s`` rows a second (0: every row at once)."""

    queued_s: float = 0.0
    profiles_per_s: float = 0.0


@dataclass(slots=True)
class ImportJob:
    id: str
    items: list[dict[str, Any]]
    list_ids: list[str]
    created_at: datetime
    accepted: datetime
    """When the job was accepted, to the microsecond (``created_at`` is shown to the second)."""
    status: str = "queued"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    completed_count: int = 0
    failed_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    profile_ids: list[str] = field(default_factory=list)
    applied: int = 0
    """Rows processed so far (imported or failed), in request order."""


LIST_FILTERS = {
    "name": FieldRule(frozenset({"any", "equals"})),
    "id": FieldRule(frozenset({"any", "equals"})),
    "created": FieldRule(frozenset({"greater-than"}), "datetime"),
    "updated": FieldRule(frozenset({"greater-than"}), "datetime"),
}
PROFILE_FILTERS = {
    **{name: FieldRule(frozenset({"equals", "any"})) for name in ("id", "email", "phone_number", "external_id")},
    "_kx": FieldRule(frozenset({"equals"})),
    "created": FieldRule(frozenset({"greater-than", "less-than"}), "datetime"),
    "updated": FieldRule(frozenset({"greater-than", "less-than"}), "datetime"),
    "subscriptions.email.marketing.list_suppressions.reason": FieldRule(frozenset({"equals"})),
    "subscriptions.email.marketing.list_suppressions.list_id": FieldRule(frozenset({"equals"})),
    "subscriptions.email.marketing.suppression.reason": FieldRule(frozenset({"equals"})),
    **{
        name: FieldRule(frozenset({"greater-or-equal", "greater-than", "less-or-equal", "less-than"}), "datetime")
        for name in (
            "subscriptions.email.marketing.list_suppressions.timestamp",
            "subscriptions.email.marketing.suppression.timestamp",
        )
    },
}
PROFILE_SORTS = frozenset(
    {"id", "created", "updated", "email", "subscriptions.email.marketing.list_suppressions.timestamp",
     "subscriptions.email.marketing.suppression.timestamp"}
)
EVENT_FILTERS = {
    "metric_id": FieldRule(frozenset({"equals"})),
    "profile_id": FieldRule(frozenset({"equals"})),
    "datetime": FieldRule(frozenset({"greater-or-equal", "greater-than", "less-or-equal", "less-than"}), "datetime"),
    "timestamp": FieldRule(frozenset({"greater-or-equal", "greater-than", "less-or-equal", "less-than"}), "number"),
}
EVENT_SORTS = frozenset({"datetime", "timestamp"})


def _encode_cursor(parts: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise invalid("The page cursor is invalid.", parameter="page[cursor]") from exc
    if not isinstance(parts, list) or len(parts) != 4:
        raise invalid("The page cursor is invalid.", parameter="page[cursor]")
    return parts


def _sort_key(value: Any, record_id: str) -> tuple[Any, ...]:
    return (value is not None, value if value is not None else 0, record_id)


def paginate(
    records: Iterable[Any], sort_field: str, descending: bool, size: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """Keyset pagination over ``records`` (each with ``.id`` and ``.get(field)``)."""

    def key(record: Any) -> tuple[Any, ...]:
        return _sort_key(record.get(sort_field), record.id)

    ordered = sorted(records, key=key, reverse=descending)
    if cursor:
        field_name, desc, raw, last_id = _decode_cursor(cursor)
        if field_name != sort_field or bool(desc) != descending:
            raise invalid("The page cursor does not match the requested sort.", parameter="page[cursor]")
        value: Any = raw
        if isinstance(raw, str) and sort_field in ("created", "updated", "datetime"):
            value = parse_datetime(raw)
        last = _sort_key(value, last_id)
        ordered = [r for r in ordered if (key(r) < last if descending else key(r) > last)]
    page = ordered[:size]
    if len(ordered) <= size or not page:
        return page, None
    tail = page[-1]
    tail_value = tail.get(sort_field)
    encoded = tail_value.isoformat() if isinstance(tail_value, datetime) else tail_value
    return page, _encode_cursor([sort_field, descending, encoded, tail.id])


class Store:
    """One simulated Klaviyo account's data."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ulid = _Ulid()
        self.profiles: dict[str, ProfileRecord] = {}
        self._index: dict[str, dict[str, str]] = {name: {} for name in IDENTIFIERS}
        self.metrics: dict[str, str] = {}
        self.events: list[EventRecord] = []
        self._event_keys: set[tuple[str, str, str]] = set()
        self.jobs: dict[str, ImportJob] = {}
        self._running_jobs: list[ImportJob] = []
        self.lists: dict[str, ListRecord] = {}
        self.earliest_event_year = 1990
        """Event times must be later than this year's first second: the spec says 1990; Klaviyo's docs table says
        2000 (a test sets it to see events the spec allows refused)."""

    def now(self) -> datetime:
        return self._clock().replace(microsecond=0)

    # --- profiles ------------------------------------------------------------------------------------------------
    def owner(self, identifier: str, value: Any) -> str | None:
        return self._index[identifier].get(value) if isinstance(value, str) else None

    def get_profile(self, profile_id: str) -> ProfileRecord:
        record = self.profiles.get(profile_id)
        if record is None:
            raise ApiError(404, "not_found", f"A profile with id {profile_id} does not exist.")
        return record

    @staticmethod
    def check_attributes(attrs: dict[str, Any], pointer: str) -> None:
        """Identifier formats Klaviyo enforces beyond the schema."""
        email = attrs.get("email")
        if isinstance(email, str) and (not _EMAIL.match(email) or len(email) >= 100):
            raise invalid("Invalid email address", pointer=f"{pointer}/email")
        phone = attrs.get("phone_number")
        if isinstance(phone, str) and not _E164.match(phone):
            raise invalid(
                "Invalid phone number format (Example of a valid format: +12345678901)",
                pointer=f"{pointer}/phone_number",
            )

    def _conflict(self, attrs: dict[str, Any], own_id: str | None) -> str | None:
        for name in IDENTIFIERS:
            owner = self.owner(name, attrs.get(name))
            if owner is not None and owner != own_id:
                return owner
        return None

    @staticmethod
    def _duplicate(other_id: str) -> ApiError:
        return ApiError(
            409,
            "duplicate_profile",
            "A profile already exists with one of these identifiers.",
            pointer="/data/attributes",
            meta={"duplicate_profile_id": other_id},
        )

    def _apply(self, record: ProfileRecord, attrs: dict[str, Any], meta: dict[str, Any] | None) -> None:
        for name, value in attrs.items():
            if name in IDENTIFIERS:
                old = record.attributes.get(name)
                if old is not None:
                    self._index[name].pop(old, None)
                if value is not None:
                    self._index[name][value] = record.id
                record.attributes[name] = value
            elif name in PROFILE_FIELDS:
                record.attributes[name] = value
            elif name == "location":
                if value is None:
                    record.location = dict.fromkeys(LOCATION_FIELDS)
                else:
                    record.location.update(value)
            elif name == "properties":
                if value is None:
                    record.properties = {}
                else:
                    record.properties.update(value)
        patch = (meta or {}).get("patch_properties") or {}
        for key, value in (patch.get("append") or {}).items():
            current = record.properties.get(key)
            items = list(current) if isinstance(current, list) else ([] if current is None else [current])
            items.extend(value if isinstance(value, list) else [value])
            record.properties[key] = items
        for key, value in (patch.get("unappend") or {}).items():
            current = record.properties.get(key)
            if isinstance(current, list):
                drop = value if isinstance(value, list) else [value]
                record.properties[key] = [item for item in current if item not in drop]
        unset = patch.get("unset")
        for key in [unset] if isinstance(unset, str) else (unset or []):
            record.properties.pop(key, None)
        record.updated = self.now()

    def _new_profile(self, attrs: dict[str, Any], meta: dict[str, Any] | None = None) -> ProfileRecord:
        now = self.now()
        record = ProfileRecord(
            id=self._ulid(),
            attributes=dict.fromkeys(PROFILE_FIELDS),
            location=dict.fromkeys(LOCATION_FIELDS),
            properties={},
            created=now,
            updated=now,
        )
        self.profiles[record.id] = record
        self._apply(record, attrs, meta)
        return record

    def create_profile(self, attrs: dict[str, Any]) -> ProfileRecord:
        self.check_attributes(attrs, "/data/attributes")
        if not any(attrs.get(name) for name in IDENTIFIERS):
            raise invalid(
                "One of email, phone_number or external_id is required to create a profile.",
                pointer="/data/attributes",
            )
        other = self._conflict(attrs, None)
        if other is not None:
            raise self._duplicate(other)
        return self._new_profile(attrs)

    def update_profile(self, profile_id: str, attrs: dict[str, Any], meta: dict[str, Any] | None) -> ProfileRecord:
        record = self.get_profile(profile_id)
        self.check_attributes(attrs, "/data/attributes")
        other = self._conflict(attrs, record.id)
        if other is not None:
            raise self._duplicate(other)
        self._apply(record, attrs, meta)
        return record

    def upsert_profile(
        self, profile_id: str | None, attrs: dict[str, Any], meta: dict[str, Any] | None, pointer: str = "/data"
    ) -> tuple[ProfileRecord, bool]:
        """profile-import: match by id, then email, external_id, phone_number; create when nothing matches."""
        self.check_attributes(attrs, f"{pointer}/attributes")
        if profile_id:
            record = self.profiles.get(profile_id)
            if record is None:
                raise ApiError(404, "not_found", f"A profile with id {profile_id} does not exist.",
                               pointer=f"{pointer}/")
            other = self._conflict(attrs, record.id)
            if other is not None:
                raise self._duplicate(other)
            self._apply(record, attrs, meta)
            return record, False
        matched: list[str] = []
        for name in MATCH_ORDER:
            owner = self.owner(name, attrs.get(name))
            if owner is not None and owner not in matched:
                matched.append(owner)
        if len(matched) > 1:
            raise self._duplicate(matched[1])
        if matched:
            record = self.profiles[matched[0]]
            self._apply(record, attrs, meta)
            return record, False
        if not any(attrs.get(name) for name in IDENTIFIERS):
            raise invalid("One of email, phone_number or external_id is required.", pointer=f"{pointer}/attributes")
        return self._new_profile(attrs, meta), True

    def list_profiles(
        self, filter_text: str | None, sort: str | None, size: int, cursor: str | None
    ) -> tuple[list[ProfileRecord], str | None]:
        records: Iterable[ProfileRecord] = self.profiles.values()
        indexed = self._by_identifier(filter_text) if filter_text else None
        if indexed is not None:
            records = indexed
        elif filter_text:
            try:
                predicate = compile_filter(filter_text, PROFILE_FILTERS, "profile")
            except FilterError as exc:
                raise invalid(str(exc), parameter="filter") from exc
            records = [r for r in records if predicate(r.get)]
        sort_field, descending = _sort(sort, PROFILE_SORTS, "id")
        return paginate(records, sort_field, descending, size, cursor)

    def _by_identifier(self, filter_text: str) -> list[ProfileRecord] | None:
        """The profiles a filter of one ``equals``/``any`` on an identifier or ``id`` selects, read from the index
        (what a lookup of many identifiers costs Klaviyo, not a scan); None for any other filter."""
        try:
            nodes = parse_filter(filter_text)
        except FilterError:
            return None
        if len(nodes) != 1 or not isinstance(nodes[0], Condition):
            return None
        node = nodes[0]
        if node.field not in (*IDENTIFIERS, "id"):
            return None
        if node.op == "any" and isinstance(node.value, list):
            values = node.value
        elif node.op == "equals" and isinstance(node.value, str):
            values = [node.value]
        else:
            return None
        if not all(isinstance(value, str) for value in values):
            return None
        ids = (self.profiles.get(str(v)) for v in values) if node.field == "id" else (
            self.profiles.get(self._index[node.field].get(str(v), "")) for v in values)
        return list({record.id: record for record in ids if record is not None}.values())

    # --- lists and consent ------------------------------------------------------------------------------------------
    def create_list(self, name: str) -> ListRecord:
        """A new list (the simulator's admin API; Klaviyo lists are made in its UI or by ``create_list``)."""
        record = ListRecord(id=_short_id(), name=name, created=self.now())
        self.lists[record.id] = record
        return record

    def get_list(self, list_id: str) -> ListRecord:
        record = self.lists.get(list_id)
        if record is None:
            raise ApiError(404, "not_found", f"A list with id {list_id} does not exist.")
        return record

    def find_lists(self, filter_text: str | None) -> list[ListRecord]:
        records: Iterable[ListRecord] = self.lists.values()
        if filter_text:
            try:
                predicate = compile_filter(filter_text, LIST_FILTERS, "list")
            except FilterError as exc:
                raise invalid(str(exc), parameter="filter") from exc
            records = [r for r in records if predicate(r.get)]
        return sorted(records, key=lambda r: r.id)

    def change_members(self, list_id: str, profile_ids: Sequence[str], *, add: bool) -> None:
        """Add (idempotent: a member stays one member) or remove profiles; an unknown profile is a 404."""
        record = self.get_list(list_id)
        for profile_id in profile_ids:
            self.get_profile(profile_id)
        for profile_id in profile_ids:
            if add:
                record.members.add(profile_id)
            else:
                record.members.discard(profile_id)
        record.updated = self.now()

    def _consent_target(self, item: dict[str, Any], pointer: str, *, create: bool) -> ProfileRecord | None:
        attrs = item.get("attributes") or {}
        profile_id = item.get("id")
        if profile_id:
            return self.get_profile(profile_id)
        email = attrs.get("email")
        if not isinstance(email, str) or not email:
            raise invalid("An email address is required for an email subscription.", pointer=f"{pointer}/attributes")
        self.check_attributes({"email": email}, f"{pointer}/attributes")
        owner = self.owner("email", email)
        if owner is not None:
            return self.profiles[owner]
        return self._new_profile({"email": email}) if create else None

    def subscribe(self, items: Sequence[dict[str, Any]], list_id: str | None) -> None:
        """A subscription job: email marketing consent SUBSCRIBED (the profile is made when new), list joined."""
        pointer = "/data/attributes/profiles/data"
        if list_id is not None:
            self.get_list(list_id)
        targets = [self._consent_target(item, f"{pointer}/{i}", create=True) for i, item in enumerate(items)]
        for item, record in zip(items, targets, strict=True):
            assert record is not None
            email = ((item.get("attributes") or {}).get("subscriptions") or {}).get("email") or {}
            if (email.get("marketing") or {}).get("consent") == "SUBSCRIBED":
                record.email_consent = "SUBSCRIBED"
                record.consent_timestamp = self.now()
            if list_id is not None:
                self.lists[list_id].members.add(record.id)

    def unsubscribe(self, items: Sequence[dict[str, Any]], list_id: str | None) -> None:
        """An unsubscription job: email marketing consent UNSUBSCRIBED; an unknown email is skipped."""
        pointer = "/data/attributes/profiles/data"
        for i, item in enumerate(items):
            record = self._consent_target(item, f"{pointer}/{i}", create=False)
            if record is None:
                continue
            email = ((item.get("attributes") or {}).get("subscriptions") or {}).get("email") or {}
            if (email.get("marketing") or {}).get("consent") == "UNSUBSCRIBED":
                record.email_consent = "UNSUBSCRIBED"
                record.consent_timestamp = self.now()
            if list_id is not None and list_id in self.lists:
                self.lists[list_id].members.discard(record.id)

    # --- events --------------------------------------------------------------------------------------------------
    def _metric_id(self, name: str) -> str:
        metric_id = self.metrics.get(name)
        if metric_id is None:
            metric_id = _short_id()
            self.metrics[name] = metric_id
        return metric_id

    def validate_event(self, attrs: dict[str, Any], profile: dict[str, Any] | None, pointer: str) -> datetime:
        """Checks Klaviyo applies to an event beyond the schema; returns its time (to the second)."""
        metric = (((attrs.get("metric") or {}).get("data") or {}).get("attributes") or {}).get("name")
        if not isinstance(metric, str) or not metric.strip() or len(metric) >= 128:
            raise invalid("The metric name must be between 1 and 127 characters.",
                          pointer=f"{pointer}/metric/data/attributes/name")
        if profile is not None:
            self.validate_event_profile(profile, f"{pointer}/profile/data")
        properties = attrs.get("properties")
        if isinstance(properties, dict) and len(properties) > MAX_EVENT_PROPERTIES:
            raise invalid(f"An event may have at most {MAX_EVENT_PROPERTIES} properties.",
                          pointer=f"{pointer}/properties")
        value = attrs.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise invalid("'value' must be a number.", pointer=f"{pointer}/value")
        now = self.now()
        raw_time = attrs.get("time")
        if raw_time is None:
            return now
        try:
            moment = parse_datetime(raw_time)
        except FilterError as exc:
            raise invalid(f"'{raw_time}' is not a valid datetime.", pointer=f"{pointer}/time") from exc
        moment = moment.astimezone(UTC).replace(microsecond=0)
        earliest = datetime(self.earliest_event_year, 1, 1, tzinfo=UTC)
        if moment <= earliest or moment > now + timedelta(days=365):
            raise invalid(f"The event time must be after {self.earliest_event_year} and at most one year in the "
                          "future.", pointer=f"{pointer}/time")
        return moment

    def validate_event_profile(self, profile: dict[str, Any], pointer: str) -> None:
        attrs = profile.get("attributes") or {}
        if not profile.get("id") and not any(
            attrs.get(name) for name in (*IDENTIFIERS, "_kx", "anonymous_id")
        ):
            raise invalid("A profile identifier (email, phone_number, external_id or id) is required.",
                          pointer=f"{pointer}/attributes")
        self.check_attributes(attrs, f"{pointer}/attributes")
        if profile.get("id") and profile["id"] not in self.profiles:
            raise ApiError(404, "not_found", f"A profile with id {profile['id']} does not exist.",
                           pointer=f"{pointer}/id")

    def _event_profile_identity(self, profile: dict[str, Any]) -> bytes:
        """The profile an event names, as far as the account knows it: its id, the profile that holds one of its
        identifiers, else the identifiers themselves (a profile the event will create)."""
        attrs = profile.get("attributes") or {}
        owner = profile.get("id") or next(
            (o for n in MATCH_ORDER if (o := self.owner(n, attrs.get(n))) is not None), None)
        if owner:
            return orjson.dumps(["id", owner])
        return orjson.dumps([attrs.get(n) for n in IDENTIFIERS])

    def _event_profile(self, profile: dict[str, Any]) -> ProfileRecord:
        attrs = dict(profile.get("attributes") or {})
        attrs.pop("meta", None)
        if profile.get("id"):
            record = self.profiles[profile["id"]]
        else:
            owner = next((o for n in MATCH_ORDER if (o := self.owner(n, attrs.get(n))) is not None), None)
            if owner is None:
                return self._new_profile(attrs, profile.get("meta"))
            record = self.profiles[owner]
        for name in IDENTIFIERS:  # never steal an identifier from another profile
            other = self.owner(name, attrs.get(name))
            if other is not None and other != record.id:
                attrs.pop(name)
        self._apply(record, attrs, profile.get("meta"))
        return record

    def store_event(self, attrs: dict[str, Any], profile: dict[str, Any], moment: datetime) -> bool:
        """Record a validated event; False when it duplicates one already stored (still a 202)."""
        record = self._event_profile(profile)
        name = attrs["metric"]["data"]["attributes"]["name"]
        metric_id = self._metric_id(name)
        unique_id = attrs.get("unique_id")
        key = (record.id, metric_id, f"u:{unique_id}" if unique_id else f"t:{moment.isoformat()}")
        if key in self._event_keys:
            return False
        self._event_keys.add(key)
        value = attrs.get("value")
        self.events.append(
            EventRecord(
                id=self._ulid(),
                profile_id=record.id,
                metric_id=metric_id,
                metric_name=name,
                time=moment,
                properties=dict(attrs.get("properties") or {}),
                value=float(value) if value is not None else None,
                value_currency=attrs.get("value_currency"),
                unique_id=unique_id,
                backfill=bool(attrs.get("backfill")),
            )
        )
        if record.last_event_date is None or moment > record.last_event_date:
            record.last_event_date = moment
        return True

    def create_event(self, attrs: dict[str, Any]) -> bool:
        profile = attrs["profile"]["data"]
        moment = self.validate_event(attrs, profile, "/data/attributes")
        return self.store_event(attrs, profile, moment)

    def bulk_create_events(self, entries: Sequence[dict[str, Any]]) -> int:
        """Validate every event of a bulk job first (all or nothing), then store; returns events stored."""
        base = "/data/attributes/events-bulk-create/data"
        total = sum(len(((e.get("attributes") or {}).get("events") or {}).get("data") or []) for e in entries)
        if total > MAX_BULK_EVENTS:
            raise invalid(f"A bulk job accepts at most {MAX_BULK_EVENTS} events; got {total}.", pointer=base)
        accepted: list[tuple[dict[str, Any], dict[str, Any], datetime]] = []
        seen: set[tuple[bytes, str, str]] = set()
        for i, entry in enumerate(entries):
            entry_attrs = entry["attributes"]
            profile = entry_attrs["profile"]["data"]
            self.validate_event_profile(profile, f"{base}/{i}/attributes/profile/data")
            identity = self._event_profile_identity(profile)
            for j, event in enumerate(entry_attrs["events"]["data"]):
                attrs = event["attributes"]
                pointer = f"{base}/{i}/attributes/events/data/{j}/attributes"
                moment = self.validate_event(attrs, None, pointer)
                unique_id = attrs.get("unique_id")
                if unique_id:
                    key = (identity, attrs["metric"]["data"]["attributes"]["name"], unique_id)
                    if key in seen:
                        raise invalid(
                            f"Duplicate unique_id '{unique_id}' for the same profile and metric in one request.",
                            pointer=f"{pointer}/unique_id",
                        )
                    seen.add(key)
                if entry_attrs.get("backfill") and "backfill" not in attrs:
                    attrs = {**attrs, "backfill": True}
                accepted.append((attrs, profile, moment))
        return sum(self.store_event(attrs, profile, moment) for attrs, profile, moment in accepted)

    def list_events(
        self, filter_text: str | None, sort: str | None, size: int, cursor: str | None
    ) -> tuple[list[EventRecord], str | None]:
        records: Iterable[EventRecord] = self.events
        if filter_text:
            try:
                predicate = compile_filter(filter_text, EVENT_FILTERS, "event")
            except FilterError as exc:
                raise invalid(str(exc), parameter="filter") from exc
            records = [r for r in records if predicate(r.get)]
        sort_field, descending = _sort(sort, EVENT_SORTS, "datetime")
        return paginate(records, sort_field, descending, size, cursor)

    # --- bulk profile import -------------------------------------------------------------------------------------
    def create_import_job(self, items: list[dict[str, Any]], list_ids: list[str], max_profile_bytes: int) -> ImportJob:
        pointer = IMPORT_ROWS
        if not items:
            raise invalid("At least one profile is required.", pointer=pointer)
        if len(items) > MAX_BULK_PROFILES:
            raise invalid(f"A bulk import accepts at most {MAX_BULK_PROFILES} profiles; got {len(items)}.",
                          pointer=pointer)
        for i, item in enumerate(items):
            if len(orjson.dumps(item)) > max_profile_bytes:
                raise invalid(f"Each profile may be at most {max_profile_bytes // 1024} KB.", pointer=f"{pointer}/{i}")
        job = ImportJob(id=self._ulid(), items=items, list_ids=list_ids, created_at=self.now(),
                        accepted=self._clock())
        self.jobs[job.id] = job
        self._running_jobs.append(job)
        return job

    def get_job(self, job_id: str) -> ImportJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"A profile bulk import job with id {job_id} does not exist.")
        return job

    def advance_job(self, job_id: str) -> ImportJob:
        """Each read moves a job one step: queued -> processing -> complete (rows are applied on completion)."""
        job = self.get_job(job_id)
        if job.status == "queued":
            self._start(job)
        elif job.status == "processing":
            self._process(job, len(job.items))
        return job

    def run_jobs(self, pace: ImportPace) -> None:
        """Move every unfinished job as far as time has taken it (``pace``): the rows due are applied, in order,
        whether anyone reads the job or not."""
        now = self._clock()
        for job in list(self._running_jobs):
            elapsed = (now - job.accepted).total_seconds() - pace.queued_s
            if elapsed < 0:
                continue
            if job.status == "queued":
                self._start(job)
            rows = len(job.items)
            self._process(job, rows if pace.profiles_per_s <= 0 else min(rows, int(elapsed * pace.profiles_per_s)))

    def _start(self, job: ImportJob) -> None:
        job.status = "processing"
        job.started_at = self.now()

    def _process(self, job: ImportJob, upto: int) -> None:
        """Apply rows up to ``upto``; the job is complete when every row is."""
        for i in range(job.applied, upto):
            self._import_row(job, i)
        job.applied = max(job.applied, upto)
        if job.applied >= len(job.items) and job.status != "complete":
            job.status = "complete"
            job.completed_at = self.now()
            job.expires_at = job.completed_at + timedelta(days=7)
            self._running_jobs.remove(job)

    def _import_row(self, job: ImportJob, i: int) -> None:
        """One row, as the bulk import applies it: an upsert (by id, else by identifier) that never clears a field
        (a null is ignored), joining the job's lists (those the account has); a failure is the row's import error,
        pointing at the row in the request."""
        item = job.items[i]
        pointer = f"{IMPORT_ROWS}/{i}"
        try:
            record, _ = self.upsert_profile(item.get("id"), _without_nulls(item.get("attributes") or {}),
                                            item.get("meta"), pointer=pointer)
        except ApiError as exc:
            job.failed_count += 1
            within = exc.pointer is not None and exc.pointer.startswith(pointer)
            job.errors.append({
                "type": "import-error",
                "id": str(uuid.uuid4()),
                "attributes": {"code": exc.code, "title": exc.title, "detail": exc.detail,
                               "source": {"pointer": exc.pointer if within else pointer}, "original_payload": item},
            })
            return
        job.completed_count += 1
        job.profile_ids.append(record.id)
        for list_id in job.list_ids:
            if list_id in self.lists:
                self.lists[list_id].members.add(record.id)


IMPORT_ROWS = "/data/attributes/profiles/data"
"""Where a bulk import job's profiles are in its request: import errors point into it (``.../data/<row>/...``)."""


def _without_nulls(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes without null values (at the top, in ``location`` and in ``properties``): the bulk import API
    updates only the fields given a value; it never clears one."""
    kept: dict[str, Any] = {}
    for name, value in attrs.items():
        if value is None:
            continue
        if name in ("location", "properties") and isinstance(value, dict):
            value = {key: inner for key, inner in value.items() if inner is not None}
        kept[name] = value
    return kept


def _sort(sort: str | None, allowed: frozenset[str], default: str) -> tuple[str, bool]:
    if not sort:
        return default, False
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name not in allowed:
        raise invalid(f"'{sort}' is not a valid sort field.", parameter="sort")
    return name, descending
