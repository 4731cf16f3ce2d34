"""A snapshot, then its orders: ``--customers`` new customers (a Debezium snapshot) go through the service, then
``--orders`` transactions of 3 lines, each of one of those customers (named by ``customer_id``: the order flow
finds the profile by external_id), against a real broker and the Klaviyo simulator (a separate process, Klaviyo's
quotas on, 30 ms added latency, bulk import jobs queued 1 s and imported at 1,000 profiles/s: an assumption).

Usage: ``python bench/e2e_snapshot.py`` (100,000 + 100,000: about 10 minutes). The service (defaults, in this
process) starts on an empty group; the snapshot is produced first and drained; then the orders are produced and
drained. Printed and written to bench/results/e2e_snapshot.json: each phase's wall time (from its first record
produced to its last record finished), records/s, CPU seconds per 1,000, requests per endpoint, 429 share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e_customers import Simulator, customer  # noqa: E402
from bench.e2e_orders import LINES, client_requests, cpu_seconds, load_average, service_running  # noqa: E402
from consumer import topics  # noqa: E402
from consumer.runtime import InboundMessage  # noqa: E402
from consumer.settings import Settings  # noqa: E402
from simulators import localkafka  # noqa: E402
from simulators.klaviyo import DEFAULT_API_KEY  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "e2e_snapshot.json"


def transaction(n: int, customers: int) -> bytes:
    c = n % customers
    lines = [{"sequence_number": i, "sku": f"SKU-{i}", "description": f"Item number {i}", "qty": 2,
              "unit_price": 12.5, "extended_price": 25} for i in range(1, LINES + 1)]
    after = {"id": f"t-{n}", "transaction_number": f"SO-{n}", "customer_id": f"c-{c}", "total": 25 * LINES,
             "email_address": f"c{c}@example.com", "created_datetime": "2026-11-27T10:00:00Z",
             "discount_amount": 0, "lines": lines}
    return orjson.dumps({"schema": {"type": "struct"},
                         "payload": {"before": None, "after": after, "op": "c", "ts_ms": 1_795_000_000_000}})


async def produce(bootstrap: str, topic: str, values: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


class Finished:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.failed = 0
        self.changed = asyncio.Event()

    def __call__(self, message: InboundMessage, outcome: str) -> None:
        self.count[message.topic] = self.count.get(message.topic, 0) + 1
        if outcome != "succeeded":
            self.failed += 1
        self.changed.set()

    async def wait(self, topic: str, count: int) -> None:
        while self.count.get(topic, 0) < count:
            self.changed.clear()
            await self.changed.wait()


async def phase(name: str, bootstrap: str, topic: str, values: Any, count: int, finished: Finished) -> dict[str, Any]:
    print(f"{name}: producing and draining {count} records ...", flush=True)
    calls0, cpu0, t0 = client_requests(), cpu_seconds(), time.monotonic()
    await produce(bootstrap, topic, values)
    produced = time.monotonic() - t0
    await finished.wait(topic, count)
    elapsed = time.monotonic() - t0
    calls1, cpu1 = client_requests(), cpu_seconds()
    calls = {f"{e} {s}": round(n - calls0.get((e, s), 0.0)) for (e, s), n in calls1.items()
             if n - calls0.get((e, s), 0.0) > 0}
    requests = sum(calls.values())
    throttled = sum(n for key, n in calls.items() if key.endswith(" 429"))
    result = {"records": count, "wall_s": round(elapsed, 1), "producing_s": round(produced, 1),
              "records_per_s": round(count / elapsed, 1), "cpu_s_per_1000": round((cpu1 - cpu0) / count * 1000, 3),
              "requests": calls, "share_429_pct": round(100 * throttled / requests, 3) if requests else 0.0}
    print(json.dumps(result), flush=True)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or localkafka.start().bootstrap_servers
    results: dict[str, Any] = {"command": " ".join(["python", "bench/e2e_snapshot.py", *sys.argv[1:]]),
                               "load_average_start": load_average(),
                               "simulator": {"latency_ms": 30.0, "quotas": "Klaviyo's",
                                             "import_job": "queued 1 s, then 1,000 profiles/s (an assumption)"}}
    async with Simulator(1.0, 1000.0) as sim:
        await sim.reset()
        prefix = f"s{uuid.uuid4().hex[:8]}."
        settings = Settings.model_validate({
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{prefix}"},
            "klaviyo": {"base_url": sim.base_url, "api_key": DEFAULT_API_KEY},
            "http": {"host": "127.0.0.1", "port": 0}, "topic_prefix": prefix, "log_level": "WARNING",
        })
        catalog = topics.TopicCatalog.load(None, prefix)
        await topics.apply(catalog, settings.kafka)
        finished = Finished()
        async with service_running(settings, catalog, finished) as service:
            await asyncio.wait_for(service.runtime.assigned.wait(), 60)
            started = time.monotonic()
            results["snapshot"] = await phase(
                "snapshot", bootstrap, catalog.name("customer-changes"),
                ((f"c-{n}".encode(), customer(n)) for n in range(args.customers)), args.customers, finished)
            results["orders"] = await phase(
                "orders", bootstrap, catalog.name("transaction-changes"),
                ((f"t-{n}".encode(), transaction(n, args.customers)) for n in range(args.orders)), args.orders,
                finished)
        results["total_wall_s"] = round(time.monotonic() - started, 1)
        results["failed"] = finished.failed
    results["load_average_end"] = load_average()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=100_000)
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
