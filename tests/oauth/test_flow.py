"""The Authorize step against the simulator's OAuth endpoints: every Authorization entry of the catalog, verbatim."""

from __future__ import annotations

import base64
import hashlib
import logging
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from consumer import catalog
from consumer.catalog import CatalogError
from consumer.oauth import (
    KlaviyoOAuth,
    LoopbackReceiver,
    OAuthConfig,
    PastedCallback,
    TokenStore,
    authorize,
    new_authorization_request,
    parse_callback,
    revoke,
)
from consumer.oauth.flow import KLAVIYO_AUTHORIZE_URL, authorize_url_for
from consumer.settings import Settings
from simulators.klaviyo import (
    DEFAULT_OAUTH_CLIENT_ID,
    DEFAULT_OAUTH_CLIENT_SECRET,
    KlaviyoSimulator,
    OAuthClient,
    pkce_challenge,
)

from .conftest import Browser, approve, assert_no_secrets, codes_in, log_texts, oauth_settings

# The seed's error messages, copied here verbatim (the catalog must carry exactly these).
SEED = {
    "AUTHORIZATION_DATA_MISSING":
        "The authorization could not be completed because the data returned from Klaviyo was missing.",
    "AUTHORIZATION_CODE_MISSING":
        "The authorization could not be completed because the authorization code from Klaviyo was missing.",
    "CLIENT_ID_NOT_CONFIGURED": "The authorization could not be completed because the Client ID is not "
                                "configured for this Klaviyo integration version.",
    "CLIENT_SECRET_NOT_CONFIGURED": "The authorization could not be completed because the Client Secret is not "
                                    "configured for this Klaviyo integration version.",
    "REDIRECT_URL_NOT_CONFIGURED": "The authorization could not be completed because the Redirect URL is not "
                                   "configured for this Klaviyo integration version.",
    "TOKEN_EXCHANGE_FAILED": "The authorization could not be completed because the temporary code could not be "
                             "exchanged for an access token.",
}


def assert_entry(error: BaseException, code: str) -> CatalogError:
    assert isinstance(error, CatalogError), repr(error)
    assert error.code == code
    assert error.entry.flow is catalog.Flow.AUTHORIZATION
    assert error.message == SEED[code] == str(error)
    return error


class Reports:
    def __init__(self) -> None:
        self.errors: list[CatalogError] = []

    async def __call__(self, error: CatalogError) -> None:
        self.errors.append(error)


# --- integration-version settings --------------------------------------------------------------------------------
@pytest.mark.parametrize(("missing", "code"), [
    ("client_id", "CLIENT_ID_NOT_CONFIGURED"),
    ("client_secret", "CLIENT_SECRET_NOT_CONFIGURED"),
    ("redirect_url", "REDIRECT_URL_NOT_CONFIGURED"),
])
async def test_a_missing_setting_stops_the_authorize_step_with_its_catalog_message(
    simulator: KlaviyoSimulator, tmp_path: Path, missing: str, code: str
) -> None:
    settings = oauth_settings(simulator, tmp_path, **{missing: None})
    reports, browser = Reports(), Browser()
    with pytest.raises(CatalogError) as caught:
        await authorize(settings, show_url=browser, report=reports)
    assert_entry(caught.value, code)
    assert reports.errors == [caught.value]
    assert browser.urls == [] and simulator.received() == []  # stopped before anything was sent
    assert not TokenStore(settings.oauth.token_file).exists()


def test_an_empty_or_relative_setting_counts_as_missing(simulator: KlaviyoSimulator, tmp_path: Path) -> None:
    for values, code in [({"client_id": "  "}, "CLIENT_ID_NOT_CONFIGURED"),
                         ({"client_secret": ""}, "CLIENT_SECRET_NOT_CONFIGURED"),
                         ({"redirect_url": "/oauth/callback"}, "REDIRECT_URL_NOT_CONFIGURED")]:
        with pytest.raises(CatalogError) as caught:
            OAuthConfig.from_settings(oauth_settings(simulator, tmp_path, **values))
        assert_entry(caught.value, code)
    # refresh and revoke need no redirect URL
    config = OAuthConfig.from_settings(oauth_settings(simulator, tmp_path, redirect_url=None), require_redirect=False)
    assert config.redirect_url is None and DEFAULT_OAUTH_CLIENT_SECRET not in repr(config)


