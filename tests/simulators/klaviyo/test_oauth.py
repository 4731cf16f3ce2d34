"""The OAuth endpoints: authorize stub, code exchange with PKCE, refresh, revoke."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from simulators.klaviyo import DEFAULT_OAUTH_CLIENT_ID, KlaviyoSimulator, pkce_challenge
from tests.support.klaviyo_oauth import REDIRECT, authorize, basic

from .conftest import HEADERS


@pytest.fixture
async def raw(simulator: KlaviyoSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.base_url) as client:
        yield client


async def exchange(raw: httpx.AsyncClient, code: str, verifier: str, **overrides: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT}
    data.update(overrides)
    return await raw.post("/oauth/token", data=data, headers={"authorization": basic()})


async def test_code_exchange_then_api_call_with_bearer(raw: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await authorize(raw, verifier)
    response = await exchange(raw, code, verifier)
    assert response.status_code == 200
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "profiles:read profiles:write" and tokens["refresh_token"]
    api = await raw.get("/api/profiles", headers={**HEADERS, "authorization": f"Bearer {tokens['access_token']}"})
    assert api.status_code == 200
    denied = await raw.post("/api/events", headers={**HEADERS, "authorization": f"Bearer {tokens['access_token']}"},
                            content=b"{}")
    assert denied.status_code == 403  # events:write was not granted
    again = await exchange(raw, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # codes are single-use
    recorded = simulator.received("oauth_token")[0].body
    assert recorded["code"] == "***" and recorded["code_verifier"] == "***"


async def test_wrong_verifier_or_redirect_is_invalid_grant(raw: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await authorize(raw, verifier)
    response = await exchange(raw, code, "another-verifier-another-verifier-another-verifier")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    code = await authorize(raw, verifier)
    response = await exchange(raw, code, verifier, redirect_uri="http://127.0.0.1/other")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_client_authentication_and_form_body(raw: httpx.AsyncClient) -> None:
    response = await raw.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    wrong = httpx.BasicAuth(DEFAULT_OAUTH_CLIENT_ID, "wrong-secret")
    response = await raw.post("/oauth/token", data={"grant_type": "refresh_token"}, auth=wrong)
    assert response.status_code == 401
    response = await raw.post("/oauth/token", json={"grant_type": "refresh_token"}, headers={"authorization": basic()})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant_type"
    response = await raw.post("/oauth/token", data={"grant_type": "password"}, headers={"authorization": basic()})
    assert response.status_code == 400


async def test_refresh_rotation_and_revoke(raw: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    simulator.config.rotate_refresh_tokens = True
    verifier = secrets.token_urlsafe(48)
    tokens = (await exchange(raw, await authorize(raw, verifier), verifier)).json()
    refreshed = await raw.post("/oauth/token", headers={"authorization": basic()},
                               data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"] and new["access_token"] != tokens["access_token"]
    reused = await raw.post("/oauth/token", headers={"authorization": basic()},
                            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    bearer = {**HEADERS, "authorization": f"Bearer {new['access_token']}"}
    assert (await raw.get("/api/profiles", headers=bearer)).status_code == 200
    revoked = await raw.post("/oauth/revoke", headers={"authorization": basic()},
                             data={"token": new["refresh_token"], "token_type_hint": "refresh_token"})
    assert revoked.status_code == 200
    assert (await raw.get("/api/profiles", headers=bearer)).status_code == 401
    after = await raw.post("/oauth/token", headers={"authorization": basic()},
                           data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]})
    assert after.json()["error"] == "invalid_grant"


async def test_expired_access_token_is_401(raw: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    verifier = secrets.token_urlsafe(48)
    tokens = (await exchange(raw, await authorize(raw, verifier), verifier)).json()
    simulator.state.oauth.expire_access_tokens()
    response = await raw.get("/api/profiles", headers={**HEADERS, "authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 401 and response.json()["errors"][0]["code"] == "authentication_failed"


async def test_authorize_errors(raw: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    base = {"response_type": "code", "client_id": DEFAULT_OAUTH_CLIENT_ID, "redirect_uri": REDIRECT,
            "scope": "profiles:read", "state": "s", "code_challenge_method": "S256",
            "code_challenge": pkce_challenge("v" * 43)}
    assert (await raw.get("/oauth/authorize", params={**base, "client_id": "nope"})).status_code == 400
    foreign = {**base, "redirect_uri": "https://evil.test/cb"}
    assert (await raw.get("/oauth/authorize", params=foreign)).status_code == 400

    async def redirect_error(params: dict[str, str]) -> str:
        response = await raw.get("/oauth/authorize", params=params)
        assert response.status_code == 302
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["state"] == ["s"]
        return query["error"][0]

    assert await redirect_error({**base, "code_challenge_method": "plain"}) == "invalid_request"
    simulator.state.oauth.deny_next = 1
    assert await redirect_error(base) == "access_denied"
