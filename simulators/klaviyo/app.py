"""The simulator's request pipeline: admin API, faults, auth, revision, quota, media type, spec validation,
then the Klaviyo operation itself. Every API/OAuth request is recorded for test assertions.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson
from pydantic import ValidationError

from consumer.klaviyo.ratelimits import (
    ENDPOINTS,
    GET_PROFILE_INCLUDE,
    GET_PROFILES_PREDICTIVE,
    EndpointLimit,
    resolve_limits,
)
from simulators.httpserver import Reply, Request
from simulators.klaviyo.config import Faults, SimulatorConfig
from simulators.klaviyo.oauth import OAuthServer
from simulators.klaviyo.quota import FixedWindowQuota, Verdict
from simulators.klaviyo.spec import Spec
from simulators.klaviyo.store import (
    TITLES,
    ApiError,
    EventRecord,
    ImportJob,
    ListRecord,
    ProfileRecord,
    Store,
    invalid,
    iso,
)
from simulators.scaffold import (
    RecordingApp,
    RequestLog,
    connection_fault,
    injected_status,
    operation_targeted,
    recorded_body,
)

logger = logging.getLogger("simulators.klaviyo")

JSONAPI = "application/vnd.api+json"
_BODY_MEDIA = frozenset({"application/json", "application/vnd.api+json"})
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$")
_SECRET_FORM_KEYS = frozenset({"code", "code_verifier", "refresh_token", "token", "client_secret", "access_token"})
_PROFILE_INCLUDES = frozenset({"conversations", "lists", "push-tokens", "segments"})
_HTML_STATUSES = frozenset({502, 504, 524})
_INJECTED_ERRORS: dict[int, tuple[str, str]] = {
    # the code Klaviyo's error reference gives the status (``invalid`` for a 400), with a detail that fits it
    400: ("invalid", "The request is not valid."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    409: ("conflict", "The request conflicts with the current state of the resource."),
    413: ("request_too_large", "Request entity too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    500: ("error", "A server error occurred."),
    503: ("service_unavailable", "The service is temporarily unavailable. Please try again later."),
}
"""What an injected error status is answered with (a 4xx without an entry: ``invalid`` with its title)."""
_PROFILE_ADDITIONAL_FIELDS = frozenset({"subscriptions", "predictive_analytics"})
MAX_SUBSCRIPTION_PROFILES = 1000

_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(r"^/api/profiles/?$"), {"GET": "get_profiles", "POST": "create_profile"}),
    (re.compile(r"^/api/profiles/(?P<id>[^/]+)/?$"), {"GET": "get_profile", "PATCH": "update_profile"}),
    (re.compile(r"^/api/profile-import/?$"), {"POST": "create_or_update_profile"}),
    (re.compile(r"^/api/events/?$"), {"GET": "get_events", "POST": "create_event"}),
    (re.compile(r"^/api/event-bulk-create-jobs/?$"), {"POST": "bulk_create_events"}),
    (re.compile(r"^/api/profile-bulk-import-jobs/?$"), {"POST": "bulk_import_profiles"}),
    (re.compile(r"^/api/profile-bulk-import-jobs/(?P<id>[^/]+)/?$"), {"GET": "get_bulk_import_profiles_job"}),
    (
        re.compile(r"^/api/profile-bulk-import-jobs/(?P<id>[^/]+)/import-errors/?$"),
        {"GET": "get_errors_for_bulk_import_profiles_job"},
    ),
    (re.compile(r"^/api/profile-subscription-bulk-create-jobs/?$"), {"POST": "bulk_subscribe_profiles"}),
    (re.compile(r"^/api/profile-subscription-bulk-delete-jobs/?$"), {"POST": "bulk_unsubscribe_profiles"}),
    (re.compile(r"^/api/lists/?$"), {"GET": "get_lists"}),
    (
        re.compile(r"^/api/lists/(?P<id>[^/]+)/relationships/profiles/?$"),
        {"POST": "add_profiles_to_list", "DELETE": "remove_profiles_from_list"},
    ),
]
#: The Klaviyo operations (operationIds) the simulator answers: the vendored contract keeps these (and ENDPOINTS').
ROUTED_OPERATIONS: frozenset[str] = frozenset(op for _, methods in _ROUTES for op in methods.values())
_OAUTH_ROUTES = {
    "/oauth/authorize": ("GET", "oauth_authorize"),
    "/oauth/token": ("POST", "oauth_token"),
    "/oauth/revoke": ("POST", "oauth_revoke"),
}


@dataclass(slots=True)
class ReceivedRequest:
    """One request as the simulator saw it (no credentials: only the auth scheme is kept)."""

    seq: int
    at: float
    monotonic: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    operation: str | None = None
    auth_scheme: str | None = None
    account: str | None = None
    status: int | None = None
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Caller:
    account: str
    quota_key: str
    scopes: frozenset[str] | None


@dataclass(slots=True)
class SimulatorState(RequestLog[ReceivedRequest]):
    """Everything the simulator holds; tests reach it in-process through ``KlaviyoSimulator.state``."""

    config: SimulatorConfig
    spec: Spec | None = None
    store: Store = field(default_factory=Store)
    faults: Faults = field(default_factory=Faults)
    quota: FixedWindowQuota = field(default_factory=FixedWindowQuota)
    requests: deque[ReceivedRequest] = field(default_factory=deque)
    stats: Counter[str] = field(default_factory=Counter)
    oauth: OAuthServer = field(init=False)
    rng: random.Random = field(init=False)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.oauth = OAuthServer(self.config)
        self.rng = random.Random(self.config.seed)
        self.requests = deque(maxlen=self.config.max_recorded_requests)

    def count(self, received: ReceivedRequest) -> None:
        if received.status == 429:
            self.stats["throttled"] += 1

    def reset(self) -> None:
        """Forget all data, requests, faults, counters and OAuth grants (the config stays)."""
        self.store = Store()
        self.faults = Faults()
        self.quota.reset()
        self.requests.clear()
        self.stats.clear()
        self.oauth.reset()


def _json_reply(status: int, document: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, orjson.dumps(document), JSONAPI, headers or [])


def error_reply(error: ApiError, headers: list[tuple[str, str]] | None = None) -> Reply:
    return _json_reply(error.status, error.document(), headers)


def _html_page(status: int, title: str) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{status} {title}</title></head><body><center><h1>{status} {title}"
        "</h1></center><hr><center>cloudflare</center></body></html>"
    ).encode()


def _portal_page() -> bytes:
    return (
        b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head><body><h1>Welcome</h1>"
        b"<p>Please accept the terms of use to continue.</p><form method=\"post\" action=\"/login\">"
        b"<button>Accept</button></form></body></html>"
    )


class SimulatorApp(RecordingApp[ReceivedRequest]):
    """The request handler the HTTP server calls."""

    state: SimulatorState

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def _admin_reply(self, request: Request) -> Reply:
        try:
            return self._admin(request)
        except (ValueError, ValidationError) as exc:
            return Reply(400, orjson.dumps({"error": str(exc)}), "application/json")

    def _receive(self, request: Request) -> ReceivedRequest:
        state = self.state
        return ReceivedRequest(
            seq=state.next_seq(),
            at=time.time(),
            monotonic=time.monotonic(),
            method=request.method,
            path=request.path,
            query={k: v[-1] for k, v in request.query.items()},
            headers={k: v for k, v in request.headers.items() if k != "authorization"},
            body=self._recorded_body(request),
            auth_scheme=request.headers.get("authorization", "").split(" ", 1)[0] or None,
        )

    def _failed(self, exc: Exception) -> Reply:
        if isinstance(exc, ApiError):
            return error_reply(exc)
        # a simulator bug answers 500, like a server would
        logger.exception("simulator handler failed")
        return error_reply(ApiError(500, "error", "A server error occurred."))

    @staticmethod
    def _recorded_body(request: Request) -> Any:
        if not request.body:
            return None
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
            return {k: ("***" if k in _SECRET_FORM_KEYS else v[-1]) for k, v in form.items()}
        return recorded_body(request.body)

    # --- pipeline ------------------------------------------------------------------------------------------------
    def _handle(self, request: Request, received: ReceivedRequest) -> Reply:
        oauth_route = _OAUTH_ROUTES.get(request.path.rstrip("/"))
        if oauth_route is not None:
            method, operation = oauth_route
            received.operation = operation
            if request.method != method:
                return error_reply(ApiError(405, "method_not_allowed", f'Method "{request.method}" not allowed.'))
            fault = self._fault(operation, received)
            if fault is not None:
                return fault
            oauth = self.state.oauth
            if operation == "oauth_authorize":
                return oauth.authorize(request)
            return oauth.token(request) if operation == "oauth_token" else oauth.revoke(request)

        operation, params = self._route(request)
        received.operation = operation
        fault = self._fault(operation, received)
        if fault is not None:
            return fault
        config = self.state.config
        if request.oversize:
            return Reply(*self._error_parts(ApiError(
                413, "request_too_large", f"The request body exceeds {config.max_body_bytes} bytes.")), close=True)
        caller = self._authenticate(request)
        received.account = caller.account
        endpoint = ENDPOINTS[operation]
        if caller.scopes is not None and not set(endpoint.scopes) <= caller.scopes:
            raise ApiError(403, "permission_denied", "You do not have permission to perform this action.")
        revision = self._revision(request)
        verdict = self._charge(caller, operation, request)
        if not verdict.allowed:
            return self._throttled(verdict)
        headers = verdict.headers()
        if revision:
            headers.append(("revision", revision))
        try:
            if operation == "bulk_create_events" and len(request.body) > config.max_bulk_event_bytes:
                raise ApiError(413, "request_too_large",
                               f"A bulk event job's payload may be at most {config.max_bulk_event_bytes} bytes.")
            if operation == "bulk_import_profiles" and len(request.body) > config.max_bulk_import_bytes:
                raise ApiError(413, "request_too_large", "A bulk profile import job's payload may be at most "
                                                         f"{config.max_bulk_import_bytes} bytes.")
            body = self._body(request, operation)
            try:
                reply = self._operation(operation, params, request, body)
            except (KeyError, TypeError, AttributeError, IndexError) as exc:  # only without the spec's checks
                raise invalid(f"Malformed request body: {type(exc).__name__} {exc}", pointer="/data") from exc
        except ApiError as exc:
            faults = self.state.faults
            if faults.omit_error_sources and operation_targeted(faults, operation):
                exc.pointer = exc.parameter = None
            return error_reply(exc, headers)
        reply.headers.extend(headers)
        faults = self.state.faults
        if faults.hollow_next > 0 and 200 <= reply.status < 300 and operation_targeted(faults, operation):
            faults.hollow_next -= 1
            received.fault = "hollow"
            reply.body, reply.content_type = b"", None
        return reply

    def _route(self, request: Request) -> tuple[str, dict[str, str]]:
        for pattern, methods in _ROUTES:
            match = pattern.match(request.path)
            if match:
                operation = methods.get(request.method)
                if operation is None:
                    raise ApiError(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
                return operation, match.groupdict()
        raise ApiError(404, "not_found", f"The path {request.path} could not be found.")

    def _authenticate(self, request: Request) -> _Caller:
        header = request.headers.get("authorization", "").strip()
        if not header:
            raise ApiError(401, "not_authenticated", "Authentication credentials were not provided.")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        config = self.state.config
        if scheme.lower() == "klaviyo-api-key" and credential:
            grant = config.api_keys.get(credential)
            if grant is None:
                raise ApiError(401, "authentication_failed", "Incorrect authentication credentials.",
                               title="Incorrect authentication credentials.")
            return _Caller(grant.account, grant.account, grant.scopes)
        if scheme.lower() == "bearer" and credential:
            access = self.state.oauth.grant_for(credential)
            if access is None:
                raise ApiError(401, "authentication_failed", "Incorrect authentication credentials.",
                               title="Incorrect authentication credentials.")
            return _Caller(access.account, f"{access.account}/{access.client_id}", access.scopes)
        raise ApiError(401, "not_authenticated", "Authentication credentials were not provided or are malformed.")

    def _revision(self, request: Request) -> str | None:
        config = self.state.config
        revision = request.headers.get("revision")
        if revision is None:
            if config.require_revision:
                raise invalid("The 'revision' header is required.", parameter="revision")
            return None
        if not _REVISION.match(revision):
            raise invalid(f"'{revision}' is not a valid revision; use YYYY-MM-DD.", parameter="revision")
        if config.require_revision and config.revisions and revision not in config.revisions:
            raise invalid(f"Revision '{revision}' is not supported.", parameter="revision")
        return revision

    def _charge(self, caller: _Caller, operation: str, request: Request) -> Verdict:
        config = self.state.config
        if not config.rate_limits_enabled:
            return Verdict(True)
        classes: list[tuple[str, EndpointLimit]] = [(operation, config.rate_limits[operation])]
        include = set(filter(None, (request.param("include") or "").split(",")))
        fields = set(filter(None, (request.param("additional-fields[profile]") or "").split(",")))
        if operation == "get_profile" and include & {"lists", "segments"}:
            classes.append((GET_PROFILE_INCLUDE, config.rate_limits[GET_PROFILE_INCLUDE]))
        if operation == "get_profiles" and "predictive_analytics" in fields:
            classes.append((GET_PROFILES_PREDICTIVE, config.rate_limits[GET_PROFILES_PREDICTIVE]))
        return self.state.quota.charge(caller.quota_key, classes)

    def _throttled(self, verdict: Verdict) -> Reply:
        seconds = verdict.retry_after_s
        error = ApiError(
            429, "throttled", f"Request was throttled. Expected available in {seconds} second{'s' * (seconds != 1)}.",
            pointer="/data",
        )
        document = error.document()
        document["errors"][0]["links"] = {
            "type": "https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling#rate-limits"
        }
        headers = [("retry-after", str(seconds))] if self.state.config.send_retry_after else []
        return _json_reply(429, document, headers)

    def _body(self, request: Request, operation: str) -> Any:
        if request.method not in ("POST", "PATCH", "DELETE") or (request.method == "DELETE" and not request.body):
            return None
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in _BODY_MEDIA:
            raise ApiError(415, "unsupported_media_type", f'Unsupported media type "{media}" in request.')
        try:
            document = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"JSON parse error - {exc}", pointer="/") from exc
        spec = self.state.spec
        if self.state.config.validate_bodies:
            if spec is not None:
                issue = spec.validate_request(operation, document)
                if issue is not None:
                    raise invalid(issue.message, pointer=issue.pointer)
            elif not isinstance(document, dict) or not isinstance(document.get("data"), dict):
                raise invalid("'data' is a required property", pointer="/data")
        if operation in ("create_profile", "update_profile", "create_or_update_profile") and (
            len(request.body) > self.state.config.max_profile_bytes
        ):
            raise invalid("The profile payload exceeds 100 KB.", pointer="/data")
        return document

    def _fault(self, operation: str, received: ReceivedRequest) -> Reply | None:
        faults = self.state.faults
        if not operation_targeted(faults, operation):
            return None
        rng = self.state.rng
        dropped = connection_fault(faults, rng, hang_rate=faults.hang_rate)
        if dropped is not None:
            received.fault, reply = dropped
            return reply
        if faults.challenge_next > 0:
            faults.challenge_next -= 1
            received.fault = "challenge"
            return Reply(403, _html_page(403, "Forbidden"), "text/html; charset=UTF-8",
                         [("cf-mitigated", "challenge")])
        if faults.captive_portal:
            received.fault = "captive_portal"
            return Reply(200, _portal_page(), "text/html; charset=UTF-8", [("cache-control", "no-store")])
        if faults.redirect_to:
            received.fault = "redirect"
            location = faults.redirect_to.rstrip("/") + received.path
            if received.query:
                location += "?" + urlencode(received.query)
            body = (f"<html><head><title>301 Moved Permanently</title></head><body><h1>Moved Permanently</h1>"
                    f"<p>The document has moved <a href=\"{location}\">here</a>.</p></body></html>").encode()
            return Reply(301, body, "text/html; charset=iso-8859-1", [("location", location)])
        if faults.unauthorized and not operation.startswith("oauth_"):
            received.fault = "unauthorized"
            return error_reply(ApiError(401, "authentication_failed", "Incorrect authentication credentials.",
                                        title="Incorrect authentication credentials."))
        status = injected_status(faults, rng)
        if status is None:
            return None
        received.fault = f"status:{status}"
        return self._injected(status)

    def _injected(self, status: int) -> Reply:
        title = ApiError(status, "x", "x").title.rstrip(".")
        if status in _HTML_STATUSES or self.state.faults.html_errors:
            from http import HTTPStatus

            try:
                title = HTTPStatus(status).phrase
            except ValueError:
                title = "Origin Time-out" if status == 524 else "Error"
            headers = [("retry-after", "1")] if status in (429, 503) else []
            return Reply(status, _html_page(status, title), "text/html; charset=UTF-8", headers)
        if status == 429:
            return self._throttled(Verdict(False, retry_after_s=1))
        code, detail = _INJECTED_ERRORS.get(status) or (
            ("error", "A server error occurred.") if status >= 500 else ("invalid", TITLES.get(status, "Error.")))
        return error_reply(ApiError(status, code, detail))

    @staticmethod
    def _error_parts(error: ApiError) -> tuple[int, bytes, str]:
        return error.status, orjson.dumps(error.document()), JSONAPI

    # --- operations ----------------------------------------------------------------------------------------------
    def _operation(self, operation: str, params: dict[str, str], request: Request, body: Any) -> Reply:
        store = self.state.store
        base = f"http://{request.headers.get('host', '127.0.0.1')}"
        pace = self.state.config.import_pace
        if pace is not None:
            store.run_jobs(pace)  # profiles imported by now are there for every request, not only the job's reads
        if operation == "get_profiles":
            size = _page_size(request, 20, 100)
            records, cursor = store.list_profiles(
                request.param("filter"), request.param("sort"), size, request.param("page[cursor]")
            )
            with_subscriptions = "subscriptions" in (request.param("additional-fields[profile]") or "").split(",")
            return _json_reply(200, {
                "data": [profile_resource(r, base, subscriptions=with_subscriptions) for r in records],
                "links": _collection_links(base, request, cursor),
            })
        if operation == "get_profile":
            include = [i for i in (request.param("include") or "").split(",") if i]
            bad = next((i for i in include if i not in _PROFILE_INCLUDES), None)
            if bad is not None:
                raise invalid(f"'{bad}' is not an allowed include parameter for this resource.", parameter="include")
            fields = [f for f in (request.param("additional-fields[profile]") or "").split(",") if f]
            bad = next((f for f in fields if f not in _PROFILE_ADDITIONAL_FIELDS), None)
            if bad is not None:
                raise invalid(f"'{bad}' is not an allowed additional field.", parameter="additional-fields[profile]")
            record = store.get_profile(params["id"])
            resource = profile_resource(record, base, subscriptions="subscriptions" in fields)
            document: dict[str, Any] = {"data": resource,
                                        "links": {"self": f"{base}/api/profiles/{record.id}/"}}
            if include:
                document["included"] = []
            return _json_reply(200, document)
        if operation == "create_profile":
            record = store.create_profile(dict(body["data"].get("attributes") or {}))
            return _json_reply(201, _single(profile_resource(record, base)))
        if operation == "update_profile":
            data = body["data"]
            if data.get("id") != params["id"]:
                raise invalid("The id in the request body does not match the id in the URL.", pointer="/data/id")
            record = store.update_profile(params["id"], dict(data.get("attributes") or {}), data.get("meta"))
            return _json_reply(200, _single(profile_resource(record, base)))
        if operation == "create_or_update_profile":
            data = body["data"]
            record, created = store.upsert_profile(data.get("id"), dict(data.get("attributes") or {}),
                                                   data.get("meta"))
            return _json_reply(201 if created else 200, _single(profile_resource(record, base)))
        if operation == "create_event":
            store.create_event(body["data"]["attributes"])
            return Reply(202)
        if operation == "get_events":
            size = _page_size(request, 200, 1000)
            events, cursor = store.list_events(
                request.param("filter"), request.param("sort"), size, request.param("page[cursor]")
            )
            return _json_reply(200, {
                "data": [event_resource(e, base) for e in events],
                "links": _collection_links(base, request, cursor),
            })
        if operation == "bulk_create_events":
            store.bulk_create_events(body["data"]["attributes"]["events-bulk-create"]["data"])
            return Reply(202)
        if operation == "bulk_import_profiles":
            data = body["data"]
            lists = ((data.get("relationships") or {}).get("lists") or {}).get("data") or []
            job = store.create_import_job(
                list(data["attributes"]["profiles"]["data"]), [item["id"] for item in lists],
                self.state.config.max_profile_bytes,
            )
            return _json_reply(202, _single(job_resource(job, base)))
        if operation == "get_bulk_import_profiles_job":
            job = store.get_job(params["id"]) if pace is not None else store.advance_job(params["id"])
            return _json_reply(200, _single(job_resource(job, base)))
        if operation == "get_errors_for_bulk_import_profiles_job":
            job = store.get_job(params["id"])
            size = _page_size(request, 20, 100)
            start = _offset_cursor(request.param("page[cursor]"))
            page = job.errors[start : start + size]
            more = start + size < len(job.errors)
            cursor = str(start + size) if more else None
            return _json_reply(200, {"data": page, "links": _collection_links(base, request, cursor)})
        if operation in ("bulk_subscribe_profiles", "bulk_unsubscribe_profiles"):
            data = body["data"]
            list_data = ((data.get("relationships") or {}).get("list") or {}).get("data")
            list_id = list_data["id"] if isinstance(list_data, dict) else None
            items = list(data["attributes"]["profiles"]["data"])
            if not items or len(items) > MAX_SUBSCRIPTION_PROFILES:
                raise invalid(f"Between 1 and {MAX_SUBSCRIPTION_PROFILES} profiles are accepted per job.",
                              pointer="/data/attributes/profiles/data")
            if operation == "bulk_subscribe_profiles":
                store.subscribe(items, list_id)
            else:
                store.unsubscribe(items, list_id)
            return Reply(202)
        if operation == "get_lists":
            lists = store.find_lists(request.param("filter"))
            return _json_reply(200, {"data": [list_resource(r, base) for r in lists],
                                     "links": _collection_links(base, request, None)})
        if operation in ("add_profiles_to_list", "remove_profiles_from_list"):
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise invalid("'data' is a required property", pointer="/data")
            ids = [item["id"] for item in body["data"]]
            store.change_members(params["id"], ids, add=operation == "add_profiles_to_list")
            return Reply(204)
        raise ApiError(404, "not_found", f"The path {request.path} could not be found.")  # pragma: no cover

    # --- admin ---------------------------------------------------------------------------------------------------
    def _admin(self, request: Request) -> Reply:
        state = self.state
        path = request.path.rstrip("/")
        method = request.method
        payload = orjson.loads(request.body) if request.body else {}
        base = f"http://{request.headers.get('host', '127.0.0.1')}"

        def ok(document: Any, status: int = 200) -> Reply:
            return Reply(status, orjson.dumps(document), "application/json")

        if path == "/__admin/requests":
            if method == "DELETE":
                state.requests.clear()
                return ok({"cleared": True})
            items = state.received(request.param("operation"))
            limit = request.param("limit")
            if limit:
                items = items[-int(limit):]
            return ok({"count": state.stats["requests"], "data": [r.to_dict() for r in items]})
        if path == "/__admin/faults":
            if method in ("PUT", "POST"):
                state.faults = Faults.model_validate(payload)
            elif method == "DELETE":
                state.faults = Faults()
            return ok(state.faults.model_dump(mode="json"))
        if path == "/__admin/reset" and method == "POST":
            state.reset()
            return ok({"reset": True})
        if path == "/__admin/profiles":
            if method == "POST":
                record, created = state.store.upsert_profile(payload.get("id"), dict(payload.get("attributes") or {}),
                                                             payload.get("meta"))
                return ok({"data": profile_resource(record, base)}, 201 if created else 200)
            return ok({"data": [profile_resource(r, base) for r in state.store.profiles.values()]})
        if path == "/__admin/lists":
            if method == "POST":
                return ok({"data": list_resource(state.store.create_list(str(payload["name"])), base)}, 201)
            return ok({"data": [{**list_resource(r, base), "members": sorted(r.members)}
                                for r in state.store.lists.values()]})
        if path == "/__admin/events":
            return ok({"data": [event_admin(e) for e in state.store.events]})
        if path == "/__admin/stats":
            return ok(dict(state.stats))
        if path == "/__admin/config":
            if method in ("PUT", "POST", "PATCH"):
                apply_config(state.config, payload)
                if "rate_limits" in payload or "rate_limit_scale" in payload:
                    state.quota.reset()
            return ok(config_document(state.config))
        if path == "/__admin/oauth":
            if method == "POST":
                if payload.get("expire_access_tokens"):
                    state.oauth.expire_access_tokens()
                state.oauth.deny_next = int(payload.get("deny_next", state.oauth.deny_next))
            return ok(state.oauth.summary())
        return Reply(404, orjson.dumps({"error": f"no admin endpoint {method} {path}"}), "application/json")


# --- rendering ---------------------------------------------------------------------------------------------------
def _single(resource: dict[str, Any]) -> dict[str, Any]:
    return {"data": resource, "links": {"self": resource["links"]["self"]}}


def profile_resource(record: ProfileRecord, base: str, *, subscriptions: bool = False) -> dict[str, Any]:
    """A profile as Klaviyo renders it (``PostProfileResponse`` / ``GetProfileResponse`` data); ``subscriptions``
    when asked with ``additional-fields[profile]=subscriptions``."""
    url = f"{base}/api/profiles/{record.id}"
    attributes = dict(record.attributes)
    attributes.update(
        location=dict(record.location),
        properties=dict(record.properties),
        created=iso(record.created),
        updated=iso(record.updated),
        last_event_date=iso(record.last_event_date),
    )
    if subscriptions:
        attributes["subscriptions"] = subscriptions_of(record)
    return {
        "type": "profile",
        "id": record.id,
        "attributes": attributes,
        "relationships": {
            name: {"links": {"self": f"{url}/relationships/{name}/", "related": f"{url}/{name}/"}}
            for name in ("lists", "segments")
        },
        "links": {"self": f"{url}/"},
    }


def subscriptions_of(record: ProfileRecord) -> dict[str, Any]:
    """``additional-fields[profile]=subscriptions``: the email marketing consent the simulator keeps."""
    return {"email": {"marketing": {
        "can_receive_email_marketing": record.email_consent == "SUBSCRIBED",
        "consent": record.email_consent,
        "consent_timestamp": iso(record.consent_timestamp),
        "last_updated": iso(record.consent_timestamp),
        "method": "API" if record.consent_timestamp else None,
        "suppression": [],
        "list_suppressions": [],
    }}}


def list_resource(record: ListRecord, base: str) -> dict[str, Any]:
    url = f"{base}/api/lists/{record.id}"
    return {
        "type": "list",
        "id": record.id,
        "attributes": {"name": record.name, "created": iso(record.created), "updated": iso(record.updated),
                       "opt_in_process": "single_opt_in"},
        "links": {"self": f"{url}/"},
    }


def event_resource(event: EventRecord, base: str) -> dict[str, Any]:
    url = f"{base}/api/events/{event.id}"
    return {
        "type": "event",
        "id": event.id,
        "attributes": {
            "timestamp": int(event.time.timestamp()),
            "event_properties": event.properties,
            "datetime": iso(event.time),
            "uuid": str(uuid.UUID(int=hash(event.id) & ((1 << 128) - 1))),
        },
        "relationships": {
            "profile": {"data": {"type": "profile", "id": event.profile_id},
                        "links": {"self": f"{url}/relationships/profile/", "related": f"{url}/profile/"}},
            "metric": {"data": {"type": "metric", "id": event.metric_id},
                       "links": {"self": f"{url}/relationships/metric/", "related": f"{url}/metric/"}},
        },
        "links": {"self": f"{url}/"},
    }


def event_admin(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "profile_id": event.profile_id,
        "metric": event.metric_name,
        "metric_id": event.metric_id,
        "time": iso(event.time),
        "value": event.value,
        "value_currency": event.value_currency,
        "unique_id": event.unique_id,
        "backfill": event.backfill,
        "properties": event.properties,
    }


def job_resource(job: ImportJob, base: str) -> dict[str, Any]:
    url = f"{base}/api/profile-bulk-import-jobs/{job.id}"
    relationships: dict[str, Any] = {
        "profiles": {"links": {"self": f"{url}/relationships/profiles/", "related": f"{url}/profiles/"}},
        "import-errors": {"links": {"related": f"{url}/import-errors/"}},
    }
    if job.list_ids:
        relationships["lists"] = {
            "data": [{"type": "list", "id": list_id} for list_id in job.list_ids],
            "links": {"self": f"{url}/relationships/lists/", "related": f"{url}/lists/"},
        }
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": {
            "status": job.status,
            "created_at": iso(job.created_at),
            "total_count": len(job.items),
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "completed_at": iso(job.completed_at),
            "expires_at": iso(job.expires_at),
            "started_at": iso(job.started_at),
        },
        "relationships": relationships,
        "links": {"self": f"{url}/"},
    }


def _collection_links(base: str, request: Request, cursor: str | None) -> dict[str, str]:
    links = {"self": f"{base}{request.target}"}
    if cursor is not None:
        pairs = [(k, v) for k, values in request.query.items() if k != "page[cursor]" for v in values]
        pairs.append(("page[cursor]", cursor))
        links["next"] = f"{base}{request.path}?{urlencode(pairs)}"
    return links


def _page_size(request: Request, default: int, maximum: int) -> int:
    raw = request.param("page[size]")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        raise invalid(f"page[size] must be an integer between 1 and {maximum}.", parameter="page[size]")
    return size


def _offset_cursor(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        return max(int(raw), 0)
    except ValueError as exc:
        raise invalid("The page cursor is invalid.", parameter="page[cursor]") from exc


# --- config over HTTP ----------------------------------------------------------------------------------------------
_FLAGS = ("rate_limits_enabled", "send_retry_after", "require_revision", "validate_bodies", "rotate_refresh_tokens")


def config_document(config: SimulatorConfig) -> dict[str, Any]:
    document: dict[str, Any] = {name: getattr(config, name) for name in _FLAGS}
    document["access_token_ttl_s"] = config.access_token_ttl_s
    document["revisions"] = list(config.revisions)
    document["rate_limits"] = {name: asdict(limit) for name, limit in config.rate_limits.items()}
    return document


def apply_config(config: SimulatorConfig, payload: dict[str, Any]) -> None:
    """Change the config from an admin JSON document (flags, ``rate_limits`` by class, ``rate_limit_scale``)."""
    convert: dict[str, Callable[[Any], Any]] = {name: bool for name in _FLAGS}
    convert["access_token_ttl_s"] = float
    for name, value in payload.items():
        if name in convert:
            setattr(config, name, convert[name](value))
    if "rate_limit_scale" in payload:
        factor = float(payload["rate_limit_scale"])
        config.rate_limits = {name: limit.scaled(factor) for name, limit in resolve_limits().items()}
    if "rate_limits" in payload:
        overrides = {name: EndpointLimit(**value) for name, value in payload["rate_limits"].items()}
        config.rate_limits = resolve_limits({**config.rate_limits, **overrides})
