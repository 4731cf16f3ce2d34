"""OAuth inside the running service: the bearer credential, and what a lost authorization does to the runtime.

``oauth_auth(settings)`` is the service's Klaviyo credential when the token file exists (and no API key is set).
``bind_runtime(auth, destinations, error_log)`` connects its provider to the service: on ``needs_reauthorization``
Klaviyo is marked unauthorized (the sources that need it pause), the catalog error goes to the error log at
connection time (no transfer) and the ``authorization_state`` gauge moves; once new tokens are found Klaviyo is
probed at once and it all goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from consumer.catalog import CatalogError
from consumer.destinations import Destinations
from consumer.klaviyo.auth import Auth, BearerTokenAuth
from consumer.klaviyo.errors import DESTINATION as KLAVIYO
from consumer.oauth.flow import KlaviyoOAuth, OAuthConfig, Reporter
from consumer.oauth.provider import (
    DEFAULT_REFRESH_MARGIN_S,
    DEFAULT_WATCH_INTERVAL_S,
    AuthorizationState,
    OAuthTokenProvider,
    ReauthorizationRequired,
)
from consumer.oauth.store import TokenStore
from consumer.observability import metrics
from consumer.settings import Settings

if TYPE_CHECKING:
    from consumer.failures.errorlog import ErrorLog

log = logging.getLogger("consumer.oauth")

_REPORT_TIMEOUT_S = 15.0


class OAuthBearerAuth(BearerTokenAuth):
    """``Authorization: Bearer`` from an ``OAuthTokenProvider`` (kept reachable, for ``bind_runtime``)."""

    def __init__(self, provider: OAuthTokenProvider, *, account: str = "oauth") -> None:
        super().__init__(provider, account=account)
        self.provider = provider

    def secrets(self) -> Iterable[str]:
        return (*super().secrets(), *self.provider.secrets())


def oauth_auth(
    settings: Settings,
    *,
    refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
    watch_interval_s: float = DEFAULT_WATCH_INTERVAL_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> OAuthBearerAuth | None:
    """The OAuth credential when the token file exists, else None.

    Raises the catalog's Client ID / Client Secret Not Configured when the file exists but the app is not
    configured, and ``TokenStoreError`` (a ``ValueError``) for an unusable ``oauth.token_key``.
    """
    store = TokenStore(settings.oauth.token_file, settings.oauth.token_key)
    if not store.exists():
        return None
    config = OAuthConfig.from_settings(settings, require_redirect=False)
    provider = OAuthTokenProvider(store, KlaviyoOAuth(config, transport=transport),
                                  refresh_margin_s=refresh_margin_s, watch_interval_s=watch_interval_s)
    return OAuthBearerAuth(provider, account=f"oauth-{config.client_id}")


def set_authorization_gauge(state: AuthorizationState) -> None:
    """``authorization_state{state=...}``: 1 for the current state, 0 for the others."""
    metrics.set_authorization_state(state.value)


@asynccontextmanager
async def bind_runtime(auth: Auth, destinations: Destinations, error_log: ErrorLog) -> AsyncIterator[None]:
    """While inside: a lost authorization takes Klaviyo out (its sources pause) and is written to ``error_log``;
    new tokens bring it back at once (no-op for API keys)."""
    if not isinstance(auth, OAuthBearerAuth):
        yield
        return
    provider = auth.provider
    reports: set[asyncio.Task[None]] = set()

    async def report(error: CatalogError) -> None:
        try:
            await error_log.report(error, None)
        except Exception as exc:
            log.warning("could not write the authorization error to the error log",
                        extra={"code": error.code, "reason": type(exc).__name__})

    def lost(error: CatalogError | None) -> None:
        destinations.report(error if error is not None and error.outage is not None else ReauthorizationRequired(
            "Klaviyo authorization lost; re-authorize with `ipaas-klaviyo authorize`", retry_after=None))

    def on_change(state: AuthorizationState, error: CatalogError | None) -> None:
        set_authorization_gauge(state)
        if state is AuthorizationState.CONNECTED:
            destinations[KLAVIYO].probe_soon()
            log.info("Klaviyo authorization restored")
        else:
            lost(None)
            log.warning("Klaviyo authorization lost; its flows wait until `ipaas-klaviyo authorize`",
                        extra={"state": state.value})
        if error is not None:
            task = asyncio.get_running_loop().create_task(report(error))
            reports.add(task)
            task.add_done_callback(reports.discard)

    provider.add_listener(on_change)
    try:
        await provider.start()
        set_authorization_gauge(provider.state)
        if provider.state is not AuthorizationState.CONNECTED:
            lost(None)
        yield
    finally:
        provider.remove_listener(on_change)
        await provider.aclose()
        if reports:
            _, late = await asyncio.wait(set(reports), timeout=_REPORT_TIMEOUT_S)
            for task in late:
                task.cancel()


def kafka_reporter(settings: Settings, *, timeout_s: float = _REPORT_TIMEOUT_S) -> Reporter:
    """A reporter for the CLI: writes an authorization error to the error-log topic (a producer per report)."""

    async def report(error: CatalogError) -> None:
        from consumer.failures.errorlog import ErrorLog
        from consumer.kafka import reliable_producer
        from consumer.topics import TopicCatalog

        topic = TopicCatalog.load(settings.topics_file, settings.topic_prefix).name("error-log")
        producer = reliable_producer(settings.kafka)
        try:
            async with asyncio.timeout(timeout_s):
                await producer.start()
                await ErrorLog(producer, topic).report(error, None)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    return report
