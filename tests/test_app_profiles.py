"""A backlog of customers through the whole service: Kafka → runtime → the Add Profile flow → the profile importer →
Klaviyo's bulk import jobs (the simulator, request bodies validated against Klaviyo's contract).

Each customer Klaviyo's import refuses is dead-lettered alone, with its catalog entry and Klaviyo's detail; the
others are imported once (a redelivery writes the same profiles); an existing profile with the email is linked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer import catalog
from consumer.failures import headers as dl
from consumer.klaviyo.ratelimits import EndpointLimit
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig, Spec
from tests.support.kafka import group_offsets
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace

# A mapping that sends the phone number as the source has it: only Klaviyo's import can refuse a bad one.
RAW_PHONE_MAPPING = """
flow: add_profile_from_ipaas
fields:
  email: {path: email_address, transforms: [trim]}
  first_name: {path: first_name, transforms: [trim]}
  last_name: {path: last_name, transforms: [trim]}
  phone_number: {path: phone_number, transforms: [trim]}
  external_id: {path: id, transforms: [text], required: true}
"""
BAD_PHONES = {7: "12345", 23: "call me", 41: "+1 555"}
COUNT = 60


@pytest.fixture
async def klaviyo_sim(openapi_spec: Spec) -> AsyncIterator[KlaviyoSimulator]:
    sim = KlaviyoSimulator(SimulatorConfig(seed=13))
    sim.state.spec = openapi_spec
    async with sim:
        yield sim


def _settings(topic_space: TopicSpace, unique: str, sim: KlaviyoSimulator, mapping_dir: Path) -> Any:
    return service_settings(topic_space, unique, runtime={"retry_attempts": 2}, mapping_dir=str(mapping_dir),
                            klaviyo={"base_url": sim.base_url, "api_key": DEFAULT_API_KEY, "max_retries": 1})


def _created(n: int) -> tuple[bytes, bytes]:
    after = {"id": f"c-{n}", "first_name": "Ada", "last_name": f"Lovelace {n}", "email_address": f"c{n}@example.com",
             "phone_number": BAD_PHONES.get(n, f"+1555234{n:04d}")}
    value = {"schema": {"type": "struct"}, "payload": {"before": None, "after": after, "op": "r", "ts_ms": 1}}
    return f"c-{n}".encode(), orjson.dumps(value)


async def test_a_backlog_of_customers_goes_in_bulk_and_each_refused_one_is_dead_lettered_alone(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator, tmp_path: Path
) -> None:
    (tmp_path / "add_profile_from_ipaas.yaml").write_text(RAW_PHONE_MAPPING)
    store = klaviyo_sim.state.store
    existing = store.create_profile({"email": "c12@example.com", "first_name": "Known"})  # signed up in Klaviyo
    snapshot = [_created(n) for n in range(COUNT)]  # a Debezium snapshot: op "r"
    async with running_service(_settings(topic_space, unique, klaviyo_sim, tmp_path)) as svc:
        await svc.send("customer-changes", snapshot)
        finished = await svc.wait_finished(COUNT, timeout_s=120)
        letters = await svc.dead_letters("customer-changes", expected=len(BAD_PHONES))
        errors = await svc.error_log(expected=len(BAD_PHONES))
        first = {r.attributes["external_id"]: r.id for r in store.profiles.values()}
        jobs = [r for r in klaviyo_sim.received("bulk_import_profiles") if r.status == 202]
        await svc.send("customer-changes", snapshot)  # redelivered, as after a crash before the commit
        again = await svc.wait_finished(2 * COUNT, timeout_s=120)

    bad = {f"c-{n}".encode() for n in BAD_PHONES}
    outcomes = {message.key: outcome for message, outcome in finished}
    assert {key for key, outcome in outcomes.items() if outcome == "dead_lettered"} == bad
    assert sum(outcome == "succeeded" for outcome in outcomes.values()) == COUNT - len(BAD_PHONES)
    assert sorted(letter.key for letter in letters) == sorted(bad)
    entry = catalog.PROFILE_COULD_NOT_BE_CREATED
    for letter in letters:
        headers = dl.decoded_headers(letter.headers)
        assert (headers[dl.ERROR_CODE], headers[dl.FLOW]) == (entry.code, catalog.Flow.ADD_PROFILE_FROM_IPAAS.slug)
    assert {e["transfer"]["id"] for e in errors} == {key.decode() for key in bad}
    for record in errors:
        assert (record["code"], record["message"], record["severity"]) == (entry.code, entry.message, "error")
        assert record["dead_lettered"] is True
        assert "field 'phone_number'" in record["detail"] and "Invalid phone number format" in record["detail"]

    good = {f"c-{n}" for n in range(COUNT) if n not in BAD_PHONES}
    assert set(first) == good and len(store.profiles) == len(good)  # one profile each, none for the refused
    assert first["c-12"] == existing.id  # the existing profile with the email, linked
    rows = [row["attributes"]["external_id"]
            for job in jobs for row in job.body["data"]["attributes"]["profiles"]["data"]]
    assert sorted(rows) == sorted(f"c-{n}" for n in range(COUNT))  # each customer in a job once
    assert len(jobs) < 10 and klaviyo_sim.received("create_profile") == []
    # the redelivery: the same three refused again, the same profiles written again (updated by id)
    assert sum(outcome == "succeeded" for _, outcome in again[COUNT:]) == COUNT - len(BAD_PHONES)
    assert {r.attributes["external_id"]: r.id for r in store.profiles.values()} == first


async def test_a_sparse_change_takes_the_per_record_path(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator, tmp_path: Path
) -> None:
    async with running_service(_settings(topic_space, unique, klaviyo_sim, tmp_path)) as svc:
        await svc.send("customer-changes", [_created(1)])
        finished = await svc.wait_finished(1)

    assert [outcome for _, outcome in finished] == ["succeeded"]
    assert [r.operation for r in klaviyo_sim.received()] == ["create_profile"]  # one request, no job, no lookup
    (profile,) = klaviyo_sim.state.store.profiles.values()
    assert profile.attributes["external_id"] == "c-1"


async def test_a_stop_while_customers_wait_for_klaviyos_quota_is_prompt_and_commits_only_what_was_sent(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator, tmp_path: Path
):
    klaviyo_sim.state.config.with_limits({"create_profile": EndpointLimit(2, 2)})  # 2 a minute: the quota binds
    settings = service_settings(
        topic_space, unique, runtime={"drain_timeout_s": 3600},  # only abandoning unsent work makes the stop prompt
        klaviyo={"base_url": klaviyo_sim.base_url, "api_key": DEFAULT_API_KEY, "bulk_profiles": False,
                 "max_retries": 10})
    async with running_service(settings) as svc:
        await svc.send("customer-changes", [_created(n) for n in range(100, 112)])
        await svc.wait_finished(2)
        async with asyncio.timeout(30):  # Klaviyo said to wait (429, Retry-After): the rest wait in the limiter
            # the simulator notifies nothing: a condition polled under a deadline
            while not any(r.status == 429 for r in klaviyo_sim.received("create_profile")):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    # leaving the block stopped the service within running_service's 60 s guard: not the 3600 s drain deadline

    assert len(svc.finished) == 2 and {outcome for _, outcome in svc.finished} == {"succeeded"}
    assert len(klaviyo_sim.state.store.profiles) == 2  # the waiting ones were never sent
    committed = await group_offsets(settings.kafka.bootstrap_servers, settings.kafka.group_id)
    finished = {(m.partition, m.offset) for m, _ in svc.finished}
    for tp, position in committed.items():
        # a commit covers finished records only: everything below the position of each partition finished
        assert all((tp.partition, offset) in finished for offset in range(position))
