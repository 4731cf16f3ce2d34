"""The OAuth authorization-code flow with Klaviyo (PKCE S256 + state), token refresh and revocation.

``authorize(settings, ...)`` is the Authorize step: it checks the integration-version settings (client id, client
secret, redirect URL: the catalog's "... Not Configured" entries), builds the authorization URL with a fresh
code verifier and state, waits for the redirect (``LoopbackReceiver`` on the redirect URL, or the redirect URL
pasted by the operator), checks the state, exchanges the code at the token endpoint (Basic auth, form body) and
stores the tokens. Every failure is a ``CatalogError`` of the Authorization and Connection flow, reported
through ``report`` (the error log, at connection time, with no transfer). No token, code, verifier or client
secret is ever put into a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import orjson
from pydantic import SecretStr

from consumer.catalog import (
    AUTHORIZATION_CODE_MISSING,
    AUTHORIZATION_DATA_MISSING,
    CLIENT_ID_NOT_CONFIGURED,
    CLIENT_SECRET_NOT_CONFIGURED,
    REDIRECT_URL_NOT_CONFIGURED,
    TOKEN_EXCHANGE_FAILED,
    CatalogError,
)
from consumer.errors import Outage
from consumer.http.content import summarize_non_json
from consumer.http.redact import Redactor
from consumer.http.transport import describe_transport_error
from consumer.klaviyo.errors import KlaviyoConnectionError, KlaviyoRejected
from consumer.oauth.store import TokenSet, TokenStore
from consumer.settings import Settings

log = logging.getLogger("consumer.oauth")

KLAVIYO_API_BASE = "https://a.klaviyo.com"
KLAVIYO_AUTHORIZE_URL = "https://www.klaviyo.com/oauth/authorize"
USER_AGENT = "ipaas-klaviyo/0.1"
DEFAULT_TIMEOUT_S = 300.0
_REASON_LIMIT = 300
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Reporter = Callable[[CatalogError], Awaitable[None]]
"""Where authorization errors go: the error log (at connection time, no transfer)."""


# --- configuration -----------------------------------------------------------------------------------------------
def authorize_url_for(base_url: str) -> str:
    """Klaviyo's browser authorize page for an API base URL; any other base (the simulator) serves its own."""
    base = base_url.rstrip("/")
    if urlsplit(base).hostname == urlsplit(KLAVIYO_API_BASE).hostname:
        return KLAVIYO_AUTHORIZE_URL
    return f"{base}/oauth/authorize"


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """The integration version's OAuth app: who we are to Klaviyo and where Klaviyo sends the subscriber back.

    Token and revoke calls go to the API host (``a.klaviyo.com``: Klaviyo blocks them on ``www``).
    """

    client_id: str
    client_secret: SecretStr
    redirect_url: str | None
    scopes: tuple[str, ...]
    authorize_url: str
    token_url: str
    revoke_url: str

    @classmethod
    def from_settings(cls, settings: Settings, *, require_redirect: bool = True) -> OAuthConfig:
        """The OAuth app from settings; a missing value raises its catalog error (id, then secret, then URL)."""
        oauth = settings.oauth
        client_id = (oauth.client_id or "").strip()
        if not client_id:
            raise CatalogError(CLIENT_ID_NOT_CONFIGURED, "oauth.client_id is not set")
        secret = oauth.client_secret.get_secret_value() if oauth.client_secret is not None else ""
        if not secret:
            raise CatalogError(CLIENT_SECRET_NOT_CONFIGURED, "oauth.client_secret is not set")
        redirect = (oauth.redirect_url or "").strip() or None
        if require_redirect:
            if redirect is None:
                raise CatalogError(REDIRECT_URL_NOT_CONFIGURED, "oauth.redirect_url is not set")
            parts = urlsplit(redirect)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise CatalogError(REDIRECT_URL_NOT_CONFIGURED, "oauth.redirect_url is not an absolute http(s) URL")
        base = settings.klaviyo.base_url.rstrip("/")
        configured_authorize = getattr(oauth, "authorize_url", None)  # a setting the settings module may add
        return cls(
            client_id=client_id,
            client_secret=SecretStr(secret),
            redirect_url=redirect,
            scopes=tuple(oauth.scopes),
            authorize_url=str(configured_authorize or authorize_url_for(base)),
            token_url=f"{base}/oauth/token",
            revoke_url=f"{base}/oauth/revoke",
        )


