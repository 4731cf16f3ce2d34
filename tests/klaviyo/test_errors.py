"""Mapping Klaviyo's answers to catalog errors."""

from __future__ import annotations

import httpx
import orjson

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST
from consumer.klaviyo.errors import (
    KlaviyoConnectionError,
    expected_available_s,
    klaviyo_redactor,
    parse_error_body,
    rejected_from_response,
)

DUPLICATE = {"errors": [{"id": "bf03", "status": 409, "code": "duplicate_profile", "title": "Conflict.",
                         "detail": "A profile already exists with one of these identifiers.",
                         "source": {"pointer": "/data/attributes"}, "links": {},
                         "meta": {"duplicate_profile_id": "01J0000000000000000000000A"}}]}
JSON = {"content-type": "application/vnd.api+json"}


def test_duplicate_profile_body() -> None:
    error = rejected_from_response(409, httpx.Headers(JSON), orjson.dumps(DUPLICATE), redactor=klaviyo_redactor())
    assert error.entry is KLAVIYO_REJECTED_REQUEST
    assert error.duplicate_profile_id == "01J0000000000000000000000A"
    assert error.detail == "409 duplicate_profile: A profile already exists with one of these identifiers."
    assert error.source == {"pointer": "/data/attributes"}


def test_spec_minimal_error_body_without_status_meta_or_links() -> None:
    body = {"errors": [{"id": "1", "code": "invalid", "title": "Invalid input.", "detail": "Bad 'x'."},
                       {"id": "2", "code": "invalid", "title": "Invalid input.", "detail": "Bad 'y'."}]}
    parsed = parse_error_body(orjson.dumps(body), "application/json")
    assert parsed is not None and parsed.duplicate_profile_id is None and parsed.count == 2
    error = rejected_from_response(400, httpx.Headers(JSON), orjson.dumps(body), redactor=klaviyo_redactor())
    assert error.detail == "400 invalid: Bad 'x'. (+1 more errors)"


def test_html_and_garbage_and_empty_bodies() -> None:
    page = b"<html><head><title>Attention Required! | Cloudflare</title></head></html>"
    headers = httpx.Headers({"content-type": "text/html", "cf-mitigated": "challenge"})
    assert parse_error_body(page, "text/html") is None
    error = rejected_from_response(403, headers, page, redactor=klaviyo_redactor())
    assert error.detail == (
        "403 Forbidden: text/html page: Attention Required! | Cloudflare (proxy challenge: challenge)"
    )
    assert error.error_code is None
    assert rejected_from_response(500, httpx.Headers(JSON), b"{not json", redactor=klaviyo_redactor()).detail == (
        "500 Internal Server Error: application/vnd.api+json body: {not json"
    )
    assert rejected_from_response(503, httpx.Headers({}), b"", redactor=klaviyo_redactor()).detail == (
        "503 Service Unavailable: empty unknown content type body"
    )
    assert parse_error_body(b'{"errors": []}', "application/json") is None
    assert parse_error_body(b"[1]", "application/json") is None


def test_key_echoed_by_the_server_is_redacted() -> None:
    key = "pk_abcdefghijklmnopqrstuvwxyz01234567"
    body = {"errors": [{"id": "1", "code": "authentication_failed", "title": "x",
                        "detail": f"Key {key} is not valid; Authorization: Klaviyo-API-Key {key}"}]}
    error = rejected_from_response(401, httpx.Headers(JSON), orjson.dumps(body), redactor=klaviyo_redactor())
    assert key not in error.message and "***" in error.message


def test_expected_available_hint() -> None:
    assert expected_available_s("Request was throttled. Expected available in 1 second.") == 1.0
    assert expected_available_s("Request was throttled. Expected available in 12 seconds.") == 12.0
    assert expected_available_s("Nope") is None and expected_available_s(None) is None


def test_connection_error_defaults() -> None:
    error = KlaviyoConnectionError("ConnectError: refused")
    assert error.entry is KLAVIYO_CONNECTION_ERROR and error.retryable and error.infrastructure
    assert str(error) == "An error occurred while contacting Klaviyo (ConnectError: refused)"
