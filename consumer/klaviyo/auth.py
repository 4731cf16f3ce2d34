"""How the client authenticates: a private API key, or an OAuth bearer token from a token provider.

Secrets stay inside these objects: their reprs mask them, and ``secrets()`` lets the client scrub them from any
text it logs or raises.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from typing import Protocol, runtime_checkable

import httpx
from pydantic import SecretStr

from consumer.settings import KlaviyoSettings


@runtime_checkable
class TokenProvider(Protocol):
    """Supplies OAuth access tokens (the OAuth module implements it)."""

    async def get_token(self) -> str:
        """A current access token."""
        ...

    async def refresh_token(self, stale: str) -> str:
        """A fresh access token after Klaviyo refused ``stale`` (refresh unless another caller already did)."""
        ...


class Auth(ABC):
    """An ``Authorization`` header strategy."""

    @property
    @abstractmethod
    def account_key(self) -> str:
        """A non-secret identity of the quota this credential draws on (rate limits are per account/app)."""

    @abstractmethod
    async def authorization(self) -> str:
        """The ``Authorization`` header value for the next request."""

    async def refresh(self, stale_authorization: str) -> bool:
        """After a 401 for ``stale_authorization``: get a new credential; False when there is none to get."""
        return False

    @abstractmethod
    def secrets(self) -> Iterable[str]:
        """Every secret value this strategy has handed out, for redaction."""


class ApiKeyAuth(Auth):
    """``Authorization: Klaviyo-API-Key pk_...``."""

    def __init__(self, api_key: SecretStr | str, *, account: str | None = None) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ValueError("the Klaviyo API key is empty")
        self._key = SecretStr(key)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        self._account = account or f"key-{digest}"

    @classmethod
    def from_settings(cls, settings: KlaviyoSettings) -> ApiKeyAuth:
        if settings.api_key is None:
            raise ValueError("klaviyo.api_key is not configured")
        return cls(settings.api_key)

    @property
    def account_key(self) -> str:
        return self._account

    async def authorization(self) -> str:
        return f"Klaviyo-API-Key {self._key.get_secret_value()}"

    def secrets(self) -> Iterable[str]:
        return (self._key.get_secret_value(),)

    def __repr__(self) -> str:
        return f"ApiKeyAuth(account={self._account!r}, api_key='**********')"


class BearerTokenAuth(Auth):
    """``Authorization: Bearer <access token>`` from a ``TokenProvider``.

    After a 401: a caller whose token was already replaced retries with the new one (no refresh); otherwise one
    refresh runs for every caller at once (the provider is single-flight). A token that a refresh produced less
    than ``trust_fresh_s`` ago and that is refused as well is not refreshed again: the credential is refused
    (the destination is unauthorized), and a refresh storm cannot start.
    """

    def __init__(
        self, provider: TokenProvider, *, account: str = "oauth", trust_fresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._account = account
        self._seen: deque[str] = deque(maxlen=8)
        self._trust_fresh_s = trust_fresh_s
        self._clock = clock
        self._fresh: tuple[str, float] | None = None

    @property
    def account_key(self) -> str:
        return self._account

    def _remember(self, token: str) -> str:
        if token and token not in self._seen:
            self._seen.append(token)
        return token

    async def authorization(self) -> str:
        return f"Bearer {self._remember(await self._provider.get_token())}"

    async def refresh(self, stale_authorization: str) -> bool:
        stale = stale_authorization.removeprefix("Bearer ")
        if self._fresh is not None and self._fresh[0] == stale and self._clock() - self._fresh[1] < self._trust_fresh_s:
            return False  # a token just refreshed is refused too: refreshing again would not help
        fresh = self._remember(await self._provider.refresh_token(stale))
        if not fresh or fresh == stale:
            return False
        self._fresh = (fresh, self._clock())
        return True

    def secrets(self) -> Iterable[str]:
        return tuple(self._seen)

    def __repr__(self) -> str:
        return f"BearerTokenAuth(account={self._account!r}, provider={type(self._provider).__name__})"


class CredentialFlow(httpx.Auth):
    """The ``httpx.Auth`` layer: sets ``Authorization`` from an ``Auth``; a 401 may refresh it and resend once."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("the Klaviyo credential is async-only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        sent = await self.auth.authorization()
        request.headers["authorization"] = sent
        response = yield request
        if response.status_code == 401 and await self.auth.refresh(sent):
            request.headers["authorization"] = await self.auth.authorization()
            yield request
