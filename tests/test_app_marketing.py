"""Marketing consent and list membership through the whole service: Kafka → runtime → the FROM flows → the Klaviyo
simulator (request bodies validated against Klaviyo's contract)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig, Spec
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace


@pytest.fixture
async def klaviyo_sim(openapi_spec: Spec) -> AsyncIterator[KlaviyoSimulator]:
    sim = KlaviyoSimulator(SimulatorConfig(seed=11))
    sim.state.spec = openapi_spec
    async with sim:
        yield sim


def _settings(topic_space: TopicSpace, unique: str, sim: KlaviyoSimulator, **klaviyo: Any) -> Any:
    return service_settings(topic_space, unique, runtime={"retry_attempts": 2},
                            klaviyo={"base_url": sim.base_url, "api_key": DEFAULT_API_KEY, "max_retries": 1,
                                     **klaviyo})


def _customer(cid: str, *, consent: str, **fields: Any) -> bytes:
    custom = [{"name": "SubscribeProfile", "value": consent}, {"name": "LIST_VIP", "value": "true"}]
    return orjson.dumps({"id": cid, "first_name": "Ada", "last_name": "Lovelace", "email_address": f"{cid}@example.com",
                         "custom_fields": custom, **fields})


UPDATED = [("scope", b"customer/updated")]


async def test_consent_and_lists_through_the_broker_and_no_resubscription_after_an_unsubscribe(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
) -> None:
    store = klaviyo_sim.state.store
    newsletter, vip = store.create_list("Newsletter"), store.create_list("VIP")
    given = [(b"c-1", _customer("c-1", consent="true"), [("scope", b"customer/created")])]
    async with running_service(_settings(topic_space, unique, klaviyo_sim, consent_list_id=newsletter.id)) as svc:
        await svc.send("customer-changes", given)
        await svc.wait_finished(1)
        await svc.send("customer-changes", given)  # redelivered
        await svc.wait_finished(2)
        (profile,) = store.profiles.values()
        assert profile.email_consent == "SUBSCRIBED"
        assert newsletter.members == {profile.id} and vip.members == {profile.id}

        profile.email_consent = "UNSUBSCRIBED"  # the person unsubscribes from an email
        profile.consent_timestamp = store.now()
        await svc.send("customer-changes", [(b"c-1", _customer("c-1", consent="true", last_name="King"), UPDATED)])
        finished = await svc.wait_finished(3)

    assert [outcome for _, outcome in finished] == ["succeeded"] * 3
    assert profile.attributes["last_name"] == "King"
    assert profile.email_consent == "UNSUBSCRIBED"
    assert len(klaviyo_sim.received("bulk_subscribe_profiles")) == 1
    assert len(klaviyo_sim.received("add_profiles_to_list")) == 1
    assert vip.members == {profile.id}


async def test_without_a_consent_list_the_service_warns_at_start_and_sends_no_consent(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="consumer.app")
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        created = [(b"c-2", _customer("c-2", consent="true"), [("scope", b"customer/created")])]
        await svc.send("customer-changes", created)
        finished = await svc.wait_finished(1)

    assert [outcome for _, outcome in finished] == ["succeeded"]
    assert any("klaviyo.consent_list_id is not set" in r.getMessage() for r in caplog.records)
    (profile,) = klaviyo_sim.state.store.profiles.values()
    assert profile.email_consent == "NEVER_SUBSCRIBED"
    assert klaviyo_sim.received("bulk_subscribe_profiles") == []
