"""Klaviyo failures as error-catalog exceptions.

A response Klaviyo rejected becomes ``KlaviyoRejected`` ("Error calling Klaviyo (409 duplicate_profile: ...)");
a transport failure becomes ``KlaviyoConnectionError`` ("An error occurred while contacting Klaviyo (...)").
Both say whether retrying may help and, with ``outage``, whether Klaviyo rather than the record failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST, CatalogError
from consumer.errors import Outage
from consumer.http.content import json_object, reason_phrase, summarize_non_json
from consumer.http.redact import Redactor

# Private keys are "pk_" + 34 alphanumerics; scrub anything key-shaped even if we never saw it.
KEY_PATTERN = re.compile(r"\bpk_[A-Za-z0-9]{20,}")
_KLAVIYO_AUTH = re.compile(r"(?i)\b(klaviyo-api-key\s+)(\S+)")
DESTINATION = "klaviyo"
"""The name Klaviyo goes by in routes, destination health and metrics."""
_EXPECTED_AVAILABLE = re.compile(r"(?i)expected available in (\d+(?:\.\d+)?) second")


def klaviyo_redactor(secrets: Callable[[], Iterable[str]] | None = None) -> Redactor:
    """A redactor for ``secrets`` that also knows Klaviyo's key and header shapes."""
    return Redactor(secrets, patterns=(KEY_PATTERN, _KLAVIYO_AUTH))


class KlaviyoRejected(CatalogError):
    """Klaviyo answered, and not with success. ``duplicate_profile_id`` is set for a 409 duplicate_profile."""

    def __init__(
        self,
        detail: str,
        *,
        http_status: int,
        error_code: str | None = None,
        retryable: bool = False,
        outage: Outage | None = None,
        retry_after: float | None = None,
        duplicate_profile_id: str | None = None,
        source: Mapping[str, Any] | None = None,
        operation: str | None = None,
        errors: tuple[ErrorBody, ...] = (),
    ) -> None:
        super().__init__(
            KLAVIYO_REJECTED_REQUEST,
            detail,
            retryable=retryable,
            destination=DESTINATION,
            outage=outage,
            http_status=http_status,
            error_code=error_code,
            retry_after=retry_after,
        )
        self.duplicate_profile_id = duplicate_profile_id
        self.source = dict(source) if source else None
        self.operation = operation
        self.errors = errors
        """Every entry of Klaviyo's ``errors`` array (details scrubbed), e.g. one per event of a bulk job."""


class EventRejected(KlaviyoRejected):
    """Klaviyo refused one event of a record's events (``consumer.klaviyo.batching``).

    ``index`` is the event's position in what the record submitted; ``field`` is the part of the event Klaviyo
    pointed at, as a path inside the event's attributes (``time``, ``unique_id``, ``metric/data/attributes/name``,
    ``profile/data/attributes/email``; empty when Klaviyo named the event but no field of it).
    """

    def __init__(self, detail: str, *, index: int, field: str, http_status: int, error_code: str | None = None,
                 source: Mapping[str, Any] | None = None, operation: str | None = None) -> None:
        super().__init__(detail, http_status=http_status, error_code=error_code, source=source, operation=operation)
        self.index = index
        self.field = field


class KlaviyoConnectionError(CatalogError):
    """Klaviyo could not be reached, or the exchange broke off (timeouts, resets, refused connections)."""

    def __init__(
        self,
        detail: str,
        *,
        retryable: bool = True,
        outage: Outage | None = Outage.DOWN,
        operation: str | None = None,
    ) -> None:
        super().__init__(
            KLAVIYO_CONNECTION_ERROR, detail, retryable=retryable, destination=DESTINATION, outage=outage
        )
        self.operation = operation