# --- PKCE, state and the authorization URL -----------------------------------------------------------------------
def new_code_verifier() -> str:
    """A PKCE code verifier: 86 characters of the unreserved set (RFC 7636 allows 43 to 128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """S256: ``base64url(sha256(verifier))`` without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@dataclass(frozen=True, slots=True, repr=False)
class AuthorizationRequest:
    """One Authorize attempt: the URL for the browser, and the state and verifier only this process knows."""

    url: str
    state: str
    code_verifier: str
    redirect_url: str

    def __repr__(self) -> str:
        return f"AuthorizationRequest(redirect_url={self.redirect_url!r}, state='***', code_verifier='***')"

    __str__ = __repr__


def new_authorization_request(config: OAuthConfig, *, redirect_url: str | None = None) -> AuthorizationRequest:
    """A fresh verifier and state, and the authorization URL carrying the S256 challenge."""
    redirect = redirect_url or config.redirect_url
    if not redirect:
        raise CatalogError(REDIRECT_URL_NOT_CONFIGURED, "oauth.redirect_url is not set")
    verifier = new_code_verifier()
    state = secrets.token_urlsafe(32)
    query = urlencode({
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": redirect,
        "scope": " ".join(config.scopes),
        "state": state,
        "code_challenge_method": "S256",
        "code_challenge": code_challenge(verifier),
    })
    joiner = "&" if urlsplit(config.authorize_url).query else "?"
    return AuthorizationRequest(f"{config.authorize_url}{joiner}{query}", state, verifier, redirect)


def _callback_params(callback: str | Mapping[str, str] | None) -> dict[str, str]:
    if callback is None:
        return {}
    if isinstance(callback, Mapping):
        return {str(k): str(v) for k, v in callback.items()}
    text = callback.strip()
    if "?" in text:
        text = text.split("?", 1)[1]
    text = text.split("#", 1)[0]
    if "=" not in text:
        return {}
    return {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}


def _klaviyo_text(value: str) -> str:
    text = " ".join(value.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 1] + "…"


def parse_callback(request: AuthorizationRequest, callback: str | Mapping[str, str] | None) -> str:
    """The authorization code of the redirect Klaviyo sent back (a URL, a query string or its parameters).

    No parameters Klaviyo would send, or an ``error`` redirect → Authorization Data Missing; no code, or a
    state that is missing or not this request's → Authorization Code Missing.
    """
    params = _callback_params(callback)
    code, state, error = params.get("code"), params.get("state"), params.get("error")
    if not code and not state and not error:
        raise CatalogError(AUTHORIZATION_DATA_MISSING, "the redirect from Klaviyo carried no authorization data")
    if error:
        description = params.get("error_description")
        reason = _klaviyo_text(f"{error}: {description}" if description else error)
        raise CatalogError(AUTHORIZATION_DATA_MISSING, f"Klaviyo returned an error instead of a code ({reason})",
                           error_code=_klaviyo_text(error))
    if not state or not secrets.compare_digest(state.encode(), request.state.encode()):
        raise CatalogError(AUTHORIZATION_CODE_MISSING,
                           "the state of the redirect is missing" if not state
                           else "the state of the redirect does not match this authorization (a stale or forged link)")
    if not code:
        raise CatalogError(AUTHORIZATION_CODE_MISSING, "the redirect from Klaviyo carried no authorization code")
    return code


# --- token endpoint ------------------------------------------------------------------------------------------------
class RefreshRefused(CatalogError):
    """Klaviyo refused the refresh token (``invalid_grant``: expired, unused for 90 days, revoked, app removed).

    The catalog has no entry of its own for it; Token Exchange Failed is the closest (the stored access could not
    be exchanged for a new access token), with the detail "refresh token refused: <Klaviyo's reason>".
    """

    def __init__(self, reason: str, *, http_status: int, error_code: str | None) -> None:
        super().__init__(TOKEN_EXCHANGE_FAILED, f"refresh token refused: {reason}", http_status=http_status,
                         error_code=error_code)


