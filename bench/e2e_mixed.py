"""Fairness and scale-out, end to end: the service (in this process) against a real broker and the Klaviyo
simulator (a separate process, Klaviyo's quotas on, 30 ms added latency). Orders are those of
``bench/e2e_orders.py`` (guest transactions of 3 lines, 4 events each).

Usage: ``python bench/e2e_mixed.py`` (about 8 minutes; ``--scenarios fairness`` or ``instances`` for one). Broker:
KAFKA_BOOTSTRAP_SERVERS, else a local KRaft broker started for the run. Prints the numbers and writes them to
bench/results/e2e_mixed[_<label>].json (``--label before`` when run from an older checkout).

* fairness: a backlog of orders drains (the event quota binds) while new customers arrive, 4 a second, on the
  customer topic; after a warm-up, ``--window`` seconds are measured: each customer's latency (its Kafka
  timestamp to the handler's return) p50/p99/max, and the orders/s meanwhile. Target: p99 <= 2 s.
* instances: the same order backlog drained by one instance, then by three instances of one consumer group (in
  this process: one core between them, as the one instance had); records/s of the group, and the share of 429
  answers. Target: three instances >= 0.9x one instance, 429 share < 1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import e2e_orders as orders  # noqa: E402

from consumer import topics  # noqa: E402
from consumer.runtime import InboundMessage  # noqa: E402
from consumer.settings import Settings  # noqa: E402
from simulators import localkafka  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CUSTOMERS_PER_S = 4.0


def customer(n: int, tag: str) -> bytes:
    after = {"id": f"c-{tag}-{n}", "first_name": "Ada", "last_name": f"Lovelace {n}",
             "email_address": f"ada.{tag}.{n}@example.com", "company": "Analytical Engines"}
    return orjson.dumps({"before": None, "after": after, "op": "c", "ts_ms": int(time.time() * 1000),
                         "source": {"connector": "postgresql", "name": "platform", "ts_ms": int(time.time() * 1000)}})


class Finished:
    """Finished records by topic, with the end-to-end latency of each (Kafka timestamp to handler return)."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.latencies_ms: dict[str, list[float]] = {}
        self.failed = 0
        self.changed = asyncio.Event()

    def __call__(self, message: InboundMessage, outcome: str) -> None:
        self.changed.set()
        self.count[message.topic] = self.count.get(message.topic, 0) + 1
        self.latencies_ms.setdefault(message.topic, []).append(time.time() * 1000 - message.timestamp)
        if outcome != "succeeded":
            self.failed += 1


@contextlib.asynccontextmanager
async def services(settings: Settings, catalog: topics.TopicCatalog, instances: int) -> Any:
    """``instances`` services of one consumer group, each reporting to one ``Finished``."""
    finished = Finished()
    async with contextlib.AsyncExitStack() as stack:
        running = [await stack.enter_async_context(orders.service_running(settings, catalog, finished))
                   for _ in range(instances)]
        yield finished, running


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1) if ordered else float("nan")


async def fairness(bootstrap: str, sim: orders.Simulator, *, backlog: int, warmup_s: float,
                   window_s: float) -> dict[str, Any]:
    prefix = f"m{uuid.uuid4().hex[:8]}."
    settings = orders.settings_for(bootstrap, sim.base_url, batch=True, prefix=prefix)
    catalog = topics.TopicCatalog.load(None, prefix)
    await topics.apply(catalog, settings.kafka)
    order_topic, customer_topic = catalog.name("transaction-changes"), catalog.name("customer-changes")
    print(f"  producing {backlog} orders ...", flush=True)
    await orders.produce(bootstrap, order_topic, range(backlog))
    await sim.reset()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        async with services(settings, catalog, 1) as (finished, _):
            await asyncio.sleep(warmup_s)
            orders0, t0 = finished.count.get(order_topic, 0), time.monotonic()
            sent, tag = 0, uuid.uuid4().hex[:6]
            while time.monotonic() - t0 < window_s:
                await producer.send_and_wait(customer_topic, value=customer(sent, tag), key=f"c-{tag}-{sent}".encode())
                sent += 1
                await asyncio.sleep(max(0.0, t0 + sent / CUSTOMERS_PER_S - time.monotonic()))
            orders1, t1 = finished.count.get(order_topic, 0), time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    while finished.count.get(customer_topic, 0) < sent:
                        finished.changed.clear()
                        await finished.changed.wait()
            latencies = finished.latencies_ms.get(customer_topic, [])
            failed = finished.failed
    finally:
        await producer.stop()
    return {
        "backlog": backlog, "window_s": round(t1 - t0, 1), "customers_sent": sent,
        "customers_finished": len(latencies), "failed": failed,
        "customer_p50_ms": quantile(latencies, 0.5), "customer_p99_ms": quantile(latencies, 0.99),
        "customer_max_ms": round(max(latencies), 1) if latencies else float("nan"),
        "orders_per_s_meanwhile": round((orders1 - orders0) / (t1 - t0), 1),
        "orders_left": backlog - orders1,
    }


