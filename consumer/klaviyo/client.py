"""The Klaviyo REST client: typed operations over httpx with rate limiting, retries and catalog errors.

Every request goes through the shared ``consumer.http.sender.Sender`` (quota, retries, ``Retry-After``, metrics)
with the credential as an ``httpx.Auth`` flow (``CredentialFlow``); only the status and body the spec documents
for an operation count as its success. ``KlaviyoDialect`` words the failures: ``KlaviyoRejected`` for an answer,
``KlaviyoConnectionError`` when Klaviyo can't be reached, either with ``outage`` set when Klaviyo (its
availability, the credential, the configuration) failed rather than the record. A success status whose JSON (or
empty) body lacks what the operation returns ("Klaviyo answered 201 to POST /api/profiles without the profile it
should return") is a ``KlaviyoRejected`` of the record, retryable: Klaviyo answered, so nothing says it is out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from consumer.errors import Outage
from consumer.http.backoff import Backoff
from consumer.http.content import unreadable_parts
from consumer.http.lanes import LaneTransport
from consumer.http.ratelimit import LimiterRegistry, Sleep, SlidingWindowLimiter
from consumer.http.redact import Redactor
from consumer.http.sender import (
    Call,
    RequestMetrics,
    RetryRules,
    Sender,
    is_empty_or_json,
    json_document,
)
from consumer.http.transport import build_timeout
from consumer.klaviyo.auth import Auth, CredentialFlow
from consumer.klaviyo.errors import (
    DESTINATION,
    KlaviyoConnectionError,
    KlaviyoRejected,
    answered_without,
    expected_available_s,
    klaviyo_redactor,
    parse_error_body,
    rejected_from_response,
)
from consumer.klaviyo.lookups import CoalescedLookups
from consumer.klaviyo.models import (
    MAX_BULK_EVENTS,
    MAX_SUBSCRIPTION_PROFILES,
    BulkImportError,
    BulkImportJob,
    EncodedEvent,
    ImportRow,
    NewEvent,
    PatchProperties,
    Profile,
    ProfileAttributes,
    ProfileImportJobCreateQuery,
    ProfilePage,
    UpsertResult,
    bulk_job_body,
    event_body,
    import_job_body,
    list_members,
    profile_body,
    subscription_job,
)
from consumer.klaviyo.ratelimits import ENDPOINTS, EndpointLimit, resolve_limits
from consumer.observability.metrics import (
    KLAVIYO_RATE_LIMIT_WAIT_SECONDS,
    KLAVIYO_RATE_LIMIT_WAITS,
    KLAVIYO_REQUEST_SECONDS,
    KLAVIYO_REQUESTS,
    KLAVIYO_THROTTLED,
)
from consumer.settings import KlaviyoSettings

logger = logging.getLogger("consumer.klaviyo")

M = TypeVar("M", bound=BaseModel)

JSONAPI = "application/vnd.api+json"
USER_AGENT = "ipaas-klaviyo/0.1"
DEFAULT_BACKOFF = Backoff(base_s=0.5, cap_s=30.0)
RETRY_AFTER_CAP_S = 60.0
LIMITER_MARGIN_S = 0.1  # tolerates ~100 ms of jitter between our clock and Klaviyo's window counters
LOOKUP_VALUES = 100
"""Values per ``any(...)`` profile lookup: a page (at most 100 profiles) holds every match of an identifier's."""


def _filter_value(value: str) -> str:
    """A string for a filter expression: double-quoted and escaped (``equals(email,"a@b.com")``)."""
    return orjson.dumps(value).decode()


def _filter_time(value: datetime) -> str:
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.isoformat()


def _next_cursor(response: httpx.Response) -> str | None:
    document = json_document(response)
    links = document.get("links") if isinstance(document, dict) else None
    return _cursor_of(links.get("next")) if isinstance(links, dict) else None


def _cursor_of(next_link: object) -> str | None:
    if not isinstance(next_link, str) or not next_link:
        return None
    values = parse_qs(urlsplit(next_link).query).get("page[cursor]")
    return values[0] if values else None


