"""Klaviyo JSON:API bodies as pydantic models: request envelopes, the inputs the flows build, and responses.

Request envelopes are dumped with ``exclude_unset`` so PATCH semantics survive: a field set to ``None`` is sent
as ``null`` (Klaviyo clears it), a field never set is left out (Klaviyo keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_jsonable_python

IDENTIFIERS = ("email", "phone_number", "external_id")
MAX_BULK_EVENTS = 1000
MAX_BULK_EVENT_BYTES = 5_000_000
"""Klaviyo's cap on a bulk event job's payload ("5MB", after decompression; read as decimal megabytes)."""
MAX_BULK_PROFILES = 10_000
MAX_BULK_IMPORT_BYTES = 5_000_000
"""Klaviyo's cap on a bulk profile import job's payload ("5MB"; read as decimal megabytes, like the events')."""
MAX_IMPORT_PROFILE_BYTES = 100_000
"""Klaviyo's cap on one profile of a bulk import ("100KB"; read as decimal kilobytes, the stricter reading)."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _json(value: Any) -> bytes:
    """JSON as pydantic's json mode writes it (dates, decimals ...), at orjson's speed."""
    return orjson.dumps(value, default=to_jsonable_python, option=orjson.OPT_PASSTHROUGH_DATETIME)


# --- profiles ---------------------------------------------------------------------------------------------------
class Location(BaseModel):
    """A profile's one postal address (``ProfileLocation``)."""

    model_config = ConfigDict(extra="ignore")

    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    country: str | None = None
    region: str | None = None
    zip: str | None = None
    timezone: str | None = None
    latitude: str | float | None = None
    longitude: str | float | None = None
    ip: str | None = None


class ProfileAttributes(BaseModel):
    """Profile attributes. The read-only ones (``created``, ``updated``, ...) are never sent."""

    model_config = ConfigDict(extra="ignore")
    READ_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"created", "updated", "last_event_date", "subscriptions", "predictive_analytics"}
    )

    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    organization: str | None = None
    locale: str | None = None
    title: str | None = None
    image: str | None = None
    location: Location | None = None
    properties: dict[str, Any] | None = None
    created: datetime | None = None
    updated: datetime | None = None
    last_event_date: datetime | None = None
    subscriptions: dict[str, Any] | None = None
    predictive_analytics: dict[str, Any] | None = None

    def to_request(self) -> dict[str, Any]:
        """The writable attributes that were set (``None`` included: it clears the field)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude=_READ_ONLY)

    def has_identifier(self) -> bool:
        return any(getattr(self, name) for name in IDENTIFIERS)


_READ_ONLY = set(ProfileAttributes.READ_ONLY)


class PatchProperties(BaseModel):
    """``meta.patch_properties``: append to / remove from list properties, or unset keys."""

    append: dict[str, Any] | None = None
    unappend: dict[str, Any] | None = None
    unset: str | list[str] | None = None


class Profile(BaseModel):
    """A profile as Klaviyo returns it."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["profile"] = "profile"
    id: str
    attributes: ProfileAttributes = Field(default_factory=ProfileAttributes)


class ProfilePage(BaseModel):
    """One page of a profile listing, with the cursor of the next page (None on the last page)."""

    profiles: list[Profile]
    next_cursor: str | None = None


class UpsertResult(BaseModel):
    """Outcome of profile-import: the profile, and whether Klaviyo created it (201) or updated it (200)."""

    profile: Profile
    created: bool


# --- events -----------------------------------------------------------------------------------------------------
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
LATEST_EVENT_AHEAD = timedelta(days=365)


