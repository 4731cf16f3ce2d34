"""Something between the service and Klaviyo answers for it for a few seconds (a captive portal's HTML page with
200, a redirect to an ``http://`` URL): none of it counts as Klaviyo's answer. Nothing is committed that Klaviyo
did not take, nothing is dead-lettered, and every change reaches Klaviyo once the episode is over."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from consumer.catalog import DESTINATION_RECOVERED, KLAVIYO_CONNECTION_ERROR
from consumer.destinations import DestinationState
from simulators.klaviyo import Faults, KlaviyoSimulator
from tests.support.kafka import group_offsets
from tests.support.service import running_service

from .conftest import (
    Watch,
    assert_everything_committed,
    customer_change,
    error_log,
    event_ids,
    expected_events,
    profiles_by_external_id,
    settings_for,
    transaction_change,
)

pytestmark = pytest.mark.kafka

EPISODE_S = 3.0
WRITES = ["create_profile", "update_profile", "create_or_update_profile", "create_event", "bulk_create_events"]
FAULTS: dict[str, dict[str, Any]] = {
    "captive portal (200 HTML)": {"captive_portal": True},
    "301 to http://": {"redirect_to": "http://a.klaviyo.com"},
    # the probe (a read) passes while the records' writes are answered by the portal: the destination relapses
    "captive portal on the writes only": {"captive_portal": True, "operations": WRITES},
}


@pytest.mark.parametrize("answer", list(FAULTS))
async def test_answers_that_are_not_klaviyos_commit_nothing_and_everything_arrives_after(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, answer: str
) -> None:
    customers = [f"c-{i}" for i in range(30)]
    orders = [f"t-{i}" for i in range(10)]
    sent: dict[tuple[str, int], tuple[int, int]] = {}  # (customer, version) → (partition, offset) of its change

    async with running_service(settings_for(kafka_bootstrap, unique, klaviyo_sim)) as svc:
        watch = Watch.on(svc)
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[:10]])
        await watch.count(10)

        klaviyo_sim.faults = Faults(**FAULTS[answer], for_s=EPISODE_S)
        for version, batch in ((0, customers[10:]), (1, customers[:20]), (2, customers[:5])):
            changes = [customer_change(c, version) for c in batch]
            for (partition, offset), cid in zip(await svc.send("customer-changes", changes), batch, strict=True):
                sent[(cid, version)] = (partition, offset)
        await svc.send("transaction-changes", [transaction_change(t, customers[i]) for i, t in enumerate(orders)])
        out_at = await watch.state("klaviyo", DestinationState.MISCONFIGURED)

        # while it lasts, every committed change is one Klaviyo holds: none was taken for delivered
        committed = await group_offsets(kafka_bootstrap, svc.settings.kafka.group_id)
        topic = svc.topic("customer-changes")
        held = profiles_by_external_id(klaviyo_sim)
        for (cid, version), (partition, offset) in sent.items():
            if offset < committed.get(TopicPartition(topic, partition), 0):
                assert int(held[cid]["last_name"][1:]) >= version, (cid, version)
        assert klaviyo_sim.store.events == []

        back_at = await watch.state("klaviyo", DestinationState.UP, after=out_at)
        await watch.count(10 + len(sent) + len(orders))
        await assert_everything_committed(svc, "customer-changes", "transaction-changes")

    intercepted = [r for r in klaviyo_sim.received() if r.fault]
    print(f"\n[{answer}] Klaviyo misconfigured (first back {back_at - out_at:.1f} s later, "
          f"{len(watch.states('klaviyo')) // 2 - 1} relapses); {len(intercepted)} requests "
          f"intercepted; records {watch.outcomes()}")
    assert intercepted and all(r.fault in ("captive_portal", "redirect") for r in intercepted)
    assert watch.outcomes() == {"succeeded": 10 + len(sent) + len(orders)}  # nothing dead-lettered
    states = watch.states("klaviyo")
    assert set(states) == {DestinationState.MISCONFIGURED, DestinationState.UP} and states[-1] is DestinationState.UP
    if "operations" not in FAULTS[answer]:
        assert states == [DestinationState.MISCONFIGURED, DestinationState.UP]
    last = {cid: max(v for c, v in sent if c == cid) for cid, _ in sent}
    assert {cid: attrs["last_name"] for cid, attrs in profiles_by_external_id(klaviyo_sim).items()} == {
        cid: f"v{last.get(cid, 0)}" for cid in customers}
    assert event_ids(klaviyo_sim) == expected_events(orders)

    records: list[dict[str, Any]] = await error_log(svc)  # one episode, however often it relapsed
    assert sorted(r["code"] for r in records) == sorted([KLAVIYO_CONNECTION_ERROR.code, DESTINATION_RECOVERED.code])
    [outage] = [r for r in records if r["code"] == KLAVIYO_CONNECTION_ERROR.code]
    assert "Klaviyo misconfigured since" in outage["message"]