class KlaviyoClient:
    """Async Klaviyo API client; use as ``async with KlaviyoClient(settings, auth) as client``.

    ``rate_limits`` overrides endpoint-class limits (tests, or a quota agreed with Klaviyo); ``limiters`` lets
    several clients of one account share their limiters; ``limiter_margin_s`` widens every window a little so
    timing jitter between us and Klaviyo's counters doesn't cause 429s (0.1 s: ~10 % of the burst quota).
    Without an explicit ``transport`` it sends through a ``LaneTransport`` of ``settings.max_connections``
    connections. ``sleep`` waits out the backoff between retries (tests record the delays instead). Secrets never
    appear in its errors, logs or repr.
    """

    def __init__(
        self,
        settings: KlaviyoSettings,
        auth: Auth,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limits: Mapping[str, EndpointLimit] | None = None,
        limiters: LimiterRegistry | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        retry_after_cap_s: float = RETRY_AFTER_CAP_S,
        limiter_margin_s: float = LIMITER_MARGIN_S,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._auth = auth
        self._limits = resolve_limits(rate_limits)
        self._limiters = limiters if limiters is not None else LimiterRegistry(margin_s=limiter_margin_s)
        self._redactor = klaviyo_redactor(auth.secrets)
        self._by_external_id = CoalescedLookups(
            "external_id", self._find_by_external_id, lambda values: self.find_profiles("external_id", values),
            batch=LOOKUP_VALUES)
        self._http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            timeout=build_timeout(settings.connect_timeout_s, settings.read_timeout_s),
            transport=transport if transport is not None else LaneTransport(settings.max_connections),
            auth=CredentialFlow(auth),
            follow_redirects=False,
            headers={
                "revision": settings.revision,
                "accept": JSONAPI,
                "user-agent": USER_AGENT,
            },
        )
        self._sender = Sender(
            self._http,
            KlaviyoDialect(self._redactor),
            rules=RetryRules(
                max_retries=settings.max_retries,
                total_timeout_s=settings.total_timeout_s,
                backoff=backoff,
                retry_after_cap_s=retry_after_cap_s,
                adaptive_limits=settings.rate_limit,
            ),
            metrics=RequestMetrics(
                requests=KLAVIYO_REQUESTS,
                seconds=KLAVIYO_REQUEST_SECONDS,
                throttled=KLAVIYO_THROTTLED,
                limiter_waits=KLAVIYO_RATE_LIMIT_WAITS,
                limiter_wait_seconds=KLAVIYO_RATE_LIMIT_WAIT_SECONDS,
            ),
            scrub=self._redactor.scrub,
            logger=logger,
            rng=rng,
            sleep=sleep,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._by_external_id.aclose()
        await self._http.aclose()

    def __repr__(self) -> str:
        return (
            f"KlaviyoClient(base_url={self._settings.base_url!r}, revision={self._settings.revision!r}, "
            f"auth={self._auth!r})"
        )

    def set_quota_share(self, fraction: float) -> None:
        """Spend ``fraction`` of the account's quota: this instance's part, by the partitions it was assigned."""
        self._limiters.set_share(fraction)

    async def probe(self) -> None:
        """One cheap read (a page of one profile), asked once: returns when Klaviyo answers as documented."""
        response = await self._send("get_profiles", "/api/profiles", params={"page[size]": 1}, retries=0)
        self._listing(Profile, response, "get_profiles", "the list of profiles")

    # --- profiles ------------------------------------------------------------------------------------------------
    async def get_profile(self, profile_id: str) -> Profile:
        """The profile with this id; a missing one raises ``KlaviyoRejected`` with ``http_status == 404``."""
        response = await self._send("get_profile", f"/api/profiles/{quote(profile_id, safe='')}")
        return self._resource(Profile, response, "get_profile", "the profile")

    async def find_profile_by_email(self, email: str) -> Profile | None:
        """The profile holding this email (exact match), or None."""
        return await self._find_one(f"equals(email,{_filter_value(email)})")

    async def find_profile_by_external_id(self, external_id: str) -> Profile | None:
        """The profile holding this external_id, or None: concurrent lookups share requests
        (``consumer.klaviyo.lookups``)."""
        return await self._by_external_id.find(external_id)

    async def _find_by_external_id(self, external_id: str) -> Profile | None:
        return await self._find_one(f"equals(external_id,{_filter_value(external_id)})")

    async def find_profile_by_phone_number(self, phone_number: str) -> Profile | None:
        """The profile holding this E.164 phone number, or None."""
        return await self._find_one(f"equals(phone_number,{_filter_value(phone_number)})")

    async def find_profiles(self, field: str, values: Sequence[str]) -> list[Profile]:
        """The profiles holding any of ``values`` of one identifier (``email``, ``phone_number``, ``external_id``
        or ``id``; exact matches): one ``any(...)`` lookup per 100 values, every page of each."""
        if field not in ("email", "phone_number", "external_id", "id"):
            raise ValueError(f"profiles cannot be looked up by {field!r}")
        found: list[Profile] = []
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), LOOKUP_VALUES):
            chunk = ",".join(_filter_value(value) for value in unique[start : start + LOOKUP_VALUES])
            params: dict[str, Any] = {"filter": f"any({field},[{chunk}])", "page[size]": 100}
            while True:
                response = await self._send("get_profiles", "/api/profiles", params=params)
                found.extend(self._listing(Profile, response, "get_profiles", "the list of profiles"))
                cursor = _next_cursor(response)
                if cursor is None:
                    break
                params = {**params, "page[cursor]": cursor}
        return found

    async def _find_one(self, expression: str) -> Profile | None:
        response = await self._send("get_profiles", "/api/profiles", params={"filter": expression, "page[size]": 1})
        profiles = self._listing(Profile, response, "get_profiles", "the list of profiles")
        return profiles[0] if profiles else None

    async def create_profile(self, attributes: ProfileAttributes) -> Profile:
        """Create a profile; an identifier another profile holds raises 409 with ``duplicate_profile_id``."""
        response = await self._send("create_profile", "/api/profiles", body=profile_body(attributes))
        return self._resource(Profile, response, "create_profile", "the profile")

    async def update_profile(
        self, profile_id: str, attributes: ProfileAttributes, *, patch_properties: PatchProperties | None = None
    ) -> Profile:
        """PATCH a profile: attributes set to None are cleared, attributes never set are kept."""
        body = profile_body(attributes, profile_id=profile_id, patch_properties=patch_properties)
        response = await self._send("update_profile", f"/api/profiles/{quote(profile_id, safe='')}", body=body)
        return self._resource(Profile, response, "update_profile", "the profile")

    async def upsert_profile(
        self,
        attributes: ProfileAttributes,
        *,
        profile_id: str | None = None,
        patch_properties: PatchProperties | None = None,
    ) -> UpsertResult:
        """Create or update by identifier (profile-import); ``created`` tells which one happened."""
        body = profile_body(attributes, profile_id=profile_id, patch_properties=patch_properties)
        response = await self._send("create_or_update_profile", "/api/profile-import", body=body)
        profile = self._resource(Profile, response, "create_or_update_profile", "the profile")
        return UpsertResult(profile=profile, created=response.status_code == 201)

    async def list_profiles_updated_after(
        self, since: datetime, *, page_size: int = 100, cursor: str | None = None
    ) -> ProfilePage:
        """One page of profiles with ``updated`` after ``since``, oldest first, with their subscriptions."""
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be between 1 and 100")
        params: dict[str, Any] = {
            "filter": f"greater-than(updated,{_filter_time(since)})",
            "sort": "updated",
            "page[size]": page_size,
            "additional-fields[profile]": "subscriptions",  # for the TO flows' subscription mappings
        }
        if cursor:
            params["page[cursor]"] = cursor
        response = await self._send("get_profiles", "/api/profiles", params=params)
        profiles = self._listing(Profile, response, "get_profiles", "the list of profiles")
        return ProfilePage(profiles=profiles, next_cursor=_next_cursor(response))

    async def iter_profiles_updated_after(
        self, since: datetime, *, page_size: int = 100, cursor: str | None = None
    ) -> AsyncIterator[ProfilePage]:
        """Every page of profiles updated after ``since``; each page carries the cursor to resume from."""
        while True:
            page = await self.list_profiles_updated_after(since, page_size=page_size, cursor=cursor)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # --- events --------------------------------------------------------------------------------------------------
    async def create_event(self, event: NewEvent) -> None:
        """Submit one event (202: validated and queued; Klaviyo de-duplicates by profile, metric, unique_id)."""
        await self._send("create_event", "/api/events", body=event_body(event))

    async def bulk_create_events(self, events: Sequence[NewEvent]) -> int:
        """Submit events through bulk jobs of at most 1000 events; returns the number of jobs sent."""
        jobs = 0
        for start in range(0, len(events), MAX_BULK_EVENTS):
            await self.send_event_job([EncodedEvent.of(event) for event in events[start : start + MAX_BULK_EVENTS]])
            jobs += 1
        return jobs

    # --- consent and lists ----------------------------------------------------------------------------------------
    async def get_profile_subscriptions(self, profile_id: str) -> Profile:
        """The profile with its ``subscriptions`` (``additional-fields[profile]=subscriptions``)."""
        response = await self._send(
            "get_profile", f"/api/profiles/{quote(profile_id, safe='')}",
            params={"additional-fields[profile]": "subscriptions"},
        )
        return self._resource(Profile, response, "get_profile", "the profile")

    async def subscribe_profiles(self, list_id: str, emails: Sequence[str]) -> None:
        """Email marketing consent SUBSCRIBED for these emails, and the list joined (a subscription job, 202)."""
        for start in range(0, len(emails), MAX_SUBSCRIPTION_PROFILES):
            body = subscription_job(emails[start : start + MAX_SUBSCRIPTION_PROFILES], list_id, subscribe=True)
            await self._send("bulk_subscribe_profiles", "/api/profile-subscription-bulk-create-jobs", body=body)

    async def unsubscribe_profiles(self, list_id: str | None, emails: Sequence[str]) -> None:
        """Email marketing consent UNSUBSCRIBED for these emails (an unsubscription job, 202)."""
        for start in range(0, len(emails), MAX_SUBSCRIPTION_PROFILES):
            body = subscription_job(emails[start : start + MAX_SUBSCRIPTION_PROFILES], list_id, subscribe=False)
            await self._send("bulk_unsubscribe_profiles", "/api/profile-subscription-bulk-delete-jobs", body=body)

    async def find_list_id(self, name: str) -> str | None:
        """The id of the list named exactly ``name`` (the first by id when several share it), or None."""
        response = await self._send("get_lists", "/api/lists",
                                    params={"filter": f"equals(name,{_filter_value(name)})", "fields[list]": "name"})
        data = self._data(response, "get_lists", list, "the list of lists")
        ids = sorted(str(item["id"]) for item in data if isinstance(item, dict) and item.get("id"))
        return ids[0] if ids else None

    async def add_profiles_to_list(self, list_id: str, profile_ids: Sequence[str]) -> None:
        """Add profiles to a list (idempotent: a member stays one member). No consent is given."""
        await self._send("add_profiles_to_list", f"/api/lists/{quote(list_id, safe='')}/relationships/profiles",
                         body=list_members(profile_ids))

    async def remove_profiles_from_list(self, list_id: str, profile_ids: Sequence[str]) -> None:
        """Remove profiles from a list (their consent is unchanged)."""
        await self._send("remove_profiles_from_list",
                         f"/api/lists/{quote(list_id, safe='')}/relationships/profiles", body=list_members(profile_ids))

    async def send_event_job(self, events: Sequence[EncodedEvent]) -> None:
        """Submit one bulk job of at most 1000 encoded events (laid out as ``bulk_job_layout`` says)."""
        await self._send("bulk_create_events", "/api/event-bulk-create-jobs", body=bulk_job_body(events))

    # --- bulk profile import -------------------------------------------------------------------------------------
    async def bulk_import_profiles(
        self, profiles: Sequence[ProfileAttributes], *, list_id: str | None = None
    ) -> BulkImportJob:
        """Start a bulk profile import job (at most 10,000 profiles), optionally adding them to a list."""
        body = ProfileImportJobCreateQuery.build(profiles, list_id)
        response = await self._send("bulk_import_profiles", "/api/profile-bulk-import-jobs", body=body.to_json())
        return self._resource(BulkImportJob, response, "bulk_import_profiles", "the import job")

    async def send_import_job(self, rows: Sequence[ImportRow]) -> BulkImportJob:
        """Start a bulk profile import job of at most 10,000 serialized rows (``import_job_body``)."""
        response = await self._send("bulk_import_profiles", "/api/profile-bulk-import-jobs", body=import_job_body(rows))
        return self._resource(BulkImportJob, response, "bulk_import_profiles", "the import job")

    async def get_bulk_import_job(self, job_id: str) -> BulkImportJob:
        """The status and counts of a bulk profile import job."""
        response = await self._send(
            "get_bulk_import_profiles_job", f"/api/profile-bulk-import-jobs/{quote(job_id, safe='')}"
        )
        return self._resource(BulkImportJob, response, "get_bulk_import_profiles_job", "the import job")

    async def get_bulk_import_errors(self, job_id: str) -> list[BulkImportError]:
        """Every failed row of a bulk profile import job (titles and details scrubbed of anything key-shaped)."""
        op = "get_errors_for_bulk_import_profiles_job"
        path = f"/api/profile-bulk-import-jobs/{quote(job_id, safe='')}/import-errors"
        errors: list[BulkImportError] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"page[size]": 100}
            if cursor:
                params["page[cursor]"] = cursor
            response = await self._send(op, path, params=params)
            errors.extend(self._scrubbed(error)
                          for error in self._listing(BulkImportError, response, op, "the list of import errors"))
            cursor = _next_cursor(response)
            if cursor is None:
                return errors

    def _scrubbed(self, error: BulkImportError) -> BulkImportError:
        attributes = error.attributes
        attributes.title = self._redactor.scrub(attributes.title) if attributes.title else attributes.title
        attributes.detail = self._redactor.scrub(attributes.detail) if attributes.detail else attributes.detail
        return error

    # --- quota -------------------------------------------------------------------------------------------------
    @property
    def rate_limited(self) -> bool:
        """Whether requests wait for the client-side quota (``settings.rate_limit``)."""
        return self._settings.rate_limit

    def endpoint_limit(self, endpoint_class: str) -> EndpointLimit:
        """The burst and steady quota of an endpoint class this instance may spend: Klaviyo's (or the override this
        client was given), times its share of the account's quota (``set_quota_share``)."""
        limit = self._limits[endpoint_class]
        share = self._limiter(endpoint_class).share if self._settings.rate_limit else 1.0
        return limit if share >= 1.0 else limit.scaled(share)

    def admission_delay(self, endpoint_class: str) -> float:
        """Seconds until the client-side limiter would admit a request of this class (0: at once)."""
        return self._limiter(endpoint_class).delay() if self._settings.rate_limit else 0.0

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _limiter(self, endpoint_class: str) -> SlidingWindowLimiter:
        windows = self._limits[endpoint_class].windows() if self._settings.rate_limit else ()
        return self._limiters.get((self._auth.account_key, endpoint_class), windows)

    def _data(self, response: httpx.Response, op: str, shape: type[dict[str, Any]] | type[list[Any]],
              what: str) -> Any:
        """The primary ``data`` of a JSON:API answer, when it has the ``shape`` the operation returns (a resource
        with an id, or a list); else the answer lacks ``what`` (an empty body, no ``data``, another shape)."""
        document = json_document(response)
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, shape) or (isinstance(data, dict) and not data.get("id")):
            raise self._without(response, op, what)
        return data

    def _resource(self, model: type[M], response: httpx.Response, op: str, what: str) -> M:
        try:
            return model.model_validate(self._data(response, op, dict, what))
        except ValidationError as exc:
            raise self._without(response, op, what, unreadable_parts(exc)) from None

    def _listing(self, model: type[M], response: httpx.Response, op: str, what: str) -> list[M]:
        try:
            return [model.model_validate(item) for item in self._data(response, op, list, what)]
        except ValidationError as exc:
            raise self._without(response, op, what, unreadable_parts(exc)) from None

    def _without(self, response: httpx.Response, op: str, what: str, problem: str | None = None) -> KlaviyoRejected:
        endpoint = ENDPOINTS[op]
        error = answered_without(response.status_code, endpoint.method, endpoint.path, what, problem, operation=op)
        logger.info("Klaviyo answered without what the operation returns",
                    extra={"endpoint": op, "status": response.status_code, "detail": error.detail})
        return error

    async def _send(
        self,
        op: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        extra_classes: Sequence[str] = (),
        retries: int | None = None,
    ) -> httpx.Response:
        """Send one operation through the shared sender; returns the response of a documented success."""
        endpoint = ENDPOINTS[op]
        call = Call(
            operation=op,
            method=endpoint.method,
            path=path,
            route=endpoint.path,
            success=frozenset(endpoint.success),
            accepts=is_empty_or_json,  # a page or another foreign body is not Klaviyo's: the sender blames it
            params=params,
            body=body,
            headers={"content-type": JSONAPI} if body is not None else {},
            limiters=tuple((name, self._limiter(name)) for name in (op, *extra_classes)),
        )
        return await self._sender.send(call, retries=retries)