def answered_without(
    status: int, method: str, route: str, what: str, problem: str | None = None, *, operation: str | None = None
) -> KlaviyoRejected:
    """A success status whose body lacks ``what`` the operation returns ("the profile"): Klaviyo's answer, so the
    record's failure (no outage), and retryable (asking again may get the whole answer; a create asked again finds
    what the first one made). ``route`` is the path template: no ids or values."""
    detail = f"Klaviyo answered {status} to {method} {route} without {what} it should return"
    return KlaviyoRejected(f"{detail} ({problem})" if problem else detail, http_status=status, retryable=True,
                           operation=operation)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """The first entry of a JSON:API ``errors`` array (every part optional: real bodies vary)."""

    code: str | None = None
    title: str | None = None
    detail: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    duplicate_profile_id: str | None = None
    count: int = 0


def parse_error_body(content: bytes, content_type: str | None) -> ErrorBody | None:
    """Klaviyo's ``{"errors": [...]}`` body, or None when the body is not such JSON (e.g. an HTML page)."""
    errors = parse_error_bodies(content, content_type)
    return errors[0] if errors else None


def parse_error_bodies(content: bytes, content_type: str | None) -> list[ErrorBody]:
    """Every entry of Klaviyo's ``{"errors": [...]}`` body (empty when the body is not such JSON); ``count`` of
    the first says how many there are."""
    document = json_object(content, content_type)
    if document is None:
        return []
    errors = document.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return []
    return [_error_body(error, len(errors)) for error in errors if isinstance(error, dict)]


def _error_body(error: dict[str, Any], count: int) -> ErrorBody:
    meta = error.get("meta") if isinstance(error.get("meta"), dict) else {}
    source = error.get("source") if isinstance(error.get("source"), dict) else {}
    duplicate = (meta or {}).get("duplicate_profile_id")
    return ErrorBody(
        code=_text(error.get("code")),
        title=_text(error.get("title")),
        detail=_text(error.get("detail")),
        source=dict(source or {}),
        duplicate_profile_id=_text(duplicate),
        count=count,
    )


def _text(value: object) -> str | None:
    return str(value) if value is not None and value != "" else None


def expected_available_s(detail: str | None) -> float | None:
    """Seconds from a throttle detail like ``"Expected available in 1 second."``."""
    if not detail:
        return None
    match = _EXPECTED_AVAILABLE.search(detail)
    return float(match.group(1)) if match else None


def describe_response(status: int, headers: Mapping[str, str], content: bytes, body: ErrorBody | None) -> str:
    """The detail text of a rejected request: ``"409 duplicate_profile: A profile already exists ..."``."""
    if body is not None:
        label = body.code or body.title or reason_phrase(status)
        text = body.detail or body.title or ""
        more = f" (+{body.count - 1} more errors)" if body.count > 1 else ""
        return f"{status} {label}: {text}{more}" if text else f"{status} {label}{more}"
    summary = summarize_non_json(content, headers.get("content-type"))
    if headers.get("cf-mitigated"):
        summary += f" (proxy challenge: {headers.get('cf-mitigated')})"
    return f"{status} {reason_phrase(status)}: {summary}"


def rejected_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    redactor: Redactor,
    retryable: bool = False,
    outage: Outage | None = None,
    retry_after: float | None = None,
    operation: str | None = None,
) -> KlaviyoRejected:
    """The catalog error for a response Klaviyo did not answer with success."""
    bodies = parse_error_bodies(content, headers.get("content-type"))
    body = bodies[0] if bodies else None
    detail = redactor.scrub(describe_response(status, headers, content, body))
    return KlaviyoRejected(
        detail,
        http_status=status,
        error_code=body.code if body else None,
        retryable=retryable,
        outage=outage,
        retry_after=retry_after,
        duplicate_profile_id=body.duplicate_profile_id if body else None,
        source=body.source if body else None,
        operation=operation,
        errors=tuple(_scrubbed(each, redactor) for each in bodies),
    )


def _scrubbed(body: ErrorBody, redactor: Redactor) -> ErrorBody:
    return replace(body, title=redactor.scrub(body.title) if body.title else None,
                   detail=redactor.scrub(body.detail) if body.detail else None)
