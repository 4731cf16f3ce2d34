"""The refreshing token provider the Klaviyo client's ``BearerTokenAuth`` asks for access tokens.

- ``get_token()`` refreshes ``refresh_margin_s`` before the access token expires; ``refresh_token(stale)`` after
  Klaviyo answered 401. Either way one refresh runs at a time, and a caller whose stale token was already
  replaced gets the new one: 100 concurrent calls with an expired token make exactly one refresh request. When
  that request fails (the token endpoint is down or answers a proxy's page), the callers that waited for it, and
  those that ask within ``FAILED_REFRESH_HOLD_S`` of it, get its failure rather than asking again one after the
  other: a burst of 401s is one refresh request, whatever its outcome.
- A refused refresh token (``invalid_grant``: expired, revoked, app removed) moves the state to
  ``needs_reauthorization``: listeners hear it with the catalog error (the service pauses consumption and writes
  the error log), and every call fails fast with ``ReauthorizationRequired``, an outage of Klaviyo
  (``Outage.UNAUTHORIZED``), so the runtime keeps the record rather than dead-lettering it.
- The token file is re-read when it changes (another process refreshed, or ``ipaas-klaviyo authorize`` wrote new
  tokens). ``start()`` runs a watcher that checks the file's mtime every ``watch_interval_s``; ``recheck()`` does it
  at once. New tokens while ``needs_reauthorization`` → ``connected`` again, and listeners hear it (resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from consumer.catalog import TOKEN_EXCHANGE_FAILED, CatalogError
from consumer.errors import Outage
from consumer.klaviyo.errors import DESTINATION as KLAVIYO
from consumer.oauth.flow import KlaviyoOAuth, RefreshRefused
from consumer.oauth.store import Signature, TokenSet, TokenStore, TokenStoreError

log = logging.getLogger("consumer.oauth.provider")

DEFAULT_REFRESH_MARGIN_S = 300.0
DEFAULT_WATCH_INTERVAL_S = 5.0
FAILED_REFRESH_HOLD_S = 1.0
"""A refresh request that failed less than this long ago is not sent again: its callers share the failure."""


class AuthorizationState(StrEnum):
    """The labels of the ``authorization_state`` gauge."""

    CONNECTED = "connected"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"
    NOT_CONFIGURED = "not_configured"


StateListener = Callable[[AuthorizationState, CatalogError | None], None]
"""Called on every state change, with the catalog error that caused it (None: no error to report)."""


class ReauthorizationRequired(CatalogError):
    """Klaviyo access is gone until someone runs ``ipaas-klaviyo authorize``; retry later, do not dead-letter."""

    def __init__(self, detail: str, *, retry_after: float | None, cause: CatalogError | None = None) -> None:
        super().__init__(TOKEN_EXCHANGE_FAILED, detail, retryable=True, destination=KLAVIYO, outage=Outage.UNAUTHORIZED,
                         retry_after=retry_after, http_status=cause.http_status if cause else None,
                         error_code=cause.error_code if cause else None, cause=cause)


class OAuthTokenProvider:
    """A ``TokenProvider`` (``consumer.klaviyo.auth``) over the token store and Klaviyo's token endpoint."""

    def __init__(
        self,
        store: TokenStore,
        oauth: KlaviyoOAuth,
        *,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        watch_interval_s: float = DEFAULT_WATCH_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._oauth = oauth
        self._margin = refresh_margin_s
        self._interval = watch_interval_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tokens: TokenSet | None = None
        self._loaded = False
        self._signature: Signature | None = None
        self._state = AuthorizationState.CONNECTED
        self._reason: CatalogError | None = None
        self._dead: TokenSet | None = None
        self._listeners: list[StateListener] = []
        self._watcher: asyncio.Task[None] | None = None
        self._failure: tuple[CatalogError, float] | None = None
        """The last refresh request's failure and when (None once one succeeded)."""
        self.refreshes = 0
        """Refresh requests sent to Klaviyo (for tests and the curious)."""

    # --- state ---------------------------------------------------------------------------------------------------
    @property
    def state(self) -> AuthorizationState:
        return self._state

    @property
    def store(self) -> TokenStore:
        return self._store

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _set_state(self, state: AuthorizationState, error: CatalogError | None) -> None:
        if state is self._state:
            return
        self._state = state
        for listener in list(self._listeners):
            try:
                listener(state, error)
            except Exception:
                log.exception("authorization state listener failed")

    def _needs_reauthorization(self, error: CatalogError | None, reason: str) -> ReauthorizationRequired:
        """Enter ``needs_reauthorization`` (once) and return the error for callers."""
        if self._state is not AuthorizationState.NEEDS_REAUTHORIZATION:
            self._dead = self._tokens
            self._reason = error
            log.error("Klaviyo access needs re-authorization: run `ipaas-klaviyo authorize`",
                      extra={"reason": reason, "code": error.code if error else None,
                             "detail": error.detail if error else None})
            self._set_state(AuthorizationState.NEEDS_REAUTHORIZATION, error)
        return self._blocked()

    def _blocked(self) -> ReauthorizationRequired:
        cause = self._reason
        detail = cause.detail if cause is not None and cause.detail else "no usable Klaviyo tokens"
        return ReauthorizationRequired(f"{detail}; re-authorize with `ipaas-klaviyo authorize`",
                                       retry_after=self._interval if self._interval > 0 else None, cause=cause)

    # --- the token file --------------------------------------------------------------------------------------------
    async def _reload(self) -> None:
        """Re-read the token file when it changed (caller holds the lock)."""
        signature = self._store.signature()
        if self._loaded and signature == self._signature:
            return
        try:
            tokens = await asyncio.to_thread(self._store.load)
        except TokenStoreError as exc:
            log.error("the token file cannot be read", extra={"reason": str(exc)})
            if not self._loaded:
                self._loaded, self._signature = True, signature
            return
        first = not self._loaded
        self._loaded, self._signature = True, signature
        if tokens is None:
            self._tokens = None
            if not first:
                log.warning("the Klaviyo token file was removed", extra={"token_file": str(self._store.path)})
            self._needs_reauthorization(None, "no token file")
            return
        if self._tokens is not None and tokens.to_dict() == self._tokens.to_dict():
            return
        self._tokens = tokens
        if self._state is AuthorizationState.NEEDS_REAUTHORIZATION and not self._same_grant(tokens, self._dead):
            log.info("new Klaviyo tokens found; authorization restored",
                     extra={"token_file": str(self._store.path)})
            self._dead = None
            self._reason = None
            self._set_state(AuthorizationState.CONNECTED, None)

    @staticmethod
    def _same_grant(tokens: TokenSet, dead: TokenSet | None) -> bool:
        return dead is not None and tokens.refresh_token == dead.refresh_token \
            and tokens.access_token == dead.access_token

    async def recheck(self) -> AuthorizationState:
        """Look at the token file now (the watcher does this every ``watch_interval_s``)."""
        async with self._lock:
            await self._reload()
        return self._state

    async def start(self) -> None:
        """Load the tokens and watch the token file."""
        await self.recheck()
        if self._watcher is None and self._interval > 0:
            self._watcher = asyncio.create_task(self._watch(), name="oauth-token-file-watcher")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.recheck()
            except Exception:
                log.exception("checking the token file failed")

    async def aclose(self) -> None:
        """Stop the watcher and close the token endpoint's connections."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._oauth.aclose()

    # --- TokenProvider ---------------------------------------------------------------------------------------------
    async def get_token(self) -> str:
        """A current access token, refreshed first when it expires within the margin."""
        tokens = self._tokens
        if not self._loaded or self._state is AuthorizationState.NEEDS_REAUTHORIZATION or tokens is None:
            async with self._lock:
                await self._reload()  # cheap when the file did not change: one stat
                tokens = self._tokens
                if self._state is AuthorizationState.NEEDS_REAUTHORIZATION:
                    raise self._blocked()
                if tokens is None:
                    raise self._needs_reauthorization(None, "no usable token file")
        if not tokens.expires_within(self._margin, self._clock()):
            return tokens.access_token
        try:
            return await self._refresh(tokens.access_token)
        except ReauthorizationRequired:
            raise
        except CatalogError as exc:
            if exc.infrastructure and not tokens.expires_within(0.0, self._clock()):
                log.warning("refreshing the Klaviyo token failed; the current one is still valid",
                            extra={"detail": exc.detail})
                return tokens.access_token
            raise

    async def refresh_token(self, stale: str) -> str:
        """A fresh access token after Klaviyo refused ``stale`` (one refresh, however many callers)."""
        return await self._refresh(stale)

    async def _refresh(self, stale: str) -> str:
        requested = self.refreshes
        async with self._lock:
            if self._state is AuthorizationState.NEEDS_REAUTHORIZATION:
                await self._reload()  # re-authorized meanwhile?
                if self._state is AuthorizationState.NEEDS_REAUTHORIZATION:
                    raise self._blocked()
            else:
                await self._reload()  # another process may have refreshed
            current = self._tokens
            if current is None:
                raise self._needs_reauthorization(None, "no token file")
            if current.access_token != stale and not current.expires_within(self._margin, self._clock()):
                return current.access_token  # someone else refreshed while this caller waited
            failure = self._failure
            if failure is not None and (self.refreshes != requested
                                        or self._clock() - failure[1] < FAILED_REFRESH_HOLD_S):
                raise _again(failure[0])  # the refresh this caller waited for (or just missed) failed: so does its
            if not current.refresh_token:
                error = CatalogError(TOKEN_EXCHANGE_FAILED, "no refresh token is stored")
                raise self._needs_reauthorization(error, "no refresh token")
            self.refreshes += 1
            try:
                fresh = await self._oauth.refresh(current.refresh_token)
            except RefreshRefused as refused:
                await self._reload()  # a process sharing the file may have rotated the refresh token just now
                if self._tokens is not None and self._tokens.refresh_token != current.refresh_token:
                    return self._tokens.access_token
                raise self._needs_reauthorization(refused, "refresh token refused") from None
            except CatalogError as failed:
                self._failure = (failed, self._clock())
                raise
            self._failure = None
            self._tokens = fresh
            try:
                await asyncio.to_thread(self._store.save, fresh)
                self._signature = self._store.signature()
            except TokenStoreError as exc:  # go on with the tokens in memory; the next save may work
                log.error("the refreshed tokens could not be stored", extra={"reason": str(exc)})
            log.info("Klaviyo access token refreshed", extra={"expires_at": fresh.expires_at})
            return fresh.access_token

    def secrets(self) -> tuple[str, ...]:
        """Every token and the client secret, for redaction."""
        values: list[str] = list(self._oauth.secrets())
        for tokens in (self._tokens, self._dead):
            if tokens is not None:
                values.extend(tokens.secrets())
        return tuple(values)

    def __repr__(self) -> str:
        return f"OAuthTokenProvider(store={self._store!r}, state={self._state.value!r})"


def _again(error: CatalogError) -> CatalogError:
    """Another instance of ``error`` (same type and facts), for a caller that shares its outcome."""
    again = type(error).__new__(type(error), *error.args)
    again.__dict__.update(error.__dict__)
    return again