class OAuthError(RuntimeError):
    """A token-endpoint call outside the catalog's flow failed (revocation)."""


def _oauth_reason(response: httpx.Response) -> tuple[str, str | None]:
    """Klaviyo's reason for an error reply: ``"<error>: <error_description>"`` and the error code."""
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        error = _klaviyo_text(document["error"])
        description = document.get("error_description")
        if isinstance(description, str) and description:
            return _klaviyo_text(f"{error}: {description}"), error
        return error, error
    summary = summarize_non_json(response.content, response.headers.get("content-type"))
    return _klaviyo_text(f"HTTP {response.status_code}, {summary}"), None


class KlaviyoOAuth:
    """Klaviyo's token endpoint: exchange a code, refresh, revoke (Basic client auth, form bodies)."""

    def __init__(
        self,
        config: OAuthConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        raw = f"{config.client_id}:{config.client_secret.get_secret_value()}".encode()
        self._basic = SecretStr("Basic " + base64.b64encode(raw).decode())
        self._seen: deque[str] = deque(maxlen=16)
        self._redactor = Redactor(self.secrets)
        self._transport = transport
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._http = self._new_http()

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._timeout,
            transport=self._transport,
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
            follow_redirects=False,
        )

    async def __aenter__(self) -> KlaviyoOAuth:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def secrets(self) -> tuple[str, ...]:
        """The client secret and every code, verifier and token this object handled (for redaction)."""
        basic = self._basic.get_secret_value()
        return (self.config.client_secret.get_secret_value(), basic.removeprefix("Basic "), *self._seen)

    def _remember(self, *values: str | None) -> None:
        for value in values:
            if value and value not in self._seen:
                self._seen.append(value)

    async def _post(self, url: str, form: dict[str, str]) -> httpx.Response:
        if self._http.is_closed:  # closed with the service that used it; a later call gets a new pool
            self._http = self._new_http()
        return await self._http.post(url, data=form, headers={"authorization": self._basic.get_secret_value()})

    def _transport_detail(self, exc: BaseException, url: str) -> str:
        return self._redactor.scrub(f"{describe_transport_error(exc)} on POST {urlsplit(url).path}")

    async def exchange_code(self, request: AuthorizationRequest, code: str) -> TokenSet:
        """The tokens for an authorization code; a refusal raises Token Exchange Failed with Klaviyo's reason."""
        self._remember(code, request.code_verifier)
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": request.code_verifier,
                "redirect_uri": request.redirect_url}
        try:
            response = await self._post(self.config.token_url, form)
        except httpx.TransportError as exc:
            raise CatalogError(TOKEN_EXCHANGE_FAILED, f"Klaviyo could not be reached: "
                               f"{self._transport_detail(exc, self.config.token_url)}", retryable=True) from None
        if response.status_code != 200:
            reason, error = _oauth_reason(response)
            log.warning("Klaviyo refused the authorization code",
                        extra={"status": response.status_code, "error_code": error})
            raise CatalogError(TOKEN_EXCHANGE_FAILED, self._redactor.scrub(reason),
                               http_status=response.status_code, error_code=error)
        tokens = self._tokens(response, previous_refresh=None)
        if tokens is None:
            raise CatalogError(TOKEN_EXCHANGE_FAILED, "Klaviyo's token response carried no access token",
                               http_status=response.status_code)
        log.info("Klaviyo authorization code exchanged", extra={"scopes": " ".join(tokens.scope)})
        return tokens

    def _tokens(self, response: httpx.Response, previous_refresh: str | None) -> TokenSet | None:
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        try:
            tokens = TokenSet.from_response(document, previous_refresh_token=previous_refresh)
        except ValueError:
            return None
        self._remember(*tokens.secrets())
        return tokens

    async def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens for a refresh token (a reply without a refresh token keeps this one).

        Only Klaviyo's refusal of the refresh token itself (``invalid_grant``) raises ``RefreshRefused``, which
        needs a new authorization. Anything else is an outage of the token endpoint and raises a retryable
        error: unreachable or 5xx/429 (``Outage.DOWN``), an answer that is not the OAuth JSON (an HTML page, a
        proxy: ``Outage.MISCONFIGURED``), another OAuth error such as ``invalid_client`` (``Outage.UNAUTHORIZED``).
        """
        self._remember(refresh_token)
        url = self.config.token_url
        try:
            response = await self._post(url, {"grant_type": "refresh_token", "refresh_token": refresh_token})
        except httpx.TransportError as exc:
            raise KlaviyoConnectionError(self._transport_detail(exc, url), operation="oauth_token") from None
        status = response.status_code
        if status == 200:
            tokens = self._tokens(response, previous_refresh=refresh_token)
            if tokens is not None:
                return tokens
            raise KlaviyoRejected("the token response carried no access token", http_status=status, retryable=True,
                                  outage=Outage.MISCONFIGURED, operation="oauth_token")
        reason, error = _oauth_reason(response)
        reason = self._redactor.scrub(reason)
        if error == "invalid_grant":
            raise RefreshRefused(reason, http_status=status, error_code=error)
        if status == 429 or status >= 500:
            outage = Outage.DOWN
        elif error is None:
            outage = Outage.MISCONFIGURED
        else:
            outage = Outage.UNAUTHORIZED
        raise KlaviyoRejected(f"{status} {reason}", http_status=status, error_code=error, retryable=True,
                              outage=outage, operation="oauth_token")

    async def revoke(self, token: str, *, hint: str = "refresh_token") -> None:
        """Revoke a token at Klaviyo (``token_type_hint`` ``refresh_token`` or ``access_token``)."""
        self._remember(token)
        url = self.config.revoke_url
        try:
            response = await self._post(url, {"token": token, "token_type_hint": hint})
        except httpx.TransportError as exc:
            raise OAuthError(f"Klaviyo could not be reached: {self._transport_detail(exc, url)}") from None
        if response.status_code != 200:
            reason, _ = _oauth_reason(response)
            raise OAuthError(f"Klaviyo refused to revoke the {hint.replace('_', ' ')} "
                             f"({self._redactor.scrub(reason)})")

    def __repr__(self) -> str:
        return f"KlaviyoOAuth(client_id={self.config.client_id!r}, token_url={self.config.token_url!r})"


# --- receiving the redirect --------------------------------------------------------------------------------------
class CallbackReceiver(Protocol):
    """Where the redirect from Klaviyo arrives: a loopback server, or the operator pasting it."""

    @property
    def redirect_url(self) -> str:
        """The redirect URL to send to Klaviyo (known once started: a loopback port 0 becomes a real port)."""
        ...

    async def start(self) -> None: ...

    async def wait(self, timeout_s: float) -> str:
        """The redirect's URL (or query); a timeout raises ``TimeoutError``."""
        ...

    async def close(self) -> None: ...


