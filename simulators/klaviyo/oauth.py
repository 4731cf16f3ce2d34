"""Klaviyo's OAuth endpoints (authorization code + PKCE): authorize stub, token, refresh, revoke."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from simulators.httpserver import Reply, Request
from simulators.klaviyo.config import OAuthClient, SimulatorConfig


@dataclass(slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    method: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclass(slots=True)
class AccessGrant:
    """What a bearer token grants: account, app, scopes, expiry."""

    client_id: str
    account: str
    scopes: frozenset[str]
    expires_at: float
    refresh_token: str


@dataclass(slots=True)
class _Refresh:
    client_id: str
    account: str
    scopes: tuple[str, ...]


def _json(status: int, document: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, orjson.dumps(document), "application/json", headers or [])


def _oauth_error(status: int, error: str, description: str | None = None) -> Reply:
    document = {"error": error}
    if description:
        document["error_description"] = description
    return _json(status, document)


def pkce_challenge(verifier: str) -> str:
    """``base64url(sha256(verifier))`` without padding (S256)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class OAuthServer:
    """In-memory OAuth state of the simulator."""

    def __init__(self, config: SimulatorConfig, clock: Any = time.time) -> None:
        self._config = config
        self._clock = clock
        self.codes: dict[str, _Code] = {}
        self.access_tokens: dict[str, AccessGrant] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.deny_next = 0

    def reset(self) -> None:
        self.codes.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()
        self.deny_next = 0

    def expire_access_tokens(self) -> int:
        """Make every access token expired (a test for refresh-on-401); returns how many."""
        now = self._clock()
        for grant in self.access_tokens.values():
            grant.expires_at = min(grant.expires_at, now - 1)
        return len(self.access_tokens)

    def summary(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "codes": len(self.codes),
            "access_tokens": len(self.access_tokens),
            "live_access_tokens": sum(1 for g in self.access_tokens.values() if g.expires_at > now),
            "refresh_tokens": len(self.refresh_tokens),
        }

    # --- bearer check --------------------------------------------------------------------------------------------
    def grant_for(self, token: str) -> AccessGrant | None:
        """The grant of a live access token, or None (unknown, revoked or expired)."""
        grant = self.access_tokens.get(token)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    # --- endpoints -----------------------------------------------------------------------------------------------
    def _redirect_allowed(self, client: OAuthClient, uri: str) -> bool:
        if client.redirect_uris:
            return uri in client.redirect_uris
        host = urlsplit(uri).hostname
        return host in ("127.0.0.1", "localhost", "::1")

    def authorize(self, request: Request) -> Reply:
        """Approve at once (or deny, when ``deny_next``) and redirect back with ``code``/``error`` and ``state``."""
        client_id = request.param("client_id") or ""
        redirect_uri = request.param("redirect_uri") or ""
        client = self._config.oauth_clients.get(client_id)
        if client is None or not redirect_uri or not self._redirect_allowed(client, redirect_uri):
            return Reply(400, b"<html><body><h1>Invalid OAuth request</h1></body></html>", "text/html")
        state = request.param("state")

        def back(params: dict[str, str]) -> Reply:
            if state is not None:
                params["state"] = state
            joiner = "&" if urlsplit(redirect_uri).query else "?"
            return Reply(302, b"", None, [("location", f"{redirect_uri}{joiner}{urlencode(params)}")])

        scopes = tuple((request.param("scope") or "").split())
        challenge = request.param("code_challenge") or ""
        method = request.param("code_challenge_method") or ""
        if request.param("response_type") != "code" or not challenge or method != "S256":
            return back({"error": "invalid_request",
                         "error_description": "PKCE (S256) and response_type=code are required"})
        if client.scopes is not None and not set(scopes) <= client.scopes:
            return back({"error": "invalid_scope",
                         "error_description": "A requested scope is not enabled for the app"})
        if self.deny_next > 0:
            self.deny_next -= 1
            return back({"error": "access_denied", "error_description": "The user denied the request"})
        code = secrets.token_urlsafe(24)
        self.codes[code] = _Code(client_id, redirect_uri, challenge, method, scopes,
                                 self._clock() + self._config.authorization_code_ttl_s)
        return back({"code": code})

    def _client(self, request: Request) -> tuple[str, OAuthClient] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        client = self._config.oauth_clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            return None
        return client_id, client

    @staticmethod
    def _form(request: Request) -> dict[str, str] | None:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            return None
        parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[-1] for key, values in parsed.items()}

    def _issue(self, client_id: str, account: str, scopes: tuple[str, ...], refresh: str | None) -> Reply:
        access = secrets.token_urlsafe(32)
        if refresh is None:
            refresh = secrets.token_urlsafe(32)
            self.refresh_tokens[refresh] = _Refresh(client_id, account, scopes)
        ttl = self._config.access_token_ttl_s
        self.access_tokens[access] = AccessGrant(client_id, account, frozenset(scopes), self._clock() + ttl, refresh)
        return _json(200, {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(ttl),
            "refresh_token": refresh,
            "scope": " ".join(scopes),
        }, [("cache-control", "no-store")])

    def token(self, request: Request) -> Reply:
        identified = self._client(request)
        if identified is None:
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        client_id, _ = identified
        form = self._form(request)
        if form is None:
            return _oauth_error(400, "invalid_grant_type", "The body must be application/x-www-form-urlencoded")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            if code is None or code.expires_at <= self._clock() or code.client_id != client_id:
                return _oauth_error(400, "invalid_grant", "The authorization code is invalid or expired")
            if form.get("redirect_uri") != code.redirect_uri:
                return _oauth_error(400, "invalid_grant", "The redirect_uri does not match")
            verifier = form.get("code_verifier", "")
            if not verifier or not secrets.compare_digest(pkce_challenge(verifier), code.challenge):
                return _oauth_error(400, "invalid_grant", "The code_verifier does not match the code_challenge")
            return self._issue(client_id, self._config.oauth_account, code.scopes, None)
        if grant_type == "refresh_token":
            token = form.get("refresh_token", "")
            refresh = self.refresh_tokens.get(token)
            if refresh is None or refresh.client_id != client_id:
                return _oauth_error(400, "invalid_grant", "The refresh token is invalid, expired or revoked")
            if self._config.rotate_refresh_tokens:
                del self.refresh_tokens[token]
                for grant in self.access_tokens.values():
                    if grant.refresh_token == token:
                        grant.expires_at = 0
                reply = self._issue(client_id, refresh.account, refresh.scopes, None)
            else:
                reply = self._issue(client_id, refresh.account, refresh.scopes, token)
            return reply
        return _oauth_error(400, "invalid_grant_type", f"Unsupported grant_type {grant_type!r}")

    def revoke(self, request: Request) -> Reply:
        identified = self._client(request)
        if identified is None:
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        form = self._form(request)
        if form is None:
            return _oauth_error(400, "invalid_request", "The body must be application/x-www-form-urlencoded")
        token = form.get("token", "")
        refresh = self.refresh_tokens.get(token)
        if refresh is not None and refresh.client_id == identified[0]:
            del self.refresh_tokens[token]
            for access, grant in list(self.access_tokens.items()):
                if grant.refresh_token == token:
                    del self.access_tokens[access]
        access_grant = self.access_tokens.get(token)
        if access_grant is not None and access_grant.client_id == identified[0]:
            del self.access_tokens[token]
        return _json(200, {})