def test_token_calls_go_to_the_api_host_and_the_browser_to_klaviyo_com() -> None:
    settings = Settings.model_validate({"oauth": {"client_id": "app", "client_secret": "s3cr3t-value",
                                                  "redirect_url": "https://example.com/cb"}})
    config = OAuthConfig.from_settings(settings)
    assert config.authorize_url == KLAVIYO_AUTHORIZE_URL == "https://www.klaviyo.com/oauth/authorize"
    assert config.token_url == "https://a.klaviyo.com/oauth/token"
    assert config.revoke_url == "https://a.klaviyo.com/oauth/revoke"
    assert authorize_url_for("http://127.0.0.1:8765") == "http://127.0.0.1:8765/oauth/authorize"


# --- PKCE and state ------------------------------------------------------------------------------------------------
def test_the_authorization_url_carries_an_s256_challenge_and_a_random_state(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    config = OAuthConfig.from_settings(oauth_settings(simulator, tmp_path, redirect_url="http://127.0.0.1:9/cb"))
    first, second = new_authorization_request(config), new_authorization_request(config)
    query = {k: v[0] for k, v in parse_qs(urlsplit(first.url).query).items()}
    assert first.url.startswith(f"{simulator.base_url}/oauth/authorize?")
    assert query == {
        "response_type": "code", "client_id": DEFAULT_OAUTH_CLIENT_ID, "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": "profiles:read profiles:write events:read events:write lists:read lists:write subscriptions:write",
        "state": first.state,
        "code_challenge_method": "S256", "code_challenge": query["code_challenge"],
    }
    digest = hashlib.sha256(first.code_verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert query["code_challenge"] == pkce_challenge(first.code_verifier)
    assert 43 <= len(first.code_verifier) <= 128 and first.code_verifier not in first.url
    assert first.state != second.state and first.code_verifier != second.code_verifier
    assert len(first.state) >= 32
    assert first.state not in repr(first) and first.code_verifier not in repr(first)


def _request(simulator: KlaviyoSimulator, tmp_path: Path) -> Any:
    config = OAuthConfig.from_settings(oauth_settings(simulator, tmp_path, redirect_url="http://127.0.0.1:9/cb"))
    return new_authorization_request(config)


@pytest.mark.parametrize("callback", [
    None, "", "   ", "http://127.0.0.1:9/cb", "http://127.0.0.1:9/cb?", "?unrelated=1", "not a url at all", {},
])
def test_a_callback_without_the_expected_data_is_authorization_data_missing(
    simulator: KlaviyoSimulator, tmp_path: Path, callback: Any
) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_callback(_request(simulator, tmp_path), callback)
    assert_entry(caught.value, "AUTHORIZATION_DATA_MISSING")


def test_an_error_redirect_is_authorization_data_missing_with_klaviyos_reason(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    request = _request(simulator, tmp_path)
    callback = "http://127.0.0.1:9/cb?" + urlencode(
        {"error": "access_denied", "error_description": "The user denied the request", "state": request.state})
    with pytest.raises(CatalogError) as caught:
        parse_callback(request, callback)
    error = assert_entry(caught.value, "AUTHORIZATION_DATA_MISSING")
    assert error.detail == "Klaviyo returned an error instead of a code (access_denied: The user denied the request)"
    assert error.error_code == "access_denied"


def test_no_code_or_a_state_that_does_not_match_is_authorization_code_missing(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    request = _request(simulator, tmp_path)
    cases = {
        "no code": {"state": request.state},
        "empty code": {"state": request.state, "code": ""},
        "no state": {"code": "a-code-value"},
        "empty state": {"code": "a-code-value", "state": ""},
        "another state": {"code": "a-code-value", "state": _request(simulator, tmp_path).state},
        "state prefix": {"code": "a-code-value", "state": request.state[:-1]},
    }
    for name, params in cases.items():
        with pytest.raises(CatalogError) as caught:
            parse_callback(request, "http://127.0.0.1:9/cb?" + urlencode(params))
        error = assert_entry(caught.value, "AUTHORIZATION_CODE_MISSING")
        assert "a-code-value" not in (error.detail or ""), name
        assert request.state not in (error.detail or ""), name
    good = {"code": "a-code-value", "state": request.state}
    assert parse_callback(request, "http://127.0.0.1:9/cb?" + urlencode(good)) == "a-code-value"
    assert parse_callback(request, "?" + urlencode(good)) == "a-code-value"
    assert parse_callback(request, good) == "a-code-value"


# --- the whole step against the simulator ---------------------------------------------------------------------------
async def test_authorize_serves_the_loopback_redirect_exchanges_the_code_and_stores_the_tokens(
    simulator: KlaviyoSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, captured_requests: list[Any]
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = oauth_settings(simulator, tmp_path)
    browser = Browser()
    tokens = await authorize(settings, show_url=browser, timeout_s=10)

    assert browser.status == 200
    stored = TokenStore(settings.oauth.token_file).load()
    assert stored is not None and stored.to_dict() == tokens.to_dict()
    assert stat.S_IMODE(settings.oauth.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.oauth.token_file.parent.stat().st_mode) == 0o700
    grant = simulator.state.oauth.grant_for(tokens.access_token)
    assert grant is not None and grant.refresh_token == tokens.refresh_token
    assert tokens.scope == tuple(settings.oauth.scopes)
    assert tokens.expires_at is not None and tokens.expires_at > tokens.obtained_at + 3000

    [exchange] = simulator.received("oauth_token")
    assert exchange.auth_scheme == "Basic" and exchange.status == 200
    assert exchange.headers["content-type"].startswith("application/x-www-form-urlencoded")
    [request] = captured_requests
    assert exchange.body == {"grant_type": "authorization_code", "code": "***", "code_verifier": "***",
                             "redirect_uri": request.redirect_url}
    assert urlsplit(request.redirect_url).port not in (None, 0)  # the loopback's real port went to Klaviyo

    secrets = {*tokens.secrets(), DEFAULT_OAUTH_CLIENT_SECRET, request.code_verifier, request.state,
               *codes_in(browser.locations)}
    assert_no_secrets([*log_texts(caplog.records), repr(tokens), str(tokens)], secrets)


async def test_a_denied_authorization_is_authorization_data_missing(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    simulator.state.oauth.deny_next = 1
    reports = Reports()
    with pytest.raises(CatalogError) as caught:
        await authorize(oauth_settings(simulator, tmp_path), show_url=Browser(), report=reports, timeout_s=10)
    error = assert_entry(caught.value, "AUTHORIZATION_DATA_MISSING")
    assert "access_denied" in (error.detail or "") and reports.errors == [error]
    assert simulator.received("oauth_token") == []


def _with_query(location: str, **changes: str | None) -> str:
    parts = urlsplit(location)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize(("tamper", "code"), [
    (lambda loc: _with_query(loc, state="forged-state-value"), "AUTHORIZATION_CODE_MISSING"),
    (lambda loc: _with_query(loc, state=None), "AUTHORIZATION_CODE_MISSING"),
    (lambda loc: _with_query(loc, code=None), "AUTHORIZATION_CODE_MISSING"),
    (lambda loc: loc.split("?", 1)[0], "AUTHORIZATION_DATA_MISSING"),
])
async def test_the_redirect_must_carry_the_code_and_this_requests_state(
    simulator: KlaviyoSimulator, tmp_path: Path, tamper: Any, code: str
) -> None:
    settings = oauth_settings(simulator, tmp_path)
    with pytest.raises(CatalogError) as caught:
        await authorize(settings, show_url=Browser(tamper), timeout_s=10)
    assert_entry(caught.value, code)
    assert simulator.received("oauth_token") == []  # a forged or incomplete redirect is never exchanged
    assert not settings.oauth.token_file.exists()


async def test_no_redirect_in_time_is_authorization_data_missing(simulator: KlaviyoSimulator, tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as caught:
        await authorize(oauth_settings(simulator, tmp_path), show_url=lambda url: None, timeout_s=0.2)
    error = assert_entry(caught.value, "AUTHORIZATION_DATA_MISSING")
    assert error.detail == "no redirect from Klaviyo arrived within 0.2 s"


async def test_the_loopback_receiver_answers_only_its_path(simulator: KlaviyoSimulator) -> None:
    from .conftest import visit

    async with LoopbackReceiver("http://127.0.0.1:0/oauth/callback") as receiver:
        base = receiver.redirect_url.removesuffix("/oauth/callback")
        assert await visit(f"{base}/favicon.ico") == 404
        assert await visit(f"{receiver.redirect_url}?code=c&state=s") == 200
        assert await receiver.wait(1) == "/oauth/callback?code=c&state=s"
        assert await visit(f"{receiver.redirect_url}?code=other&state=s") == 200  # first one wins
        assert await receiver.wait(1) == "/oauth/callback?code=c&state=s"


async def test_the_redirect_url_can_be_pasted_when_it_is_not_served_here(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    redirect = "https://integrations.example.com/klaviyo/oauth/callback"
    simulator.config.oauth_clients[DEFAULT_OAUTH_CLIENT_ID] = OAuthClient(DEFAULT_OAUTH_CLIENT_SECRET, (redirect,))
    settings = oauth_settings(simulator, tmp_path, redirect_url=redirect)
    with pytest.raises(ValueError, match="paste"):
        await authorize(settings, show_url=lambda url: None)

    shown: list[str] = []

    async def paste() -> str:  # the operator copies the address bar of the page Klaviyo redirected to
        return "  " + await approve(shown[0]) + "\n"

    tokens = await authorize(settings, receiver=PastedCallback(redirect, paste), show_url=shown.append)
    assert TokenStore(settings.oauth.token_file).load() is not None
    assert simulator.state.oauth.grant_for(tokens.access_token) is not None
    assert simulator.received("oauth_token")[0].body["redirect_uri"] == redirect


# --- the token exchange -----------------------------------------------------------------------------------------------
async def _code(simulator: KlaviyoSimulator, tmp_path: Path) -> tuple[OAuthConfig, Any, str]:
    config = OAuthConfig.from_settings(oauth_settings(simulator, tmp_path, redirect_url="http://127.0.0.1:9/cb"))
    request = new_authorization_request(config)
    location = await approve(request.url)
    return config, request, parse_callback(request, location)


async def test_pkce_is_enforced_a_wrong_verifier_is_token_exchange_failed_with_klaviyos_reason(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    config, request, code = await _code(simulator, tmp_path)
    async with KlaviyoOAuth(config) as oauth:
        with pytest.raises(CatalogError) as caught:
            await oauth.exchange_code(replace(request, code_verifier="x" * 64), code)
    error = assert_entry(caught.value, "TOKEN_EXCHANGE_FAILED")
    assert error.detail == "invalid_grant: The code_verifier does not match the code_challenge"
    assert error.http_status == 400 and error.error_code == "invalid_grant"


async def test_a_used_code_or_another_redirect_uri_is_refused(simulator: KlaviyoSimulator, tmp_path: Path) -> None:
    config, request, code = await _code(simulator, tmp_path)
    async with KlaviyoOAuth(config) as oauth:
        await oauth.exchange_code(request, code)
        with pytest.raises(CatalogError) as used:
            await oauth.exchange_code(request, code)
        assert assert_entry(used.value, "TOKEN_EXCHANGE_FAILED").detail == \
            "invalid_grant: The authorization code is invalid or expired"
    config, request, code = await _code(simulator, tmp_path)
    async with KlaviyoOAuth(config) as oauth:
        with pytest.raises(CatalogError) as moved:
            await oauth.exchange_code(replace(request, redirect_url="http://127.0.0.1:10/cb"), code)
    assert assert_entry(moved.value, "TOKEN_EXCHANGE_FAILED").detail == "invalid_grant: The redirect_uri does not match"


async def test_a_wrong_client_secret_is_token_exchange_failed_and_never_shown(
    simulator: KlaviyoSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, captured_requests: list[Any]
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-0123456789"
    reports, browser = Reports(), Browser()
    with pytest.raises(CatalogError) as caught:
        await authorize(oauth_settings(simulator, tmp_path, client_secret=wrong), show_url=browser, report=reports)
    error = assert_entry(caught.value, "TOKEN_EXCHANGE_FAILED")
    assert error.detail == "invalid_client: Client authentication failed" and error.http_status == 401
    assert reports.errors == [error]
    secrets = {wrong, base64.b64encode(f"{DEFAULT_OAUTH_CLIENT_ID}:{wrong}".encode()).decode(),
               *codes_in(browser.locations), captured_requests[0].code_verifier}
    assert_no_secrets([*log_texts(caplog.records), str(error), repr(error), error.detail or ""], secrets)


async def test_klaviyo_unreachable_during_the_exchange_is_token_exchange_failed(tmp_path: Path) -> None:
    async with KlaviyoSimulator() as gone:
        settings = oauth_settings(gone, tmp_path)
    with pytest.raises(CatalogError) as caught:
        async with KlaviyoOAuth(OAuthConfig.from_settings(settings)) as oauth:
            request = new_authorization_request(oauth.config)
            await oauth.exchange_code(request, "some-code-value")
    error = assert_entry(caught.value, "TOKEN_EXCHANGE_FAILED")
    assert (error.detail or "").startswith("Klaviyo could not be reached") and error.retryable
    assert "some-code-value" not in (error.detail or "")


# --- revoke -------------------------------------------------------------------------------------------------------
async def test_revoke_revokes_at_klaviyo_and_deletes_the_token_file(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    settings = oauth_settings(simulator, tmp_path)
    tokens = await authorize(settings, show_url=Browser(), timeout_s=10)
    result = await revoke(settings)
    assert result.revoked and result.deleted and result.problem is None
    assert not settings.oauth.token_file.exists()
    assert tokens.refresh_token not in simulator.state.oauth.refresh_tokens
    assert simulator.state.oauth.grant_for(tokens.access_token) is None
    requests = simulator.received("oauth_revoke")
    assert [r.body for r in requests] == [{"token": "***", "token_type_hint": "refresh_token"},
                                          {"token": "***", "token_type_hint": "access_token"}]
    assert {r.auth_scheme for r in requests} == {"Basic"}
    again = await revoke(settings)
    assert not again.revoked and not again.deleted and "no token file" in (again.problem or "")


async def test_revoke_keeps_the_tokens_when_klaviyo_cannot_confirm_unless_forced(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    settings = oauth_settings(simulator, tmp_path)
    tokens = await authorize(settings, show_url=Browser(), timeout_s=10)
    offline = settings.model_copy(update={"klaviyo": settings.klaviyo.model_copy(
        update={"base_url": "http://127.0.0.1:9"})})
    kept = await revoke(offline)
    assert not kept.revoked and not kept.deleted and settings.oauth.token_file.exists()
    assert "could not be reached" in (kept.problem or "")
    assert_no_secrets([kept.problem or ""], [*tokens.secrets(), DEFAULT_OAUTH_CLIENT_SECRET])
    forced = await revoke(offline, force=True)
    assert not forced.revoked and forced.deleted and not settings.oauth.token_file.exists()

