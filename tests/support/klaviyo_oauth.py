"""A token provider that runs the real OAuth code + PKCE flow against the simulator (test helper)."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx

from simulators.klaviyo import DEFAULT_OAUTH_CLIENT_ID, DEFAULT_OAUTH_CLIENT_SECRET, pkce_challenge

REDIRECT = "http://127.0.0.1:9400/oauth/callback"


def basic() -> str:
    raw = f"{DEFAULT_OAUTH_CLIENT_ID}:{DEFAULT_OAUTH_CLIENT_SECRET}".encode()
    return "Basic " + base64.b64encode(raw).decode()


async def authorize(http: httpx.AsyncClient, verifier: str, scope: str = "profiles:read profiles:write") -> str:
    response = await http.get("/oauth/authorize", params={
        "response_type": "code", "client_id": DEFAULT_OAUTH_CLIENT_ID, "redirect_uri": REDIRECT, "scope": scope,
        "state": "st-1", "code_challenge_method": "S256", "code_challenge": pkce_challenge(verifier),
    })
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


class SimulatorTokenProvider:
    """Gets tokens through authorize + token exchange; refreshes with the refresh token."""

    def __init__(self, base_url: str, scope: str = "profiles:read profiles:write events:write") -> None:
        self._http = httpx.AsyncClient(base_url=base_url)
        self._scope = scope
        self.access: str | None = None
        self.refresh: str | None = None
        self.refresh_calls: list[str] = []

    async def get_token(self) -> str:
        if self.access is None:
            verifier = secrets.token_urlsafe(48)
            code = await authorize(self._http, verifier, self._scope)
            response = await self._http.post("/oauth/token", headers={"authorization": basic()}, data={
                "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT,
            })
            assert response.status_code == 200, response.text
            self.access, self.refresh = response.json()["access_token"], response.json()["refresh_token"]
        return self.access

    async def refresh_token(self, stale: str) -> str:
        self.refresh_calls.append(stale)
        response = await self._http.post("/oauth/token", headers={"authorization": basic()},
                                         data={"grant_type": "refresh_token", "refresh_token": self.refresh})
        assert response.status_code == 200, response.text
        self.access, self.refresh = response.json()["access_token"], response.json()["refresh_token"]
        return self.access

    async def aclose(self) -> None:
        await self._http.aclose()