class KlaviyoDialect:
    """How Klaviyo words its failures (``consumer.http.sender.Dialect``)."""

    destination = DESTINATION

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def rejected(
        self, response: httpx.Response, call: Call, *, retryable: bool, outage: Outage | None,
        retry_after: float | None,
    ) -> KlaviyoRejected:
        return rejected_from_response(
            response.status_code, response.headers, response.content, redactor=self._redactor,
            retryable=retryable, outage=outage, retry_after=retry_after, operation=call.operation,
        )

    def unreachable(self, detail: str, call: Call) -> KlaviyoConnectionError:
        return KlaviyoConnectionError(detail, operation=call.operation)

    def unexpected(self, response: httpx.Response, call: Call, detail: str) -> KlaviyoRejected:
        return KlaviyoRejected(detail, http_status=response.status_code, retryable=True,
                               outage=Outage.MISCONFIGURED, operation=call.operation)

    def throttle_hint(self, response: httpx.Response) -> float | None:
        body = parse_error_body(response.content, response.headers.get("content-type"))
        return expected_available_s(body.detail if body else None)

    def outage_of(self, response: httpx.Response, call: Call) -> Outage | None:
        """401: the credential is refused. 403: a missing scope refuses the whole account, unless Klaviyo points
        at a field of this request (``source.pointer``), which makes it the record's. An authentication code on
        a 400 (Klaviyo's docs call a bad key a 400 in places) is the credential's too."""
        status = response.status_code
        body = parse_error_body(response.content, response.headers.get("content-type"))
        if status == 401:
            return Outage.UNAUTHORIZED
        if status == 403:
            return None if body is not None and body.source.get("pointer") else Outage.UNAUTHORIZED
        if body is not None and body.code in _AUTHENTICATION_CODES:
            return Outage.UNAUTHORIZED
        return None


_AUTHENTICATION_CODES = frozenset({"not_authenticated", "authentication_failed"})
