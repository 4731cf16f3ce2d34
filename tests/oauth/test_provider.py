"""The token provider: single-flight refresh, refresh before expiry, dead refresh tokens, re-authorization."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.catalog import CatalogError
from consumer.klaviyo import KlaviyoClient, KlaviyoRejected, ProfileAttributes
from consumer.oauth import (
    AuthorizationState,
    OAuthBearerAuth,
    OAuthTokenProvider,
    ReauthorizationRequired,
    RefreshRefused,
    TokenSet,
    TokenStore,
    authorize,
    oauth_auth,
)
from consumer.oauth import provider as provider_module
from consumer.settings import Settings
from simulators.klaviyo import DEFAULT_OAUTH_CLIENT_SECRET, Faults, KlaviyoSimulator

from .conftest import Browser, assert_no_secrets, log_texts, oauth_settings, simulator_secrets


class Harness:
    """Authorized settings, providers over its token file, clients using them; everything closed afterwards."""

    def __init__(self, sim: KlaviyoSimulator, settings: Settings) -> None:
        self.sim = sim
        self.settings = settings
        self.auths: list[OAuthBearerAuth] = []
        self.clients: list[KlaviyoClient] = []
        self.changes: list[tuple[AuthorizationState, CatalogError | None]] = []
        self.secrets: set[str] = {DEFAULT_OAUTH_CLIENT_SECRET}

    async def authorize(self) -> TokenSet:
        tokens = await authorize(self.settings, show_url=Browser(), timeout_s=10)
        self.secrets |= simulator_secrets(self.sim)
        return tokens

    def auth(self, **options: Any) -> OAuthBearerAuth:
        options.setdefault("watch_interval_s", 0)  # tests call recheck() themselves
        auth = oauth_auth(self.settings, **options)
        assert auth is not None
        auth.provider.add_listener(lambda state, error: self.changes.append((state, error)))
        self.auths.append(auth)
        return auth

    def client(self, auth: OAuthBearerAuth) -> KlaviyoClient:
        client = KlaviyoClient(self.settings.klaviyo, auth)
        self.clients.append(client)
        return client

    def refresh_requests(self) -> int:
        return sum(1 for r in self.sim.received("oauth_token") if r.body.get("grant_type") == "refresh_token")

    def kill_refresh_tokens(self) -> None:
        """What Klaviyo does after 90 days unused, an uninstall or a revocation: the refresh token is dead."""
        oauth = self.sim.state.oauth
        self.secrets |= simulator_secrets(self.sim)
        oauth.refresh_tokens.clear()
        oauth.expire_access_tokens()

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
        for auth in self.auths:
            await auth.provider.aclose()


@pytest.fixture
async def harness(simulator: KlaviyoSimulator, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(simulator, oauth_settings(simulator, tmp_path))
    try:
        yield h
    finally:
        await h.close()


def _rewrite_expiry(store: TokenStore, expires_at: float) -> TokenSet:
    tokens = store.load()
    assert tokens is not None
    changed = TokenSet(tokens.access_token, tokens.refresh_token, expires_at, tokens.scope, tokens.token_type,
                       tokens.obtained_at)
    store.save(changed)
    return changed


async def test_one_refresh_for_100_concurrent_calls_refused_with_401(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.authorize()
    auth = harness.auth()
    client = harness.client(auth)
    profile = await client.create_profile(ProfileAttributes(email="single-flight@example.com"))
    harness.sim.state.oauth.expire_access_tokens()  # Klaviyo now answers 401 to the token we hold

    fetched = await asyncio.gather(*(client.get_profile(profile.id) for _ in range(100)))

    assert {p.id for p in fetched} == {profile.id}
    assert harness.refresh_requests() == 1 and auth.provider.refreshes == 1
    statuses = [r.status for r in harness.sim.received("get_profile")]
    assert statuses.count(200) == 100 and set(statuses) <= {200, 401}
    [refresh] = [r for r in harness.sim.received("oauth_token") if r.body.get("grant_type") == "refresh_token"]
    assert refresh.auth_scheme == "Basic" and refresh.body == {"grant_type": "refresh_token", "refresh_token": "***"}
    assert refresh.headers["content-type"].startswith("application/x-www-form-urlencoded")
    stored = TokenStore(harness.settings.oauth.token_file).load()
    assert stored is not None and harness.sim.state.oauth.grant_for(stored.access_token) is not None
    harness.secrets |= simulator_secrets(harness.sim)
    assert_no_secrets(log_texts(caplog.records), harness.secrets)


async def test_one_failed_refresh_for_100_concurrent_calls_while_the_token_endpoint_is_down(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.authorize()
    auth = harness.auth()
    client = harness.client(auth)
    profile = await client.create_profile(ProfileAttributes(email="endpoint-down@example.com"))
    harness.sim.state.oauth.expire_access_tokens()
    harness.sim.faults = Faults(error_rates={503: 1.0}, html_errors=True, operations=["oauth_token"])

    failed = await asyncio.gather(*(client.get_profile(profile.id) for _ in range(100)), return_exceptions=True)

    assert all(isinstance(error, KlaviyoRejected) and error.infrastructure and error.http_status == 503
               for error in failed)
    assert len({id(error) for error in failed}) == 100  # each caller its own error
    assert harness.refresh_requests() == 1  # the callers waiting for the refresh shared its failure
    assert auth.provider.state is AuthorizationState.CONNECTED and harness.changes == []
    harness.sim.faults = Faults()
    with pytest.raises(KlaviyoRejected):  # a refresh that failed just now is not asked again at once
        await client.get_profile(profile.id)
    assert harness.refresh_requests() == 1
    monkeypatch.setattr(provider_module, "FAILED_REFRESH_HOLD_S", 0.0)  # the hold is over
    assert (await client.get_profile(profile.id)).id == profile.id  # a call refreshes again
    assert harness.refresh_requests() == 2


async def test_one_refresh_for_100_concurrent_callers_of_an_expiring_token(harness: Harness) -> None:
    await harness.authorize()
    store = TokenStore(harness.settings.oauth.token_file)
    stale = _rewrite_expiry(store, time.time() - 1)
    provider = harness.auth().provider

    tokens = await asyncio.gather(*(provider.get_token() for _ in range(100)))

    assert len(set(tokens)) == 1 and tokens[0] != stale.access_token
    assert harness.refresh_requests() == 1 and provider.refreshes == 1
    # a refresh token that Klaviyo does not rotate is kept
    stored = store.load()
    assert stored is not None and stored.refresh_token == stale.refresh_token and stored.access_token == tokens[0]


@pytest.mark.parametrize(("expires_in_s", "margin_s", "refreshed"), [(100, 300, True), (100, 60, False)])
async def test_the_token_is_refreshed_before_it_expires(
    harness: Harness, expires_in_s: float, margin_s: float, refreshed: bool
) -> None:
    await harness.authorize()
    store = TokenStore(harness.settings.oauth.token_file)
    current = _rewrite_expiry(store, time.time() + expires_in_s)
    provider = harness.auth(refresh_margin_s=margin_s).provider
    token = await provider.get_token()
    assert (token != current.access_token) is refreshed
    assert harness.refresh_requests() == int(refreshed)


async def test_rotated_refresh_tokens_are_stored(harness: Harness) -> None:
    harness.sim.config.rotate_refresh_tokens = True
    first = await harness.authorize()
    provider = harness.auth().provider
    fresh = await provider.refresh_token(first.access_token)
    stored = TokenStore(harness.settings.oauth.token_file).load()
    assert stored is not None and stored.access_token == fresh
    assert stored.refresh_token != first.refresh_token
    assert stored.refresh_token in harness.sim.state.oauth.refresh_tokens


async def test_a_refresh_by_another_process_is_picked_up_instead_of_refreshing_again(harness: Harness) -> None:
    first = await harness.authorize()
    one, other = harness.auth().provider, harness.auth().provider
    assert await one.get_token() == await other.get_token() == first.access_token
    fresh = await one.refresh_token(first.access_token)
    assert await other.refresh_token(first.access_token) == fresh  # read from the file
    assert harness.refresh_requests() == 1


async def test_a_transient_refresh_failure_keeps_a_still_valid_token(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_module, "FAILED_REFRESH_HOLD_S", 0.0)  # each step below asks Klaviyo again
    await harness.authorize()
    store = TokenStore(harness.settings.oauth.token_file)
    current = _rewrite_expiry(store, time.time() + 60)
    provider = harness.auth(refresh_margin_s=300).provider
    harness.sim.faults = Faults(fail_next=[503], operations=["oauth_token"])
    assert await provider.get_token() == current.access_token
    assert provider.state is AuthorizationState.CONNECTED

    _rewrite_expiry(store, time.time() - 1)
    harness.sim.faults = Faults(fail_next=[503], operations=["oauth_token"])
    await provider.recheck()
    with pytest.raises(KlaviyoRejected) as caught:
        await provider.get_token()
    assert caught.value.infrastructure and caught.value.retryable and caught.value.http_status == 503
    assert provider.state is AuthorizationState.CONNECTED and harness.changes == []
    assert await provider.get_token() != current.access_token  # the next try refreshes


async def test_a_dead_refresh_token_needs_reauthorization_and_calls_fail_fast_as_infrastructure(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.authorize()
    auth = harness.auth()
    client = harness.client(auth)
    profile = await client.create_profile(ProfileAttributes(email="dead-refresh@example.com"))
    harness.kill_refresh_tokens()

    results = await asyncio.gather(*(client.get_profile(profile.id) for _ in range(20)), return_exceptions=True)

    assert harness.refresh_requests() == 1  # one refused refresh, not one per call
    assert all(isinstance(r, ReauthorizationRequired) for r in results), results
    error = results[0]
    assert isinstance(error, ReauthorizationRequired)
    assert error.infrastructure and error.retryable and error.code == "TOKEN_EXCHANGE_FAILED"
    assert error.retry_after is None  # no watcher here; with one, its interval (when to look again)
    assert (error.detail or "").startswith(
        "refresh token refused: invalid_grant: The refresh token is invalid, expired or revoked")
    assert auth.provider.state is AuthorizationState.NEEDS_REAUTHORIZATION
    [(state, cause)] = harness.changes
    assert state is AuthorizationState.NEEDS_REAUTHORIZATION and isinstance(cause, RefreshRefused)
    assert cause.detail == "refresh token refused: invalid_grant: The refresh token is invalid, expired or revoked"
    assert cause.http_status == 400 and cause.error_code == "invalid_grant"

    sent = len(harness.sim.received())
    with pytest.raises(ReauthorizationRequired):
        await client.get_profile(profile.id)
    assert len(harness.sim.received()) == sent  # fails fast: nothing sent while it needs re-authorization
    texts = [*log_texts(caplog.records), *(str(r) for r in results), *(repr(r) for r in results), repr(auth),
             repr(auth.provider), repr(client)]
    assert_no_secrets(texts, harness.secrets)


async def test_new_tokens_in_the_file_restore_the_connection(harness: Harness) -> None:
    await harness.authorize()
    auth = harness.auth()
    client = harness.client(auth)
    profile = await client.create_profile(ProfileAttributes(email="reauthorized@example.com"))
    harness.kill_refresh_tokens()
    with pytest.raises(ReauthorizationRequired):
        await client.get_profile(profile.id)
    assert await auth.provider.recheck() is AuthorizationState.NEEDS_REAUTHORIZATION  # file unchanged: still down

    await harness.authorize()  # `ipaas-klaviyo authorize`, e.g. in another process
    assert await auth.provider.recheck() is AuthorizationState.CONNECTED
    assert (await client.get_profile(profile.id)).id == profile.id
    assert [state for state, _ in harness.changes] == [AuthorizationState.NEEDS_REAUTHORIZATION,
                                                       AuthorizationState.CONNECTED]
    assert harness.changes[1][1] is None


async def test_the_watcher_notices_reauthorization_on_its_own(harness: Harness) -> None:
    await harness.authorize()
    auth = harness.auth(watch_interval_s=0.05)
    restored = asyncio.Event()
    auth.provider.add_listener(
        lambda state, error: restored.set() if state is AuthorizationState.CONNECTED else None)
    await auth.provider.start()
    harness.kill_refresh_tokens()
    with pytest.raises(ReauthorizationRequired):
        await harness.client(auth).get_profile("01J0000000000000000000000")
    await harness.authorize()
    async with asyncio.timeout(5):
        await restored.wait()
    assert auth.provider.state is AuthorizationState.CONNECTED


async def test_a_removed_token_file_needs_reauthorization_without_an_error_entry(harness: Harness) -> None:
    await harness.authorize()
    provider = harness.auth().provider
    await provider.get_token()
    TokenStore(harness.settings.oauth.token_file).delete()
    assert await provider.recheck() is AuthorizationState.NEEDS_REAUTHORIZATION
    assert harness.changes == [(AuthorizationState.NEEDS_REAUTHORIZATION, None)]
    with pytest.raises(ReauthorizationRequired) as caught:
        await provider.get_token()
    assert caught.value.infrastructure


def test_oauth_auth_needs_the_token_file_and_the_app(simulator: KlaviyoSimulator, tmp_path: Path) -> None:
    settings = oauth_settings(simulator, tmp_path)
    assert oauth_auth(settings) is None  # no token file: not connected with OAuth
    TokenStore(settings.oauth.token_file).save(TokenSet("access-value-123", "refresh-value-456", None))
    auth = oauth_auth(settings)
    assert isinstance(auth, OAuthBearerAuth) and isinstance(auth.provider, OAuthTokenProvider)
    assert "access-value-123" not in repr(auth) and "refresh-value-456" not in repr(auth.provider)
    no_secret = oauth_settings(simulator, tmp_path, client_secret=None)
    with pytest.raises(CatalogError) as caught:
        oauth_auth(no_secret)
    assert caught.value.code == "CLIENT_SECRET_NOT_CONFIGURED"


async def test_the_client_scrubs_every_oauth_secret(harness: Harness) -> None:
    await harness.authorize()
    auth = harness.auth()
    await auth.provider.get_token()
    secrets: Callable[[], Any] = auth.secrets
    values = set(secrets())
    stored = TokenStore(harness.settings.oauth.token_file).load()
    assert stored is not None
    assert {stored.access_token, stored.refresh_token, DEFAULT_OAUTH_CLIENT_SECRET} <= values


async def test_losing_a_rotation_race_to_another_process_is_not_a_dead_refresh_token(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.sim.config.rotate_refresh_tokens = True
    first = await harness.authorize()
    winner, loser = harness.auth().provider, harness.auth().provider
    await loser.get_token()
    oauth = loser._oauth
    refresh = oauth.refresh

    async def raced(refresh_token: str) -> TokenSet:
        await winner.refresh_token(first.access_token)  # rotates (and writes) just before our request lands
        return await refresh(refresh_token)

    monkeypatch.setattr(oauth, "refresh", raced)
    token = await loser.refresh_token(first.access_token)
    assert token == await winner.get_token()
    assert loser.state is AuthorizationState.CONNECTED and harness.changes == []
    assert harness.refresh_requests() == 2  # the winner's, and the loser's refused one
