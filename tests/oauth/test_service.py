"""OAuth in the running service, through the real broker: a dead refresh token pauses it, re-authorizing resumes it.

The error is written to the error log at connection time (no transfer), counted, and shown by the
``authorization_state`` gauge; the records in flight are kept (infrastructure failures), none is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from consumer.app import ConfigurationError, Service, klaviyo_auth
from consumer.catalog import CLIENT_ID_NOT_CONFIGURED, DESTINATION_RECOVERED, TOKEN_EXCHANGE_FAILED
from consumer.failures.deadletters import read_dead_letters
from consumer.failures.errorlog import read_error_log
from consumer.flows.context import Change, FlowContext
from consumer.klaviyo import ApiKeyAuth, ProfileAttributes
from consumer.oauth import (
    AuthorizationState,
    OAuthBearerAuth,
    TokenSet,
    TokenStore,
    authorize,
    oauth_auth,
)
from consumer.runtime.engine import PAUSE_AUTHORIZATION
from simulators.klaviyo import DEFAULT_OAUTH_CLIENT_ID, DEFAULT_OAUTH_CLIENT_SECRET, KlaviyoSimulator
from tests.support.changes import customer_source
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace

from .conftest import Browser, assert_no_secrets, codes_in, log_texts, simulator_secrets

pytestmark = pytest.mark.kafka

REFUSED = "refresh token refused: invalid_grant: The refresh token is invalid, expired or revoked"


def _gauge(state: str) -> float | None:
    return REGISTRY.get_sample_value("ipaas_klaviyo_authorization_state", {"state": state})


def _errors_counted() -> float:
    value = REGISTRY.get_sample_value("ipaas_klaviyo_catalog_errors_total", {
        "flow": "authorization", "code": TOKEN_EXCHANGE_FAILED.code, "severity": "error"})
    return value or 0.0


def _settings(topic_space: TopicSpace, unique: str, sim: KlaviyoSimulator, tmp_path: Path, **oauth: Any) -> Any:
    return service_settings(
        topic_space, unique, runtime={"retry_attempts": 2},
        klaviyo={"base_url": sim.base_url, "max_retries": 1, "rate_limit": False},
        oauth={"client_id": DEFAULT_OAUTH_CLIENT_ID, "client_secret": DEFAULT_OAUTH_CLIENT_SECRET,
               "redirect_url": "http://127.0.0.1:0/oauth/callback", "token_file": tmp_path / "tokens.json", **oauth},
    )


def _customers(first: int, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"c-{i}".encode(), orjson.dumps({"id": f"c-{i}", "first_name": f"Customer {i}",
                                               "email_address": f"c-{i}@example.com"}))
            for i in range(first, first + count)]


async def test_a_dead_refresh_token_pauses_the_service_and_reauthorizing_resumes_it_with_nothing_lost(
    topic_space: TopicSpace, unique: str, simulator: KlaviyoSimulator, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, captured_requests: list[Any],
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="consumer")
    settings = _settings(topic_space, unique, simulator, tmp_path)
    browsers = [Browser()]
    await authorize(settings, show_url=browsers[0], timeout_s=10)
    secrets = simulator_secrets(simulator)

    calls: list[str] = []

    async def upsert(event: Change[Any], ctx: FlowContext) -> None:
        calls.append(event.record_id)
        await ctx.klaviyo.upsert_profile(ProfileAttributes(email=f"{event.record_id}@example.com",
                                                           first_name=f"Customer {event.record_id}"))

    routes = [customer_source(upsert)]
    auth = oauth_auth(settings, watch_interval_s=0.2)
    assert auth is not None
    lost, restored = asyncio.Event(), asyncio.Event()
    auth.provider.add_listener(lambda state, error: (
        lost if state is AuthorizationState.NEEDS_REAUTHORIZATION else restored).set())
    counted_before = _errors_counted()

    async with running_service(settings, routes=routes, auth=auth) as svc:
        runtime = svc.service.runtime
        assert runtime is not None
        assert _gauge("connected") == 1.0 and _gauge("needs_reauthorization") == 0.0

        await svc.send("customer-changes", _customers(0, 10))
        await svc.wait_finished(10)

        # Klaviyo no longer honours the refresh token (unused 90 days, app removed, revoked)
        secrets |= simulator_secrets(simulator)
        simulator.state.oauth.refresh_tokens.clear()
        simulator.state.oauth.expire_access_tokens()
        await svc.send("customer-changes", _customers(10, 10))
        async with asyncio.timeout(30):
            await lost.wait()

        assert PAUSE_AUTHORIZATION in runtime.health.paused
        assert _gauge("needs_reauthorization") == 1.0 and _gauge("connected") == 0.0
        assert _gauge("unauthorized") == 0.0  # the lost grant is the provider's state, not a refused call
        assert runtime.health.destinations == {"klaviyo": "unauthorized"}
        assert REGISTRY.get_sample_value("ipaas_klaviyo_destination_state",
                                         {"destination": "klaviyo", "state": "unauthorized"}) == 1.0
        [entry] = await svc.error_log(expected=1)
        assert entry["code"] == TOKEN_EXCHANGE_FAILED.code and entry["flow"] == "authorization"
        assert entry["message"] == TOKEN_EXCHANGE_FAILED.message and entry["transfer"] is None
        assert entry["detail"] == REFUSED and entry["http_status"] == 400 and not entry["dead_lettered"]
        assert entry["what_to_do"] == TOKEN_EXCHANGE_FAILED.action and entry["source"] is None
        assert _errors_counted() == counted_before + 1

        await svc.send("customer-changes", _customers(20, 5))  # new work while paused waits too
        assert len(svc.finished) == 10  # nothing handled without Klaviyo access

        browsers.append(Browser())
        await authorize(settings, show_url=browsers[1], timeout_s=10)  # `ipaas-klaviyo authorize`
        await auth.provider.recheck()  # the watcher would notice within its interval; do not wait for it
        async with asyncio.timeout(10):
            await restored.wait()
        assert _gauge("connected") == 1.0 and _gauge("needs_reauthorization") == 0.0

        finished = await svc.wait_finished(25)  # Klaviyo is probed at once and the waiting records go
        assert PAUSE_AUTHORIZATION not in runtime.health.paused
        secrets |= simulator_secrets(simulator)

    assert len(calls) > 25  # calls refused while it needed re-authorization were kept and retried
    outcomes = [outcome for _, outcome in finished]
    assert outcomes == ["succeeded"] * 25  # nothing dead-lettered, nothing skipped
    handled = {message.key for message, _ in finished}
    assert handled == {f"c-{i}".encode() for i in range(25)}
    emails = {p.attributes.get("email") for p in simulator.store.profiles.values()}
    assert {f"c-{i}@example.com" for i in range(25)} <= emails
    assert _errors_counted() == counted_before + 1  # one entry for the outage, not one per record
    assert await read_dead_letters(settings.kafka, [svc.topic("customer-changes-dlt")]) == []
    logged = [e.record["code"] for e in await read_error_log(settings.kafka, svc.topic("error-log"))]
    assert sorted(logged) == sorted([TOKEN_EXCHANGE_FAILED.code, DESTINATION_RECOVERED.code])  # lost, and back

    secrets |= {DEFAULT_OAUTH_CLIENT_SECRET, *(r.code_verifier for r in captured_requests),
                *(r.state for r in captured_requests), *codes_in(loc for b in browsers for loc in b.locations)}
    assert_no_secrets([*log_texts(caplog.records), orjson.dumps(entry).decode()], secrets)


async def test_the_service_uses_the_token_file_when_no_api_key_is_set(
    simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    settings = service_settings(TopicSpace("127.0.0.1:9"), "x", klaviyo={"base_url": simulator.base_url}, oauth={
        "client_id": DEFAULT_OAUTH_CLIENT_ID, "client_secret": DEFAULT_OAUTH_CLIENT_SECRET,
        "token_file": tmp_path / "tokens.json"})
    with pytest.raises(ConfigurationError, match="ipaas-klaviyo authorize"):
        klaviyo_auth(settings)
    TokenStore(settings.oauth.token_file).save(TokenSet("access-value-1234", "refresh-value-5678", None))
    auth = klaviyo_auth(settings)
    assert isinstance(auth, OAuthBearerAuth)
    await auth.provider.aclose()
    with_key = settings.model_copy(update={"klaviyo": settings.klaviyo.model_copy(update={"api_key": "pk_x" * 5})})
    assert isinstance(klaviyo_auth(with_key), ApiKeyAuth)  # an API key wins
    no_id = settings.model_copy(update={"oauth": settings.oauth.model_copy(update={"client_id": None})})
    with pytest.raises(ConfigurationError) as caught:
        klaviyo_auth(no_id)
    assert str(caught.value).startswith(
        "The authorization could not be completed because the Client ID is not configured")



async def test_a_service_started_without_the_client_id_writes_it_to_the_error_log(
    topic_space: TopicSpace, unique: str, simulator: KlaviyoSimulator, tmp_path: Path
) -> None:
    settings = _settings(topic_space, unique, simulator, tmp_path, client_id=None)
    TokenStore(settings.oauth.token_file).save(TokenSet("access-value-1234", "refresh-value-5678", None))
    with pytest.raises(ConfigurationError, match="Client ID is not configured"):
        async with running_service(settings):
            pass
    [entry] = [e.record for e in await read_error_log(settings.kafka, Service(settings).catalog.name("error-log"))]
    assert (entry["code"], entry["flow"], entry["transfer"]) == (CLIENT_ID_NOT_CONFIGURED.code, "authorization", None)
    assert entry["message"] == CLIENT_ID_NOT_CONFIGURED.message and entry["detail"] == "oauth.client_id is not set"
