"""End-to-end order benchmark: the service (in this process) against a real broker and the Klaviyo simulator (a
separate process, Klaviyo's quotas on, 30 ms added latency), with transactions of 3 lines (4 events each).

Usage: ``python bench/e2e_orders.py`` (about 10 minutes; ``--quick`` for a smoke run). Broker:
KAFKA_BOOTSTRAP_SERVERS, else a local KRaft broker started for the run. Prints the numbers and writes them to
bench/results/e2e_orders.json.

* throughput, after: the event batcher (``klaviyo.batch_events = true``, the default): a backlog of guest orders
  is produced first, then the service drains it; after a warm-up, a window of 120 s is measured (at least 70 s,
  so the per-minute quota windows bind; whole minutes, so a burst-then-stall pattern averages out): records/s,
  CPU seconds of this process (the whole service: consumer, flows, batcher, HTTP client) per 1,000 records
  (``resource.getrusage``), the share of 429 answers, the requests per minute of each event endpoint, events per
  job, and what bound the rate;
* throughput, before: the same with ``klaviyo.batch_events = false``, the code path of the service before
  batching (each order's 4 events in a bulk job of their own);
* a trickle of 1 order per second, both ways: end-to-end latency (the record's Kafka timestamp to the handler's
  return) and what batching adds to it, against the linger plus one round trip to the simulator.

Guest orders (named by email) keep the profile endpoints out of it: only the events' path is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer import topics  # noqa: E402
from consumer.app import Service  # noqa: E402
from consumer.klaviyo import ApiKeyAuth, KlaviyoClient  # noqa: E402
from consumer.klaviyo.batching import DirectEvents, EventBatcher  # noqa: E402
from consumer.klaviyo.ratelimits import ENDPOINTS  # noqa: E402
from consumer.observability.metrics import KLAVIYO_REQUESTS  # noqa: E402
from consumer.runtime import InboundMessage  # noqa: E402
from consumer.settings import KlaviyoSettings, Settings  # noqa: E402
from simulators import localkafka  # noqa: E402
from simulators.klaviyo import DEFAULT_API_KEY  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "e2e_orders.json"
LATENCY_MS = 30.0
LINES = 3
BULK_QUOTA = ENDPOINTS["bulk_create_events"].limit
SINGLE_QUOTA = ENDPOINTS["create_event"].limit

# The simulator without request recording of bodies it keeps (a job of 1,000 events is ~1 MB) and without
# OpenAPI body validation (the tests do that): its CPU is Klaviyo's, not ours, and it shares our two cores.
SIMULATOR = """
import asyncio, sys
from simulators.klaviyo import Faults, KlaviyoSimulator, Latency, SimulatorConfig
async def main():
    config = SimulatorConfig(validate_bodies=False, max_recorded_requests=100, seed=1)
    async with KlaviyoSimulator(config) as sim:
        sim.faults = Faults(latency=Latency(mean_ms=float(sys.argv[1])))
        print(sim.base_url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


class Simulator:
    """The Klaviyo simulator as a child process; admin over HTTP."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def __aenter__(self) -> Simulator:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SIMULATOR, str(LATENCY_MS), stdout=asyncio.subprocess.PIPE, cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        self.base_url = (await asyncio.wait_for(self.process.stdout.readline(), 60)).decode().strip()
        self.admin = httpx.AsyncClient(base_url=self.base_url, timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.aclose()
        if self.process is not None:
            self.process.terminate()
            await self.process.wait()

    async def reset(self) -> None:
        (await self.admin.post("/__admin/reset")).raise_for_status()
        faults = {"latency": {"distribution": "fixed", "mean_ms": LATENCY_MS}}
        (await self.admin.put("/__admin/faults", json=faults)).raise_for_status()


def transaction(n: int) -> bytes:
    lines = [{"sequence_number": i, "sku": f"SKU-{i}", "description": f"Item number {i}", "qty": 2,
              "unit_price": 12.5, "extended_price": 25} for i in range(1, LINES + 1)]
    address = {"first_name": "Ada", "last_name": "Lovelace", "address_1": "12 St James's Sq", "city": "London",
               "region": "LND", "country": "GB", "postal_code": "SW1Y 4JH", "is_primary_billing": True,
               "is_primary_shipping": True}
    after = {"id": f"t-{n}", "transaction_number": f"SO-{n}", "customer_id": None, "total": 25 * LINES,
             "email_address": f"guest{n}@example.com", "created_datetime": "2026-11-27T10:00:00Z",
             "discount_amount": 0, "lines": lines, "addresses": [address]}
    return orjson.dumps({"schema": {"type": "struct"},
                         "payload": {"before": None, "after": after, "op": "c", "ts_ms": 1_795_000_000_000}})


async def produce(bootstrap: str, topic: str, numbers: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024,
                                compression_type=None)
    await producer.start()
    try:
        for n in numbers:
            await producer.send(topic, value=transaction(n), key=f"t-{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()


def settings_for(bootstrap: str, base_url: str, *, batch: bool, prefix: str, in_flight: int = 256) -> Settings:
    return Settings.model_validate({
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{prefix}"},
        "runtime": {"max_in_flight": in_flight},
        "klaviyo": {"base_url": base_url, "api_key": DEFAULT_API_KEY, "batch_events": batch},
        "http": {"host": "127.0.0.1", "port": 0},
        "topic_prefix": prefix,
        "log_level": "WARNING",
    })


class Counter:
    """Records the service finished, and their end-to-end latencies (Kafka timestamp to handler return)."""

    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self.latencies_ms: list[float] = []
        self.changed = asyncio.Event()

    def __call__(self, message: InboundMessage, outcome: str) -> None:
        self.count += 1
        if outcome != "succeeded":
            self.failed += 1
        self.latencies_ms.append(time.time() * 1000 - message.timestamp)
        self.changed.set()


@contextlib.asynccontextmanager
async def service_running(settings: Settings, catalog: topics.TopicCatalog,
                          on_finished: Callable[[InboundMessage, str], None]) -> Any:
    """A started service (its runtime reporting each finished record to ``on_finished``); stopped afterwards."""
    service = Service(settings, catalog=catalog)
    task = asyncio.create_task(service.run())
    await asyncio.wait({task, asyncio.create_task(service.started.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert service.runtime is not None
    service.runtime.on_finished(on_finished)
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def running(settings: Settings, catalog: topics.TopicCatalog) -> Any:
    counter = Counter()
    async with service_running(settings, catalog, counter):
        yield counter


def client_requests() -> dict[tuple[str, str], float]:
    """The service's own count of Klaviyo requests, by (endpoint, status)."""
    counts: dict[tuple[str, str], float] = {}
    for metric in KLAVIYO_REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["endpoint"], sample.labels["status"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot (Linux ``/proc/stat``)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


@dataclass
class Throughput:
    mode: str
    in_flight: int
    backlog: int
    warmup_s: float
    window_s: float
    records: int
    records_per_s: float
    cpu_s_per_1000: float
    service_cpu_share: float
    machine_busy_share: float
    requests: int
    throttled_429: int
    share_429_pct: float
    bulk_jobs_per_min: float
    single_events_per_min: float
    events_per_job: float
    failed: int
    backlog_left: int
    binding: str
    notes: dict[str, Any] = field(default_factory=dict)


def binding_resource(result: Throughput) -> str:
    """What held the rate: a quota the service spent (nearly) all of, else the CPU."""
    jobs_share = result.bulk_jobs_per_min / BULK_QUOTA.steady
    if jobs_share >= 0.85 and result.events_per_job >= 800:
        return "Klaviyo's bulk_create_events quota (150 jobs/min), jobs (nearly) full"
    if jobs_share >= 0.85 and result.events_per_job <= LINES + 1.5:
        return "Klaviyo's bulk_create_events quota (150 jobs/min), one order per job"
    if result.service_cpu_share >= 0.85:
        return "CPU: the service's one core (Python runs it on one thread)"
    if result.machine_busy_share >= 0.9:
        return "CPU: the machine's two cores (shared with the broker, the simulator and other jobs)"
    if jobs_share >= 0.85:
        return "Klaviyo's bulk_create_events quota (150 jobs/min), jobs not full"
    return "none clearly (see notes)"


async def throughput(bootstrap: str, sim: Simulator, *, batch: bool, backlog: int, warmup_s: float,
                     window_s: float, in_flight: int) -> Throughput:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    settings = settings_for(bootstrap, sim.base_url, batch=batch, prefix=prefix, in_flight=in_flight)
    catalog = topics.TopicCatalog.load(None, prefix)
    await topics.apply(catalog, settings.kafka)
    print(f"  producing {backlog} orders ...", flush=True)
    await produce(bootstrap, catalog.name("transaction-changes"), range(backlog))
    await sim.reset()
    async with running(settings, catalog) as counter:
        await asyncio.sleep(warmup_s)
        calls0, cpu0, busy0, count0, t0 = client_requests(), cpu_seconds(), machine_busy(), counter.count, \
            time.monotonic()
        await asyncio.sleep(window_s)
        calls1, cpu1, busy1, count1, t1 = client_requests(), cpu_seconds(), machine_busy(), counter.count, \
            time.monotonic()
        failed = counter.failed
    elapsed, records = t1 - t0, count1 - count0
    calls = {key: calls1.get(key, 0.0) - calls0.get(key, 0.0) for key in calls1}

    def sent(endpoint: str, status: str | None = None) -> int:
        return round(sum(n for (e, s), n in calls.items() if e == endpoint and (status is None or s == status)))

    jobs, singles = sent("bulk_create_events", "202"), sent("create_event", "202")
    requests, throttled = round(sum(calls.values())), round(sum(n for (_, s), n in calls.items() if s == "429"))
    busy = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) if busy1[1] > busy0[1] else 0.0
    result = Throughput(
        mode="after: batched across records" if batch else "before: one bulk job per order",
        in_flight=in_flight, backlog=backlog, warmup_s=warmup_s, window_s=round(elapsed, 1), records=records,
        records_per_s=round(records / elapsed, 1),
        cpu_s_per_1000=round((cpu1 - cpu0) / records * 1000, 3) if records else float("nan"),
        service_cpu_share=round((cpu1 - cpu0) / elapsed, 3), machine_busy_share=round(busy, 3),
        requests=requests, throttled_429=throttled,
        share_429_pct=round(100 * throttled / requests, 3) if requests else 0.0,
        bulk_jobs_per_min=round(jobs / elapsed * 60, 1), single_events_per_min=round(singles / elapsed * 60, 1),
        events_per_job=round((records * (LINES + 1) - singles) / max(jobs, 1), 1),
        failed=failed, backlog_left=backlog - count1, binding="",
    )
    result.binding = binding_resource(result)
    if result.backlog_left <= 0:
        result.notes["warning"] = "the backlog ran out before the window ended: raise --backlog"
    return result


@dataclass
class Trickle:
    mode: str
    records: int
    e2e_p50_ms: float
    e2e_p90_ms: float
    e2e_max_ms: float
    submit_p50_ms: float
    submit_p90_ms: float
    submit_max_ms: float


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


@contextlib.contextmanager
def timed_submits(times_ms: list[float]) -> Any:
    """Time every ``submit`` of the event sinks (a record's events handed over until Klaviyo accepted them)."""
    originals = {kind: kind.submit for kind in (EventBatcher, DirectEvents)}

    def timing(original: Any) -> Any:
        async def submit(self: Any, events: Any) -> None:
            started = time.perf_counter()
            await original(self, events)
            times_ms.append((time.perf_counter() - started) * 1000)
        return submit

    for kind, original in originals.items():
        kind.submit = timing(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for kind, original in originals.items():
            kind.submit = original  # type: ignore[method-assign]


async def trickle(bootstrap: str, sim: Simulator, *, batch: bool, seconds: int) -> Trickle:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    settings = settings_for(bootstrap, sim.base_url, batch=batch, prefix=prefix)
    catalog = topics.TopicCatalog.load(None, prefix)
    await topics.apply(catalog, settings.kafka)
    await sim.reset()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    submits: list[float] = []
    try:
        with timed_submits(submits):
            async with running(settings, catalog) as counter:
                await asyncio.sleep(3)  # partitions assigned
                for n in range(seconds):
                    started = time.monotonic()
                    await producer.send_and_wait(catalog.name("transaction-changes"), value=transaction(n),
                                                 key=f"t-{n}".encode())
                    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
                while counter.count < seconds:
                    counter.changed.clear()
                    await asyncio.wait_for(counter.changed.wait(), 30)
                latencies = sorted(counter.latencies_ms[2:])  # the first records meet cold connections
    finally:
        await producer.stop()
    submits = submits[2:]  # the first records meet cold connections
    return Trickle(mode="after: batched" if batch else "before: one request per order", records=len(latencies),
                   e2e_p50_ms=_quantile(latencies, 0.5), e2e_p90_ms=_quantile(latencies, 0.9),
                   e2e_max_ms=round(max(latencies), 1), submit_p50_ms=_quantile(submits, 0.5),
                   submit_p90_ms=_quantile(submits, 0.9), submit_max_ms=round(max(submits), 1))


async def round_trip_ms(base_url: str) -> float:
    """One request to the simulator through the Klaviyo client (its added latency included), median of 20."""
    settings = KlaviyoSettings(base_url=base_url, api_key=DEFAULT_API_KEY, rate_limit=False)
    async with KlaviyoClient(settings, ApiKeyAuth(DEFAULT_API_KEY)) as client:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            await client.probe()
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if not bootstrap:
        broker = localkafka.start()
        bootstrap = broker.bootstrap_servers
    load_before = load_average()
    warmup, window = (5.0, 15.0) if args.quick else (args.warmup, args.window)
    scenarios = set(args.scenarios.split(","))
    results: dict[str, Any] = {
        "command": " ".join(["python", "bench/e2e_orders.py", *sys.argv[1:]]),
        "simulator": {"latency_ms": LATENCY_MS, "quotas": "Klaviyo's (create_event 350/s 3500/min; "
                                                          "bulk_create_events 10/s 150/min)", "body_validation": False},
        "transaction": {"lines": LINES, "events": LINES + 1, "profile": "guest (email)"},
        "quota_ceiling_records_per_s": round((BULK_QUOTA.steady * 1000 + SINGLE_QUOTA.steady) / 60 / (LINES + 1), 1),
        "targets": {"records_per_s": ">= 250, or CPU-bound", "trickle_added_ms": "<= linger + one round trip"},
    }
    try:
        async with Simulator() as sim:
            runs: dict[str, Any] = {}
            if "after" in scenarios:
                print("throughput, after (batched) ...", flush=True)
                after = await throughput(bootstrap, sim, batch=True, backlog=args.backlog // (6 if args.quick else 1),
                                         warmup_s=warmup, window_s=window, in_flight=args.in_flight)
                runs["after"] = asdict(after)
                print(json.dumps(runs["after"], indent=2), flush=True)
            if "before" in scenarios:
                print("throughput, before (one job per order) ...", flush=True)
                before = await throughput(bootstrap, sim, batch=False, backlog=args.before_backlog, warmup_s=warmup,
                                          window_s=window, in_flight=args.in_flight)
                runs["before"] = asdict(before)
                print(json.dumps(runs["before"], indent=2), flush=True)
            if "after" in runs and "before" in runs:
                runs["speedup"] = round(runs["after"]["records_per_s"] / runs["before"]["records_per_s"], 1)
            if runs:
                results["throughput"] = runs
            if "trickle" in scenarios:
                seconds = 10 if args.quick else args.trickle_s
                print("trickle, 1 order/s ...", flush=True)
                batched = await trickle(bootstrap, sim, batch=True, seconds=seconds)
                direct = await trickle(bootstrap, sim, batch=False, seconds=seconds)
                await sim.reset()
                rtt = await round_trip_ms(sim.base_url)
                linger_ms = Settings().klaviyo.event_linger_ms
                results["trickle"] = {
                    "after": asdict(batched), "before": asdict(direct), "linger_ms": linger_ms, "round_trip_ms": rtt,
                    "bound_ms": round(linger_ms + rtt, 1),
                    "added_submit_p50_ms": round(batched.submit_p50_ms - direct.submit_p50_ms, 1),
                    "added_submit_p90_ms": round(batched.submit_p90_ms - direct.submit_p90_ms, 1),
                    "added_e2e_p50_ms": round(batched.e2e_p50_ms - direct.e2e_p50_ms, 1),
                }
    finally:
        if broker is not None:
            localkafka.stop(broker)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_before": load_before, "load_average_after": load_average()}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (the quota windows don't bind)")
    parser.add_argument("--backlog", type=int, default=90_000, help="orders queued for the batched run")
    parser.add_argument("--before-backlog", type=int, default=2_000, help="orders queued for the unbatched run")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=120.0,
                        help="measured seconds (>= 70 so the minute binds; whole minutes average its pattern)")
    parser.add_argument("--trickle-s", type=int, default=60, help="seconds (= orders) of the 1 order/s trickle")
    parser.add_argument("--in-flight", type=int, default=256, help="runtime.max_in_flight of the throughput runs")
    parser.add_argument("--scenarios", default="after,before,trickle", help="which of after,before,trickle to run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if not arguments.quick:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