def event_time_problem(moment: datetime, now: datetime | None = None) -> str | None:
    """Why Klaviyo would refuse ``moment`` as an event's ``time``, else None.

    The spec (``EventCreateQueryV2.time``): "The time is truncated to the second. The time must be after the year
    1990 and can only be up to 1 year in the future." Read as: later than 1990-01-01T00:00:00Z, and at most 365
    days after ``now`` (the stricter reading of a year), both to the second. Never quotes the time itself.
    """
    moment = (_utc(moment) or moment).astimezone(UTC).replace(microsecond=0)
    if moment <= EARLIEST_EVENT_TIME:
        return "the date is not after 1990-01-01, the earliest event time Klaviyo takes"
    if moment > (now or datetime.now(UTC)) + LATEST_EVENT_AHEAD:
        return "the date is more than a year in the future, the latest event time Klaviyo takes"
    return None


DedupeKey = tuple[str | None, str | None, str | None, str | None, str, str]


class NewEvent(BaseModel):
    """An event to create, e.g. ``Placed Order``. The profile is named by ``profile_id`` or an identifier."""

    metric: str = Field(min_length=1, max_length=127)
    profile: ProfileAttributes = Field(default_factory=ProfileAttributes)
    profile_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    time: datetime | None = None
    value: float | None = None
    value_currency: str | None = None
    unique_id: str | None = None
    backfill: bool | None = None

    @field_validator("time")
    @classmethod
    def _normalise_time(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _needs_profile(self) -> NewEvent:
        if not self.profile_id and not self.profile.has_identifier():
            raise ValueError("an event needs profile_id or a profile identifier (email, phone_number, external_id)")
        return self

    def profile_key(self) -> bytes:
        """Identity of the event's profile (its id and identifiers): Klaviyo de-duplicates events per profile."""
        return orjson.dumps([self.profile_id, *(getattr(self.profile, n) for n in IDENTIFIERS)])

    def dedupe_key(self) -> DedupeKey | None:
        """(profile id and identifiers, metric, unique_id): one bulk job must not hold two events with the same."""
        if self.unique_id is None:
            return None
        profile = self.profile
        return (self.profile_id, profile.email, profile.phone_number, profile.external_id, self.metric,
                self.unique_id)

    def event_attributes(self) -> dict[str, Any]:
        """The event's own attributes (no profile)."""
        attrs: dict[str, Any] = {
            "properties": self.properties,
            "metric": {"data": {"type": "metric", "attributes": {"name": self.metric}}},
        }
        if self.time is not None:
            attrs["time"] = self.time.isoformat()
        for name in ("value", "value_currency", "unique_id", "backfill"):
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        return attrs

    def profile_data(self) -> dict[str, Any]:
        """The event's profile as the resource of its ``profile`` relationship (``ProfileResource.to_dict()``): its id
        when known, and the attributes that were set."""
        if self.profile_id is None:
            return {"type": "profile", "attributes": self.profile.to_request()}
        return {"type": "profile", "id": self.profile_id, "attributes": self.profile.to_request()}


# --- request envelopes ------------------------------------------------------------------------------------------
class _Body(BaseModel):
    """A request envelope: dumped with ``exclude_unset``, so builders set every field they mean to send."""

    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def profile_body(
    attributes: ProfileAttributes, *, profile_id: str | None = None, patch_properties: PatchProperties | None = None,
) -> bytes:
    """The body of ``POST /api/profiles`` (no id), ``PATCH /api/profiles/{id}`` or ``POST /api/profile-import``:
    the bytes ``ProfileCreateQuery``, ``ProfilePartialUpdateQuery`` and ``ProfileUpsertQuery`` write, without
    building and validating them (the attributes are a validated model already)."""
    resource: dict[str, Any] = {"type": "profile"}
    if profile_id is not None:
        resource["id"] = profile_id
    resource["attributes"] = attributes.to_request()
    meta = _meta(patch_properties)
    if meta is not None:
        resource["meta"] = meta
    return _json({"data": resource})


class ProfileResource(_Body):
    type: Literal["profile"]
    id: str | None = None
    attributes: dict[str, Any]
    meta: dict[str, Any] | None = None


class ProfileCreateQuery(_Body):
    """Body of ``POST /api/profiles``."""

    data: ProfileResource

    @classmethod
    def build(cls, attributes: ProfileAttributes) -> ProfileCreateQuery:
        return cls(data=ProfileResource(type="profile", attributes=attributes.to_request()))


def _meta(patch_properties: PatchProperties | None) -> dict[str, Any] | None:
    if patch_properties is None:
        return None
    return {"patch_properties": patch_properties.model_dump(mode="json", exclude_none=True)}


class ProfilePartialUpdateQuery(_Body):
    """Body of ``PATCH /api/profiles/{id}``."""

    data: ProfileResource

    @classmethod
    def build(
        cls, profile_id: str, attributes: ProfileAttributes, patch_properties: PatchProperties | None = None
    ) -> ProfilePartialUpdateQuery:
        resource = ProfileResource(type="profile", id=profile_id, attributes=attributes.to_request())
        meta = _meta(patch_properties)
        if meta is not None:
            resource.meta = meta
        return cls(data=resource)


class ProfileUpsertQuery(_Body):
    """Body of ``POST /api/profile-import`` (create or update)."""

    data: ProfileResource

    @classmethod
    def build(
        cls,
        attributes: ProfileAttributes,
        *,
        profile_id: str | None = None,
        patch_properties: PatchProperties | None = None,
    ) -> ProfileUpsertQuery:
        resource = ProfileResource(type="profile", attributes=attributes.to_request())
        if profile_id is not None:
            resource.id = profile_id
        meta = _meta(patch_properties)
        if meta is not None:
            resource.meta = meta
        return cls(data=resource)


class EventResource(_Body):
    type: Literal["event"]
    attributes: dict[str, Any]


class EventCreateQuery(_Body):
    """Body of ``POST /api/events`` (``EventCreateQueryV2``)."""

    data: EventResource

    @classmethod
    def build(cls, event: NewEvent) -> EventCreateQuery:
        attributes = event.event_attributes()
        attributes["profile"] = {"data": event.profile_data()}
        return cls(data=EventResource(type="event", attributes=attributes))


def event_body(event: NewEvent) -> bytes:
    """The body of ``POST /api/events``: the bytes ``EventCreateQuery.build(event).to_json()`` writes, without building
    and validating the envelope (the event is a validated model already)."""
    attributes = event.event_attributes()
    attributes["profile"] = {"data": event.profile_data()}
    return _json({"data": {"type": "event", "attributes": attributes}})


class _ProfileList(_Body):
    data: list[ProfileResource]


class _ImportJobAttributes(_Body):
    profiles: _ProfileList


class _ListRef(_Body):
    type: Literal["list"]
    id: str


class _ListRelationship(_Body):
    data: list[_ListRef]


class _ImportJobRelationships(_Body):
    lists: _ListRelationship


class ProfileImportJobResource(_Body):
    type: Literal["profile-bulk-import-job"]
    attributes: _ImportJobAttributes
    relationships: _ImportJobRelationships | None = None


class ProfileImportJobCreateQuery(_Body):
    """Body of ``POST /api/profile-bulk-import-jobs``."""

    data: ProfileImportJobResource

    @classmethod
    def build(cls, profiles: Sequence[ProfileAttributes], list_id: str | None = None) -> ProfileImportJobCreateQuery:
        if not profiles:
            raise ValueError("a bulk import needs at least one profile")
        if len(profiles) > MAX_BULK_PROFILES:
            raise ValueError(f"a bulk import takes at most {MAX_BULK_PROFILES} profiles, got {len(profiles)}")
        items = [ProfileResource(type="profile", attributes=p.to_request()) for p in profiles]
        resource = ProfileImportJobResource(
            type="profile-bulk-import-job", attributes=_ImportJobAttributes(profiles=_ProfileList(data=items))
        )
        if list_id is not None:
            resource.relationships = _ImportJobRelationships(
                lists=_ListRelationship(data=[_ListRef(type="list", id=list_id)])
            )
        return cls(data=resource)


_IMPORT_HEAD = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['
_IMPORT_TAIL = b"]}}}}"
IMPORT_JOB_OVERHEAD = len(_IMPORT_HEAD) + len(_IMPORT_TAIL)
"""What an import job's body spends besides its profiles (their ``ImportRow.size``)."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One profile of a bulk import job, serialized once: a ``ProfileUpsertQueryResourceObject`` naming the
    profile to update by ``id``, or none (Klaviyo then matches the identifiers, or creates the profile)."""

    profile_id: str | None
    resource: bytes

    @classmethod
    def of(cls, attributes: ProfileAttributes, profile_id: str | None = None) -> ImportRow:
        resource: dict[str, Any] = {"type": "profile", "attributes": attributes.to_request()}
        if profile_id is not None:
            resource["id"] = profile_id
        return cls(profile_id, _json(resource))

    @property
    def size(self) -> int:
        """The bytes it adds to a job (with its comma)."""
        return len(self.resource) + 1


def import_job_body(rows: Sequence[ImportRow]) -> bytes:
    """The body of ``POST /api/profile-bulk-import-jobs`` for at most 10,000 rows, in their order (Klaviyo's
    import errors point at ``/data/attributes/profiles/data/<row>``)."""
    if not rows:
        raise ValueError("a bulk import needs at least one profile")
    if len(rows) > MAX_BULK_PROFILES:
        raise ValueError(f"a bulk import takes at most {MAX_BULK_PROFILES} profiles, got {len(rows)}")
    return _IMPORT_HEAD + b",".join(row.resource for row in rows) + _IMPORT_TAIL


class EventBulkEntry(_Body):
    type: Literal["event-bulk-create"]
    attributes: dict[str, Any]


class _BulkEntries(_Body):
    data: list[EventBulkEntry]


class _BulkJobAttributes(_Body):
    events_bulk_create: _BulkEntries = Field(alias="events-bulk-create")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EventsBulkCreateJobResource(_Body):
    type: Literal["event-bulk-create-job"]
    attributes: _BulkJobAttributes


_ENTRY_BYTES = 116
"""The most a job spends on an event besides its attributes and profile: the JSON:API wrapping of an entry of its
own (85 bytes with its comma) and of the event (31)."""
_JOB_HEAD = b'{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":{"data":['
_JOB_TAIL = b"]}}}}"
BULK_JOB_OVERHEAD = len(_JOB_HEAD) + len(_JOB_TAIL)
"""What a job's body spends besides its events (their ``EncodedEvent.size``)."""


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event serialized once, for bulk jobs: its attributes and its profile resource as JSON."""

    event: NewEvent
    attributes: bytes
    profile: bytes

    @classmethod
    def of(cls, event: NewEvent) -> EncodedEvent:
        return cls(event, _json(event.event_attributes()), _json(event.profile_data()))

    @property
    def size(self) -> int:
        """The most bytes it adds to a job (as if its profile had an entry of its own)."""
        return len(self.attributes) + len(self.profile) + _ENTRY_BYTES


def bulk_job_layout(events: Sequence[EncodedEvent]) -> list[list[int]]:
    """How a job lays ``events`` out: one list of event positions per entry (events naming the same profile resource
    share one), entries in the order their profile first appears. Klaviyo's error pointers
    (``/data/attributes/events-bulk-create/data/<entry>/attributes/events/data/<event>``) index this layout."""
    entries: dict[bytes, list[int]] = {}
    for position, event in enumerate(events):
        entries.setdefault(event.profile, []).append(position)
    return list(entries.values())


def bulk_job_body(events: Sequence[EncodedEvent]) -> bytes:
    """The body of ``POST /api/event-bulk-create-jobs`` (``EventsBulkCreateJob``) for at most 1000 events, laid out
    as ``bulk_job_layout`` says; a unique_id repeated for one profile and metric raises ``ValueError`` (Klaviyo
    would refuse the whole job)."""
    if not events:
        raise ValueError("a bulk event job needs at least one event")
    if len(events) > MAX_BULK_EVENTS:
        raise ValueError(f"a bulk event job takes at most {MAX_BULK_EVENTS} events, got {len(events)}")
    seen: set[DedupeKey] = set()
    for encoded in events:
        key = encoded.event.dedupe_key()
        if key is not None:
            if key in seen:
                raise ValueError(f"unique_id {encoded.event.unique_id!r} repeats for one profile and metric "
                                 f"{encoded.event.metric!r}; Klaviyo would reject the whole job")
            seen.add(key)
    entries = []
    for positions in bulk_job_layout(events):
        listed = b",".join(b'{"type":"event","attributes":' + events[p].attributes + b"}" for p in positions)
        entries.append(b'{"type":"event-bulk-create","attributes":{"profile":{"data":' + events[positions[0]].profile
                       + b'},"events":{"data":[' + listed + b"]}}}")
    return _JOB_HEAD + b",".join(entries) + _JOB_TAIL


class EventsBulkCreateJob(_Body):
    """Body of ``POST /api/event-bulk-create-jobs``, as a model (what ``bulk_job_body`` writes, for reading)."""

    data: EventsBulkCreateJobResource

    @classmethod
    def build(cls, events: Sequence[NewEvent]) -> EventsBulkCreateJob:
        return cls.model_validate_json(bulk_job_body([EncodedEvent.of(event) for event in events]))


# --- bulk import job responses ----------------------------------------------------------------------------------
class BulkImportJobAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["queued", "processing", "complete", "cancelled"]
    total_count: int
    completed_count: int | None = 0
    failed_count: int | None = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None


class BulkImportJob(BaseModel):
    """A bulk profile import job and its progress."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["profile-bulk-import-job"] = "profile-bulk-import-job"
    id: str
    attributes: BulkImportJobAttributes

    @property
    def done(self) -> bool:
        return self.attributes.status in ("complete", "cancelled")


class ImportErrorAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str | None = None
    title: str | None = None
    detail: str | None = None
    source: dict[str, Any] | None = None
    original_payload: dict[str, Any] | None = None


class BulkImportError(BaseModel):
    """One failed row of a bulk import job."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["import-error"] = "import-error"
    id: str
    attributes: ImportErrorAttributes


MAX_SUBSCRIPTION_PROFILES = 1000
"""Profiles per subscription (or unsubscription) job."""


def subscription_job(emails: Sequence[str], list_id: str | None, *, subscribe: bool) -> bytes:
    """A ``profile-subscription-bulk-create-job`` (or ``-delete-job``) body for email marketing consent."""
    consent = "SUBSCRIBED" if subscribe else "UNSUBSCRIBED"
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job" if subscribe else "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": [
            {"type": "profile",
             "attributes": {"email": email, "subscriptions": {"email": {"marketing": {"consent": consent}}}}}
            for email in emails
        ]}},
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return orjson.dumps({"data": data})


def list_members(profile_ids: Sequence[str]) -> bytes:
    """A list-relationship body (``ListMembersAddQuery`` / ``ListMembersDeleteQuery``)."""
    return orjson.dumps({"data": [{"type": "profile", "id": profile_id} for profile_id in profile_ids]})


def email_consent(profile: Profile) -> str | None:
    """The profile's email marketing consent (SUBSCRIBED, UNSUBSCRIBED, NEVER_SUBSCRIBED), None when not read."""
    subscriptions = profile.attributes.subscriptions or {}
    marketing = (subscriptions.get("email") or {}).get("marketing") if isinstance(subscriptions, dict) else None
    consent = marketing.get("consent") if isinstance(marketing, dict) else None
    return consent if isinstance(consent, str) else None