async def instances(bootstrap: str, sim: orders.Simulator, *, count: int, backlog: int, warmup_s: float,
                    window_s: float) -> dict[str, Any]:
    prefix = f"i{uuid.uuid4().hex[:8]}."
    settings = orders.settings_for(bootstrap, sim.base_url, batch=True, prefix=prefix)
    catalog = topics.TopicCatalog.load(None, prefix)
    await topics.apply(catalog, settings.kafka)
    order_topic = catalog.name("transaction-changes")
    print(f"  producing {backlog} orders for {count} instance(s) ...", flush=True)
    await orders.produce(bootstrap, order_topic, range(backlog))
    await sim.reset()
    async with services(settings, catalog, count) as (finished, running):
        await asyncio.sleep(warmup_s)
        calls0, cpu0, n0, t0 = orders.client_requests(), orders.cpu_seconds(), finished.count.get(order_topic, 0), \
            time.monotonic()
        await asyncio.sleep(window_s)
        calls1, cpu1, n1, t1 = orders.client_requests(), orders.cpu_seconds(), finished.count.get(order_topic, 0), \
            time.monotonic()
        shares = [round(service.runtime.share, 3) for service in running if service.runtime is not None]
    calls = {key: calls1.get(key, 0.0) - calls0.get(key, 0.0) for key in calls1}
    requests = round(sum(calls.values()))
    throttled = round(sum(n for (_, status), n in calls.items() if status == "429"))
    jobs = round(sum(n for (e, s), n in calls.items() if e == "bulk_create_events" and s == "202"))
    elapsed = t1 - t0
    return {
        "instances": count, "quota_shares": shares, "backlog": backlog, "window_s": round(elapsed, 1),
        "records": n1 - n0, "records_per_s": round((n1 - n0) / elapsed, 1),
        "cpu_s_per_1000": round((cpu1 - cpu0) / max(n1 - n0, 1) * 1000, 3),
        "requests": requests, "throttled_429": throttled,
        "share_429_pct": round(100 * throttled / requests, 3) if requests else 0.0,
        "bulk_jobs_per_min": round(jobs / elapsed * 60, 1), "failed": finished.failed,
        "backlog_left": backlog - n1,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        bootstrap = localkafka.start().bootstrap_servers
    scenarios = set(args.scenarios.split(","))
    results: dict[str, Any] = {
        "command": " ".join(["python", "bench/e2e_mixed.py", *sys.argv[1:]]), "label": args.label,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_start": orders.load_average()},
        "simulator": {"latency_ms": orders.LATENCY_MS, "quotas": "Klaviyo's", "body_validation": False},
        "targets": {"customer_p99_ms": "<= 2000 while an order backlog drains",
                    "three_instances": ">= 0.9x one instance, 429 share < 1 %"},
    }
    async with orders.Simulator() as sim:
        if "fairness" in scenarios:
            print("fairness: customers while an order backlog drains ...", flush=True)
            results["fairness"] = await fairness(bootstrap, sim, backlog=args.backlog, warmup_s=args.warmup,
                                                 window_s=args.window)
            print(json.dumps(results["fairness"]), flush=True)
        if "instances" in scenarios:
            for count in (1, 3):
                print(f"instances: {count} ...", flush=True)
                results[f"instances_{count}"] = await instances(bootstrap, sim, count=count, backlog=args.backlog,
                                                                warmup_s=args.warmup, window_s=args.window)
                print(json.dumps(results[f"instances_{count}"]), flush=True)
            one, three = results["instances_1"]["records_per_s"], results["instances_3"]["records_per_s"]
            results["three_over_one"] = round(three / one, 3) if one else float("nan")
    results["machine"]["load_average_end"] = orders.load_average()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="fairness,instances")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=90.0)
    parser.add_argument("--label", default="after")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=2))
    suffix = "" if arguments.label == "after" else f"_{arguments.label}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"e2e_mixed{suffix}.json").write_text(json.dumps(outcome, indent=2) + "\n")
