"""iPaaS.com out (its API token refused, or down): only the Klaviyo-profile topic, whose flows write to iPaaS.com,
pauses; customers and the orders of customers Klaviyo knows keep flowing to Klaviyo; an order whose customer must be
read from iPaaS.com first waits, untried, and goes through with the profiles once iPaaS.com is back."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.destinations import DestinationState
from simulators.ipaas import Faults, IpaasSimulator
from simulators.klaviyo import KlaviyoSimulator
from tests.support.service import running_service

from .conftest import (
    Watch,
    assert_everything_committed,
    customer_change,
    event_ids,
    expected_events,
    gauge,
    klaviyo_profile_change,
    profiles_by_external_id,
    settings_for,
    transaction_change,
)

pytestmark = pytest.mark.kafka

OUT: dict[str, tuple[dict[str, Any], DestinationState]] = {
    "401": ({"unauthorized": True}, DestinationState.UNAUTHORIZED),
    "down (503)": ({"error_rates": {503: 1.0}}, DestinationState.DOWN),
}


def received(topic: str) -> float:
    """Records the runtime fetched from ``topic``."""
    return gauge("ipaas_klaviyo_events_received_total", {"topic": topic}) or 0.0


@pytest.mark.parametrize("out", list(OUT))
async def test_with_ipaas_out_only_the_klaviyo_profile_topic_pauses(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, ipaas_sim: IpaasSimulator, out: str
) -> None:
    faults, state = OUT[out]
    profiles = [(f"01PROFILE{i:04d}", f"profile-{i}@shop.test") for i in range(10)]
    customers = [f"c-{i}" for i in range(40)]
    orders = [f"t-{i}" for i in range(20)]
    settings = settings_for(kafka_bootstrap, unique, klaviyo_sim, ipaas=ipaas_sim)
    ipaas_sim.seed_customer(customer_id="c-platform", first_name="Plat", last_name="Form",
                            email_address="platform@shop.test")  # on the platform, not yet in Klaviyo
    async with running_service(settings) as svc:
        watch = Watch.on(svc)
        runtime = svc.service.runtime
        assert runtime is not None
        profile_topic = svc.topic("klaviyo-profile-changes")

        ipaas_sim.faults = Faults(**faults)  # until cleared
        await svc.send("klaviyo-profile-changes", [klaviyo_profile_change(*p) for p in profiles[:5]])
        out_at = await watch.state("ipaas", state)
        assert runtime.health.destinations == {"ipaas": state.value}
        assert gauge("ipaas_klaviyo_destination_state", {"destination": "ipaas", "state": state.value}) == 1
        assert gauge("ipaas_klaviyo_authorization_state", {"state": "connected"}) == 1  # Klaviyo's is fine

        fetched = received(profile_topic)
        await svc.send("klaviyo-profile-changes", [klaviyo_profile_change(*p) for p in profiles[5:]])
        await svc.send("customer-changes", [customer_change(c, 0) for c in customers])
        await watch.count(len(customers))
        await svc.send("transaction-changes", [transaction_change("t-platform", "c-platform")])
        await svc.send("transaction-changes", [transaction_change(t, customers[i]) for i, t in enumerate(orders)])
        await watch.count(len(customers) + len(orders))  # Klaviyo's flows go on while iPaaS.com is out
        assert {m.topic for _, m, _ in watch.finished} == {svc.topic("customer-changes"),
                                                            svc.topic("transaction-changes")}
        assert b"t-platform" not in {m.key for _, m, _ in watch.finished}  # it waits for its customer's read
        assert received(profile_topic) == fetched  # the profile topic is paused: the new ones were not fetched
        assert [c["id"] for c in ipaas_sim.store.snapshot()["customers"]] == ["c-platform"]
        await assert_everything_committed(svc, "customer-changes")

        ipaas_sim.faults = Faults()
        await watch.state("ipaas", DestinationState.UP, after=out_at)
        await watch.count(len(customers) + len(orders) + len(profiles) + 1)
        await assert_everything_committed(svc, "klaviyo-profile-changes", "transaction-changes")

    print(f"\n[iPaaS.com {out}] records {watch.outcomes()}")
    assert watch.outcomes() == {"succeeded": len(customers) + len(orders) + len(profiles) + 1}
    platform = profiles_by_external_id(klaviyo_sim)["c-platform"]  # made from the platform's Customer
    assert (platform["first_name"], platform["last_name"], platform["email"]) == ("Plat", "Form",
                                                                                "platform@shop.test")
    assert ("Placed Order", "t-platform") in event_ids(klaviyo_sim)
    assert watch.states("ipaas") == [state, DestinationState.UP] and watch.states("klaviyo") == []
    assert set(profiles_by_external_id(klaviyo_sim)) >= set(customers)
    assert event_ids(klaviyo_sim) == expected_events([*orders, "t-platform"])
    emails = sorted(c["email_address"] for c in ipaas_sim.store.snapshot()["customers"])
    assert emails == sorted([*(email for _, email in profiles), "platform@shop.test"])
