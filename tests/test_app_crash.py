"""The service killed with SIGKILL in the middle of a bulk event job, then restarted: no order is lost, none is
stored twice.

The service runs as its own process (``python -m consumer.cli run``) against the real broker and the Klaviyo
simulator (in this process). The simulator stores a job's events, then holds its answer back (added latency);
the first service process is killed while it waits for that answer. Those orders were never acknowledged, so
their offsets were never committed: the second process reads them again and sends them again, and Klaviyo's
de-duplication (profile, metric, unique_id) makes that a no-op.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from simulators.httpserver import Reply, Request
from simulators.klaviyo import DEFAULT_API_KEY, Faults, Latency, SimulatorConfig, Spec
from simulators.klaviyo.app import ReceivedRequest, SimulatorApp, SimulatorState
from simulators.scaffold import SimulatorServer
from tests.support.kafka import end_offsets, group_offsets, produce
from tests.support.topic_space import TopicSpace

ROOT = Path(__file__).resolve().parents[1]
ORDERS = 600


class Announcing(SimulatorApp):
    """The simulator, telling the test when a condition on what it stored first holds (checked per request)."""

    def __init__(self, state: SimulatorState) -> None:
        super().__init__(state)
        self.watches: list[tuple[Callable[[], bool], asyncio.Event]] = []

    def watch(self, condition: Callable[[], bool]) -> asyncio.Event:
        event = asyncio.Event()
        self.watches.append((condition, event))
        return event

    def _handle(self, request: Request, received: ReceivedRequest) -> Reply:
        reply = super()._handle(request, received)
        for condition, event in self.watches:
            if not event.is_set() and condition():
                event.set()
        return reply


def _order(n: int) -> tuple[bytes, bytes]:
    lines = [{"sequence_number": i, "sku": f"SKU-{i}", "description": f"Item {i}", "qty": 1, "unit_price": 5,
              "extended_price": 5} for i in (1, 2)]
    after = {"id": f"t-{n}", "transaction_number": f"SO-{n}", "customer_id": None, "total": 10,
             "email_address": f"guest{n}@example.com", "created_datetime": "2026-11-27T10:00:00Z", "lines": lines}
    return f"t-{n}".encode(), orjson.dumps({"schema": {"type": "struct"},
                                            "payload": {"before": None, "after": after, "op": "c", "ts_ms": 1}})


async def _committed(bootstrap: str, group: str, topic: str) -> dict[Any, int]:
    """The group's committed offsets of ``topic``'s partitions."""
    return {tp: offset for tp, offset in (await group_offsets(bootstrap, group)).items() if tp.topic == topic}


def _environment(bootstrap: str, unique: str, prefix: str, base_url: str) -> dict[str, str]:
    own = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_KLAVIYO_")}
    return {
        **own,
        "PYTHONPATH": str(ROOT),
        "IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "IPAAS_KLAVIYO_KAFKA__GROUP_ID": f"crash-{unique}",
        "IPAAS_KLAVIYO_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "IPAAS_KLAVIYO_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "IPAAS_KLAVIYO_TOPIC_PREFIX": prefix,
        "IPAAS_KLAVIYO_RUNTIME__COMMIT_INTERVAL_S": "0.2",
        "IPAAS_KLAVIYO_KLAVIYO__BASE_URL": base_url,
        "IPAAS_KLAVIYO_KLAVIYO__API_KEY": DEFAULT_API_KEY,
        "IPAAS_KLAVIYO_HTTP__PORT": "0",
        "IPAAS_KLAVIYO_LOG_LEVEL": "WARNING",
    }


async def _start(environment: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumer.cli", "run", cwd=ROOT, env=environment,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


def _accepted_events(state: SimulatorState) -> int:
    """Events in the requests the simulator accepted (an event sent twice counts twice)."""
    count = 0
    for request in state.received():
        if request.status == 202 and request.operation == "bulk_create_events":
            count += sum(len(entry["attributes"]["events"]["data"])
                         for entry in request.body["data"]["attributes"]["events-bulk-create"]["data"])
        elif request.status == 202 and request.operation == "create_event":
            count += 1
    return count


async def test_sigkill_in_the_middle_of_a_bulk_job_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str, openapi_spec: Spec
) -> None:
    state = SimulatorState(SimulatorConfig(seed=11))
    state.spec = openapi_spec
    state.faults = Faults(latency=Latency(mean_ms=800))  # a job is stored, then its answer waits 0.8 s
    app = Announcing(state)
    second_job_stored = app.watch(lambda: sum(r.status == 202 for r in state.received("bulk_create_events")) >= 2)
    all_stored = app.watch(lambda: len(state.store.events) >= ORDERS * 3)
    catalog = await topic_space.catalog()  # every topic the service uses, deleted with the module
    topic = catalog.name("transaction-changes")
    await produce(kafka_bootstrap, topic, [_order(n) for n in range(ORDERS)])

    async with SimulatorServer(app, host="127.0.0.1", port=0, max_body=state.config.max_body_bytes) as server:
        environment = _environment(kafka_bootstrap, unique, catalog.prefix, server.base_url)
        first = await _start(environment)
        await asyncio.wait_for(second_job_stored.wait(), 120)
        first.send_signal(signal.SIGKILL)  # the second job is stored; its answer has not left the simulator
        assert await first.wait() == -signal.SIGKILL
        stored_at_kill = {str(e.unique_id) for e in state.store.events}
        assert 0 < len(stored_at_kill) < ORDERS * 3

        second = await _start(environment)
        await asyncio.wait_for(all_stored.wait(), 180)
        # every event is stored, but redelivered orders whose events the first instance's job had stored may still
        # wait for a job of their own (a no-op): a SIGTERM abandons what was never sent, so the second instance
        # handles everything first (its commits are the only sign of it from outside)
        ends = await end_offsets(kafka_bootstrap, topic, catalog.topics["transaction-changes"].partitions)
        async with asyncio.timeout(120):
            while await _committed(kafka_bootstrap, f"crash-{unique}", topic) != ends:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.2)
        second.send_signal(signal.SIGTERM)  # drains and commits
        assert await asyncio.wait_for(second.wait(), 60) == 0

    expected = {uid for n in range(ORDERS) for uid in (f"t-{n}", f"t-{n}:1:SKU-1", f"t-{n}:2:SKU-2")}
    stored: list[Any] = [e.unique_id for e in state.store.events]
    assert sorted(stored) == sorted(expected)  # nothing lost, nothing twice
    assert _accepted_events(state) > len(expected)  # the unacknowledged job's orders were sent again: no-ops
    committed = await group_offsets(kafka_bootstrap, f"crash-{unique}")
    ends = await end_offsets(kafka_bootstrap, topic, catalog.topics["transaction-changes"].partitions)
    assert {tp: offset for tp, offset in committed.items() if tp.topic == topic} == ends