class PastedCallback:
    """The operator pastes the URL the browser was redirected to (when the redirect URL is not on this host)."""

    def __init__(self, redirect_url: str, read: Callable[[], Awaitable[str]]) -> None:
        self._redirect_url = redirect_url
        self._read = read

    @property
    def redirect_url(self) -> str:
        return self._redirect_url

    async def start(self) -> None:
        return None

    async def wait(self, timeout_s: float) -> str:
        async with asyncio.timeout(timeout_s):
            return await self._read()

    async def close(self) -> None:
        return None


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


async def _report(report: Reporter | None, error: CatalogError) -> None:
    if report is None:
        return
    try:
        await report(error)
    except Exception as exc:  # the error itself is raised to the caller either way
        log.warning("could not write the authorization error to the error log",
                    extra={"code": error.code, "reason": type(exc).__name__})


async def authorize(
    settings: Settings,
    *,
    receiver: CallbackReceiver | None = None,
    show_url: Callable[[str], object] | None = None,
    report: Reporter | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
    store: TokenStore | None = None,
) -> TokenSet:
    """The Authorize step; returns the stored tokens (masked repr).

    ``receiver`` defaults to a ``LoopbackReceiver`` on the redirect URL (which must then be ``http`` on a loopback
    address). ``show_url`` gets the authorization URL (print it, open a browser; it may be a coroutine function).
    Catalog errors are passed to ``report`` and raised.
    """
    try:
        config = OAuthConfig.from_settings(settings)
        store = store or TokenStore(settings.oauth.token_file, settings.oauth.token_key)
        if receiver is None:
            from consumer.oauth.loopback import LoopbackReceiver

            assert config.redirect_url is not None
            if not is_loopback(config.redirect_url):
                raise ValueError(f"the redirect URL {config.redirect_url} is not served on this host: "
                                 "paste the redirect URL instead (ipaas-klaviyo authorize --paste)")
            receiver = LoopbackReceiver(config.redirect_url)
        await receiver.start()
        try:
            request = new_authorization_request(config, redirect_url=receiver.redirect_url)
            shown = (show_url or _print_url)(request.url)
            if inspect.isawaitable(shown):
                await shown
            try:
                callback = await receiver.wait(timeout_s)
            except TimeoutError:
                raise CatalogError(AUTHORIZATION_DATA_MISSING,
                                   f"no redirect from Klaviyo arrived within {timeout_s:g} s") from None
        finally:
            await receiver.close()
        code = parse_callback(request, callback)
        async with KlaviyoOAuth(config, transport=transport) as oauth:
            tokens = await oauth.exchange_code(request, code)
        await asyncio.to_thread(store.save, tokens)
        log.info("Klaviyo authorized; tokens stored",
                 extra={"token_file": str(store.path), "encrypted": store.encrypted,
                        "scopes": " ".join(tokens.scope)})
        return tokens
    except CatalogError as error:
        log.error(error.message, extra={"code": error.code, "flow": error.flow.slug, "detail": error.detail})
        await _report(report, error)
        raise


