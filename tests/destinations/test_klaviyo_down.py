"""Klaviyo down for a few seconds (refusing connections, or answering 503): the outage is written to the error log
once and its end once, nothing is dead-lettered, and consumption resumes by itself once Klaviyo answers."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from consumer.catalog import DESTINATION_RECOVERED, KLAVIYO_CONNECTION_ERROR
from consumer.destinations import DestinationState
from simulators.klaviyo import Faults, KlaviyoSimulator
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

OUTAGE_S = 3.0
IN_FLIGHT = 4


def failed_record_calls() -> float:
    """Klaviyo calls the records made that failed (503 or unreachable); the probe's (``get_profiles``) aside."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "ipaas_klaviyo_klaviyo_requests":
            total += sum(sample.value for sample in metric.samples if sample.name.endswith("_total")
                         and sample.labels["endpoint"] != "get_profiles"
                         and sample.labels["status"] in ("error", "503"))
    return total


@pytest.mark.parametrize("outage", ["connection refused", "503"])
async def test_a_klaviyo_outage_is_logged_once_and_consumption_resumes_by_itself(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    customers = [f"c-{i}" for i in range(30)]
    orders = [f"t-{i}" for i in range(10)]
    settings = settings_for(kafka_bootstrap, unique, klaviyo_sim, runtime={"max_in_flight": IN_FLIGHT})
    async with running_service(settings) as svc:
        watch = Watch.on(svc)
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[:10]])
        await watch.count(10)
        caplog.clear()  # what the outage logs from here (start-up's configuration warnings aside)

        refused_before = failed_record_calls()
        if outage == "503":
            klaviyo_sim.faults = Faults(error_rates={503: 1.0}, for_s=OUTAGE_S)
        else:
            await klaviyo_sim.refuse_connections(for_s=OUTAGE_S)
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers[10:]])
        await svc.send("customer-changes", [customer_change(c, 1) for c in customers[:10]])
        await svc.send("transaction-changes", [transaction_change(t, customers[i]) for i, t in enumerate(orders)])
        out_at = await watch.state("klaviyo", DestinationState.DOWN)
        back_at = await watch.state("klaviyo", DestinationState.UP, after=out_at)
        refused = failed_record_calls() - refused_before
        await watch.count(50)
        answering_since = klaviyo_sim.faults.ends_at if outage == "503" else klaviyo_sim.accepting_since
        assert answering_since is not None
        runtime = svc.service.runtime
        assert runtime is not None and runtime.health.destinations is None and not runtime.health.paused
        await assert_everything_committed(svc, "customer-changes", "transaction-changes")

    resumed_at = watch.first_finished_after(back_at)
    assert resumed_at is not None
    print(f"\n[{outage}] Klaviyo out {back_at - out_at:.1f} s; back (probe) {back_at - answering_since:.2f} s and "
          f"first record {resumed_at - answering_since:.2f} s after it answered again; "
          f"records {watch.outcomes()}")
    assert watch.outcomes() == {"succeeded": 50}
    # once Klaviyo was known to be out only the probes went to it: the requests in flight then failed (each tried
    # twice): the handlers' own (at most IN_FLIGHT) and the event batcher's one dispatch of the orders' 30 events
    # (queued while their orders waited, holding no worker); the other records waited untried
    assert 1 <= refused <= (IN_FLIGHT + 3 * len(orders)) * 2, refused
    # the outage is logged as the destination's two changes and its error-log record, not a line per failed call
    loud = [(r.name, r.getMessage()) for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("consumer.")]
    assert [name for name, _ in loud] == ["consumer.destinations", "consumer.errorlog", "consumer.destinations"], loud
    assert loud[0][1] == "destination unavailable; sources that need it are paused"
    assert loud[1][1].startswith(KLAVIYO_CONNECTION_ERROR.message + " (Klaviyo down since")
    assert loud[2][1] == "destination available again"
    profiles = profiles_by_external_id(klaviyo_sim)
    assert {cid: profiles[cid]["last_name"] for cid in customers} == {
        cid: ("v1" if i < 10 else "v0") for i, cid in enumerate(customers)}
    assert event_ids(klaviyo_sim) == expected_events(orders)

    records = await error_log(svc)
    outages = [r for r in records if r["code"] == KLAVIYO_CONNECTION_ERROR.code]
    recoveries = [r for r in records if r["code"] == DESTINATION_RECOVERED.code]
    assert len(outages) == 1 and len(recoveries) == 1, [r["code"] for r in records]
    assert len(records) == 2  # nothing else: no record failed
    [down], [up] = outages, recoveries
    assert down["message"].startswith(KLAVIYO_CONNECTION_ERROR.message + " (Klaviyo down since ")
    assert down["transfer"] is None and down["dead_lettered"] is False and down["severity"] == "error"
    assert up["message"].startswith(DESTINATION_RECOVERED.message) and up["severity"] == "info"
    assert "records waited" in up["detail"]
