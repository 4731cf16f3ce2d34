"""Klaviyo refuses the credential for a while: a 401 storm on every call with OAuth bearer tokens, a rotated
private API key. The service pauses what needs Klaviyo and says why (destination state, ``authorization_state``),
refreshes the token at most twice per storm, dead-letters nothing, and delivers everything once Klaviyo takes the
credential again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumer.catalog import (
    DESTINATION_RECOVERED,
    KLAVIYO_CONNECTION_ERROR,
    KLAVIYO_REJECTED_REQUEST,
    TOKEN_EXCHANGE_FAILED,
)
from consumer.destinations import DestinationState
from consumer.oauth import AuthorizationState, authorize, oauth_auth
from consumer.runtime.engine import PAUSE_AUTHORIZATION
from simulators.klaviyo import (
    DEFAULT_API_KEY,
    DEFAULT_OAUTH_CLIENT_ID,
    DEFAULT_OAUTH_CLIENT_SECRET,
    ApiKeyGrant,
    Faults,
    KlaviyoSimulator,
)
from tests.oauth.conftest import Browser
from tests.support.service import running_service

from .conftest import (
    Watch,
    assert_everything_committed,
    customer_change,
    error_log,
    event_ids,
    expected_events,
    gauge,
    profiles_by_external_id,
    settings_for,
    transaction_change,
)

pytestmark = pytest.mark.kafka

STORM_S = 4.0
EPISODE_S = 3.0


def oauth_settings(kafka_bootstrap: str, unique: str, sim: KlaviyoSimulator, tmp_path: Path) -> Any:
    return settings_for(kafka_bootstrap, unique, sim, api_key=None, oauth={
        "client_id": DEFAULT_OAUTH_CLIENT_ID, "client_secret": DEFAULT_OAUTH_CLIENT_SECRET,
        "redirect_url": "http://127.0.0.1:0/oauth/callback", "token_file": tmp_path / "tokens.json"})


def refreshes(sim: KlaviyoSimulator) -> int:
    """Refresh-token grants the token endpoint received."""
    return sum(1 for r in sim.received("oauth_token")
               if isinstance(r.body, dict) and r.body.get("grant_type") == "refresh_token")


async def test_a_401_storm_pauses_klaviyo_with_at_most_two_refreshes_and_loses_nothing(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, tmp_path: Path
) -> None:
    settings = oauth_settings(kafka_bootstrap, unique, klaviyo_sim, tmp_path)
    await authorize(settings, show_url=Browser(), timeout_s=10)  # `ipaas-klaviyo authorize`
    auth = oauth_auth(settings, watch_interval_s=0.2)
    customers = [f"c-{i}" for i in range(100)]
    changes = [customer_change(c, version) for version in range(5) for c in customers]  # 500
    orders = [f"t-{i}" for i in range(100)]

    async with running_service(settings, auth=auth) as svc:
        watch = Watch.on(svc)
        runtime = svc.service.runtime
        assert runtime is not None
        await svc.send("customer-changes", changes[:100])
        await watch.count(20)  # flowing
        klaviyo_sim.faults = Faults(unauthorized=True, for_s=STORM_S)
        await svc.send("customer-changes", changes[100:])
        await svc.send("transaction-changes", [transaction_change(t, customers[i]) for i, t in enumerate(orders)])
        out_at = await watch.state("klaviyo", DestinationState.UNAUTHORIZED)

        # while it lasts, the service says so
        assert runtime.health.destinations == {"klaviyo": "unauthorized"} and not runtime.health.ready()
        assert PAUSE_AUTHORIZATION in runtime.health.paused
        assert gauge("ipaas_klaviyo_destination_state", {"destination": "klaviyo", "state": "unauthorized"}) == 1
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "unauthorized"}) == 1
        during = len(watch.finished)

        back_at = await watch.state("klaviyo", DestinationState.UP, after=out_at)
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "connected"}) == 1
        await watch.count(600)
        await assert_everything_committed(svc, "customer-changes", "transaction-changes")

    refreshed = refreshes(klaviyo_sim)
    refused = sum(1 for r in klaviyo_sim.received() if r.fault == "unauthorized")
    print(f"\n[401 storm] unauthorized {back_at - out_at:.1f} s; {refused} calls refused; {refreshed} refreshes; "
          f"{during} records finished when it was noticed; records {watch.outcomes()}")
    assert 1 <= refreshed <= 2
    assert watch.outcomes() == {"succeeded": 600}  # nothing dead-lettered
    assert watch.states("klaviyo") == [DestinationState.UNAUTHORIZED, DestinationState.UP]
    profiles = profiles_by_external_id(klaviyo_sim)
    assert {cid: profiles[cid]["last_name"] for cid in customers} == dict.fromkeys(customers, "v4")
    assert len(profiles) == len(customers)
    assert event_ids(klaviyo_sim) == expected_events(orders)


ROTATED_KEY = "pk_rotated00000000000000000000000000"


async def test_a_refused_private_key_pauses_klaviyo_and_it_resumes_when_the_key_is_taken_again(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator
) -> None:
    customers = [f"c-{i}" for i in range(30)]
    async with running_service(settings_for(kafka_bootstrap, unique, klaviyo_sim)) as svc:
        watch = Watch.on(svc)
        runtime = svc.service.runtime
        assert runtime is not None
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[:10]])
        await watch.count(10)
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "connected"}) == 1

        klaviyo_sim.config.api_keys = {ROTATED_KEY: ApiKeyGrant()}  # someone rotated the key in Klaviyo
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[10:]])
        await svc.send("customer-changes", [customer_change(c, 1) for c in customers[:10]])
        out_at = await watch.state("klaviyo", DestinationState.UNAUTHORIZED)
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "unauthorized"}) == 1
        assert gauge("ipaas_klaviyo_destination_state", {"destination": "klaviyo", "state": "unauthorized"}) == 1
        assert runtime.health.destinations == {"klaviyo": "unauthorized"}
        assert PAUSE_AUTHORIZATION in runtime.health.paused
        [outage] = await svc.error_log(expected=1)
        assert outage["code"] == KLAVIYO_REJECTED_REQUEST.code and outage["http_status"] == 401
        assert "Klaviyo unauthorized since" in outage["message"] and outage["transfer"] is None

        klaviyo_sim.config.api_keys[DEFAULT_API_KEY] = ApiKeyGrant()  # the key is valid again
        await watch.state("klaviyo", DestinationState.UP, after=out_at)
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "connected"}) == 1
        await watch.count(40)
        await assert_everything_committed(svc, "customer-changes")

    assert watch.outcomes() == {"succeeded": 40}
    profiles = profiles_by_external_id(klaviyo_sim)
    assert {cid: profiles[cid]["last_name"] for cid in customers} == {
        cid: "v1" if i < 10 else "v0" for i, cid in enumerate(customers)}


async def test_after_a_key_rotation_a_restart_with_the_new_key_delivers_what_waited(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator
) -> None:
    customers = [f"c-{i}" for i in range(20)]
    old = settings_for(kafka_bootstrap, unique, klaviyo_sim)
    async with running_service(old) as svc:
        watch = Watch.on(svc)
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[:10]])
        await watch.count(10)
        klaviyo_sim.config.api_keys = {ROTATED_KEY: ApiKeyGrant()}
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[10:]])
        await watch.state("klaviyo", DestinationState.UNAUTHORIZED)
    assert watch.outcomes() == {"succeeded": 10}  # stopped while paused: the waiting records stay uncommitted

    new = settings_for(kafka_bootstrap, unique, klaviyo_sim, api_key=ROTATED_KEY)  # the operator's new key
    async with running_service(new) as svc:
        restarted = Watch.on(svc)
        await restarted.count(10)
        await assert_everything_committed(svc, "customer-changes")
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "connected"}) == 1

    assert restarted.outcomes() == {"succeeded": 10} and restarted.states("klaviyo") == []
    assert set(profiles_by_external_id(klaviyo_sim)) == set(customers)
    assert any(r.status == 401 and r.fault is None for r in klaviyo_sim.received())  # the old key, refused


@pytest.mark.parametrize("status", [403, 503])
async def test_an_html_error_from_the_token_endpoint_while_the_token_expires_is_an_outage_not_a_lost_grant(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, tmp_path: Path, status: int
) -> None:
    settings = oauth_settings(kafka_bootstrap, unique, klaviyo_sim, tmp_path)
    await authorize(settings, show_url=Browser(), timeout_s=10)
    auth = oauth_auth(settings, watch_interval_s=0.2)
    assert auth is not None
    provider_states: list[AuthorizationState] = []
    auth.provider.add_listener(lambda state, error: provider_states.append(state))
    customers = [f"c-{i}" for i in range(30)]

    async with running_service(settings, auth=auth) as svc:
        watch = Watch.on(svc)
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[:10]])
        await watch.count(10)

        # a WAF page (403) or the CDN's 503 page in front of the token endpoint, just as the access token expires
        klaviyo_sim.faults = Faults(error_rates={status: 1.0}, html_errors=True, operations=["oauth_token"],
                                    for_s=EPISODE_S)
        klaviyo_sim.state.oauth.expire_access_tokens()
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[10:]])
        await watch.until(lambda: bool(watch.changes))
        out_at, outage = watch.changes[0]
        expected = DestinationState.MISCONFIGURED if status == 403 else DestinationState.DOWN
        assert outage.current is expected
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "needs_reauthorization"}) == 0
        back_at = await watch.state("klaviyo", DestinationState.UP, after=out_at)
        await watch.count(30)
        await assert_everything_committed(svc, "customer-changes")

    refused = [r for r in klaviyo_sim.received("oauth_token") if r.fault]
    print(f"\n[token endpoint {status}] Klaviyo {expected.value} {back_at - out_at:.1f} s; {len(refused)} refreshes "
          f"refused, {refreshes(klaviyo_sim) - len(refused)} succeeded; records {watch.outcomes()}")
    assert provider_states == []  # never needs_reauthorization: nothing for `ipaas-klaviyo authorize` to do
    assert auth.provider.state is AuthorizationState.CONNECTED
    assert refused and refreshes(klaviyo_sim) - len(refused) == 1
    # the 20 records refused with 401 at once made one refresh request; after it, at most one per probe
    probes = sum(1 for r in klaviyo_sim.received("get_profiles") if r.status == 401)
    assert len(refused) <= 1 + probes, (len(refused), probes)
    assert watch.outcomes() == {"succeeded": 30}
    assert set(profiles_by_external_id(klaviyo_sim)) == set(customers)
    records = await error_log(svc)
    assert TOKEN_EXCHANGE_FAILED.code not in {r["code"] for r in records}
    assert sorted(r["code"] for r in records) == sorted([KLAVIYO_CONNECTION_ERROR.code, DESTINATION_RECOVERED.code])
