"""Coalesced profile lookups against the simulator: concurrent lookups share requests, one alone goes at once."""

from __future__ import annotations

import asyncio

import pytest

from consumer.klaviyo import KlaviyoRejected
from simulators.klaviyo import Faults, KlaviyoSimulator
from tests.klaviyo.conftest import MakeClient


async def test_one_lookup_alone_is_one_exact_request(simulator: KlaviyoSimulator, make_client: MakeClient) -> None:
    simulator.state.store.create_profile({"email": "c1@example.com", "external_id": "C1"})
    client = make_client()
    found = await client.find_profile_by_external_id("C1")
    assert found is not None and found.attributes.external_id == "C1"
    assert [r.query["filter"] for r in simulator.received("get_profiles")] == ['equals(external_id,"C1")']


async def test_concurrent_lookups_share_requests_and_each_gets_its_own_answer(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    for n in range(0, 300, 2):  # every other customer exists in Klaviyo
        simulator.state.store.create_profile({"email": f"c{n}@example.com", "external_id": f"C{n}"})
    client = make_client()
    found = await asyncio.gather(*(client.find_profile_by_external_id(f"C{n}") for n in range(300)))

    for n, profile in enumerate(found):
        if n % 2:
            assert profile is None
        else:
            assert profile is not None and profile.attributes.external_id == f"C{n}"
    requests = simulator.received("get_profiles")
    assert len(requests) <= 8  # 300 lookups: one request alone, then batches of up to 100 (4 at once)
    assert sum(r.query["filter"].count('"C') for r in requests) == 300


async def test_a_failed_shared_request_fails_each_lookup_it_carried(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    simulator.faults = Faults(fail_next=[400] * 8, operations=["get_profiles"])
    client = make_client(max_retries=0)
    results = await asyncio.gather(*(client.find_profile_by_external_id(f"C{n}") for n in range(50)),
                                   return_exceptions=True)
    assert all(isinstance(result, KlaviyoRejected) for result in results)
    assert len({id(result) for result in results}) == 50  # each caller has its own copy


async def test_a_cancelled_lookup_leaves_the_others_answered(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    simulator.state.store.create_profile({"email": "c2@example.com", "external_id": "C2"})
    client = make_client()
    first = asyncio.create_task(client.find_profile_by_external_id("C1"))
    second = asyncio.create_task(client.find_profile_by_external_id("C2"))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    found = await second
    assert found is not None and found.attributes.external_id == "C2"