def _print_url(url: str) -> None:
    print(url, flush=True)


@dataclass(frozen=True, slots=True)
class RevokeResult:
    revoked: bool
    """Klaviyo confirmed the revocation."""
    deleted: bool
    """The token file was removed."""
    problem: str | None = None


async def revoke(
    settings: Settings,
    *,
    force: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    store: TokenStore | None = None,
) -> RevokeResult:
    """Revoke the stored refresh (and access) token at Klaviyo, then delete the token file.

    When Klaviyo cannot confirm the revocation the file is kept (so it can be retried), unless ``force``.
    """
    store = store or TokenStore(settings.oauth.token_file, settings.oauth.token_key)
    tokens = await asyncio.to_thread(store.load)
    if tokens is None:
        return RevokeResult(revoked=False, deleted=False, problem=f"no token file at {store.path}")
    config = OAuthConfig.from_settings(settings, require_redirect=False)
    problem: str | None = None
    async with KlaviyoOAuth(config, transport=transport) as oauth:
        try:
            if tokens.refresh_token:
                await oauth.revoke(tokens.refresh_token, hint="refresh_token")
            await oauth.revoke(tokens.access_token, hint="access_token")
        except OAuthError as exc:
            problem = str(exc)
    if problem is not None and not force:
        return RevokeResult(revoked=False, deleted=False, problem=problem)
    deleted = await asyncio.to_thread(store.delete)
    log.info("Klaviyo tokens revoked and deleted" if problem is None else "Klaviyo tokens deleted (not revoked)",
             extra={"token_file": str(store.path)})
    return RevokeResult(revoked=problem is None, deleted=deleted, problem=problem)


__all__ = [
    "AuthorizationRequest",
    "CallbackReceiver",
    "KlaviyoOAuth",
    "OAuthConfig",
    "OAuthError",
    "PastedCallback",
    "RefreshRefused",
    "Reporter",
    "RevokeResult",
    "authorize",
    "code_challenge",
    "is_loopback",
    "new_authorization_request",
    "parse_callback",
    "revoke",
]
