"""End-to-end customer benchmark: the service (in this process) against a real broker and the Klaviyo simulator (a
separate process, Klaviyo's quotas on, 30 ms added latency, bulk import jobs that take time), with a backlog of new
customers (a Debezium snapshot).

Usage: ``python bench/e2e_customers.py`` (about 5 minutes; ``--quick`` for a smoke run). Broker:
KAFKA_BOOTSTRAP_SERVERS, else a local KRaft broker started for the run. Prints the numbers and writes them to
bench/results/e2e_customers.json.

* after: the profile importer (``klaviyo.bulk_profiles = true``, the default): a backlog of new customers is
  produced first, then the service drains it; after a warm-up, a window of 120 s is measured (at least 70 s, so
  the per-minute quota windows bind; whole minutes, so a burst-then-stall pattern averages out): records/s, CPU
  seconds of this process (the whole service: consumer, flow, mapping, importer, HTTP client) per 1,000 records
  (``resource.getrusage``), the requests per minute of each Klaviyo endpoint, the share of 429 answers, profiles
  per job, how long a job took from its post to its outcome, and what bound the rate;
* before: the same with ``--label before``, which sets ``klaviyo.bulk_profiles = false``: the code path of the
  service before the importer (one ``POST /api/profiles`` per new customer).

Klaviyo documents no processing time for a bulk import job; the simulator queues a job ``--job-queued-s`` (1 s)
and then imports ``--job-profiles-per-s`` (1,000) profiles a second: an assumption, reported with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e_orders import (  # noqa: E402
    LATENCY_MS,
    client_requests,
    cpu_seconds,
    load_average,
    machine_busy,
    running,
)
from bench.e2e_orders import Simulator as OrdersSimulator  # noqa: E402
from consumer import topics  # noqa: E402
from consumer.klaviyo.importing import ProfileImporter  # noqa: E402
from consumer.klaviyo.ratelimits import ENDPOINTS  # noqa: E402
from consumer.settings import Settings  # noqa: E402
from simulators import localkafka  # noqa: E402
from simulators.klaviyo import DEFAULT_API_KEY  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "e2e_customers.json"
SINGLE = ENDPOINTS["create_profile"].limit
JOBS = ENDPOINTS["bulk_import_profiles"].limit
POLLS = ENDPOINTS["get_bulk_import_profiles_job"].limit
LOOKUPS = ENDPOINTS["get_profiles"].limit
ENDPOINT_NAMES = ("create_profile", "get_profiles", "get_profile", "update_profile", "bulk_import_profiles",
                  "get_bulk_import_profiles_job", "get_errors_for_bulk_import_profiles_job")

# The simulator without recording the bodies it keeps and without OpenAPI body validation (the tests do that): its
# CPU is Klaviyo's, not ours, and it shares our two cores. Jobs move with time, at the pace given.
SIMULATOR = """
import asyncio, sys
from simulators.klaviyo import Faults, KlaviyoSimulator, Latency, SimulatorConfig
from simulators.klaviyo.store import ImportPace
async def main():
    pace = ImportPace(queued_s=float(sys.argv[2]), profiles_per_s=float(sys.argv[3]))
    config = SimulatorConfig(validate_bodies=False, max_recorded_requests=100, seed=1, import_pace=pace)
    async with KlaviyoSimulator(config) as sim:
        sim.faults = Faults(latency=Latency(mean_ms=float(sys.argv[1])))
        print(sim.base_url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


class Simulator(OrdersSimulator):
    """The Klaviyo simulator as a child process, bulk import jobs at ``pace`` (queued seconds, profiles/s)."""

    def __init__(self, queued_s: float, profiles_per_s: float) -> None:
        super().__init__()
        self.pace = (queued_s, profiles_per_s)

    async def __aenter__(self) -> Simulator:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SIMULATOR, str(LATENCY_MS), *map(str, self.pace), stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        self.base_url = (await asyncio.wait_for(self.process.stdout.readline(), 60)).decode().strip()
        import httpx

        self.admin = httpx.AsyncClient(base_url=self.base_url, timeout=30)
        return self


def customer(n: int) -> bytes:
    """A new customer as a Debezium snapshot read (``op: r``): name, email, phone, company, a billing address."""
    address = {"first_name": "Ada", "last_name": "Lovelace", "address_1": "12 St James's Sq", "city": "London",
               "region": "LND", "country": "GB", "postal_code": "SW1Y 4JH", "is_primary_billing": True}
    after = {"id": f"c-{n}", "first_name": "Ada", "last_name": f"Lovelace {n}", "email_address": f"c{n}@example.com",
             "phone_number": f"+1 (555) {200 + n // 10_000 % 800:03d}-{n % 10_000:04d}", "company": "Engines Ltd",
             "addresses": [address]}
    return orjson.dumps({"schema": {"type": "struct"},
                         "payload": {"before": None, "after": after, "op": "r", "ts_ms": 1_795_000_000_000}})


async def produce(bootstrap: str, topic: str, numbers: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024,
                                compression_type=None)
    await producer.start()
    try:
        for n in numbers:
            await producer.send(topic, value=customer(n), key=f"c-{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()


def settings_for(bootstrap: str, base_url: str, *, bulk: bool, prefix: str, in_flight: int) -> Settings:
    return Settings.model_validate({
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{prefix}"},
        "runtime": {"max_in_flight": in_flight},
        "klaviyo": {"base_url": base_url, "api_key": DEFAULT_API_KEY, "bulk_profiles": bulk},
        "http": {"host": "127.0.0.1", "port": 0},
        "topic_prefix": prefix,
        "log_level": "WARNING",
    })


class JobTimes:
    """Each job's rows and the seconds from its post to its records' outcome (the importer's ``_send``, wrapped)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[float, int, float]] = []  # (ended at, rows, seconds)
        self._original = ProfileImporter._send

    def __enter__(self) -> JobTimes:
        original, jobs = self._original, self.jobs

        async def timed(importer: ProfileImporter, members: Any) -> None:
            started = time.monotonic()
            await original(importer, members)
            jobs.append((time.monotonic(), len(members), time.monotonic() - started))

        ProfileImporter._send = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        ProfileImporter._send = self._original  # type: ignore[method-assign]

    def between(self, start: float, end: float) -> list[tuple[float, int, float]]:
        return [job for job in self.jobs if start <= job[0] < end]


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
    requests_per_min: dict[str, float]
    profiles_per_job: float
    job_seconds_mean: float
    failed: int
    backlog_left: int
    binding: str
    notes: dict[str, Any] = field(default_factory=dict)


def binding_resource(result: Throughput) -> str:
    """What held the rate: a quota the service spent (nearly) all of, else the CPU, else the records in flight."""
    per_min = result.requests_per_min
    for name, limit, what in (("create_profile", SINGLE, "Klaviyo's create_profile quota (750/min), one per customer"),
                              ("bulk_import_profiles", JOBS, "Klaviyo's bulk import job quota (150/min)"),
                              ("get_bulk_import_profiles_job", POLLS, "Klaviyo's job-status quota (150/min)"),
                              ("get_profiles", LOOKUPS, "Klaviyo's get_profiles quota (750/min), the lookups")):
        if per_min.get(name, 0.0) >= 0.85 * limit.steady:
            return what
    if result.service_cpu_share >= 0.85:
        return "CPU: the service's one core (Python runs it on one thread)"
    if result.machine_busy_share >= 0.9:
        return "CPU: the machine's two cores (shared with the broker, the simulator and other jobs)"
    if result.profiles_per_job:
        return (f"records in flight: runtime.max_in_flight ({result.in_flight}) customers wait for their job, "
                f"{result.job_seconds_mean} s from post to outcome")
    return "none clearly (see notes)"


async def throughput(bootstrap: str, sim: Simulator, *, bulk: bool, backlog: int, warmup_s: float, window_s: float,
                     in_flight: int) -> Throughput:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    settings = settings_for(bootstrap, sim.base_url, bulk=bulk, prefix=prefix, in_flight=in_flight)
    catalog = topics.TopicCatalog.load(None, prefix)
    await topics.apply(catalog, settings.kafka)
    print(f"  producing {backlog} customers ...", flush=True)
    await produce(bootstrap, catalog.name("customer-changes"), range(backlog))
    await sim.reset()
    with JobTimes() as job_times:
        async with running(settings, catalog) as counter:
            await asyncio.sleep(warmup_s)
            calls0, cpu0, busy0, count0, t0 = client_requests(), cpu_seconds(), machine_busy(), counter.count, \
                time.monotonic()
            await asyncio.sleep(window_s)
            calls1, cpu1, busy1, count1, t1 = client_requests(), cpu_seconds(), machine_busy(), counter.count, \
                time.monotonic()
            failed = counter.failed
        jobs = job_times.between(t0, t1)
    elapsed, records = t1 - t0, count1 - count0
    calls = {key: calls1.get(key, 0.0) - calls0.get(key, 0.0) for key in calls1}

    def sent(endpoint: str) -> float:
        return sum(n for (e, _), n in calls.items() if e == endpoint)

    requests, throttled = round(sum(calls.values())), round(sum(n for (_, s), n in calls.items() if s == "429"))
    busy = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) if busy1[1] > busy0[1] else 0.0
    rows = sum(size for _, size, _ in jobs)
    result = Throughput(
        mode="after: bulk import jobs under a backlog" if bulk else "before: one request per customer",
        in_flight=in_flight, backlog=backlog, warmup_s=warmup_s, window_s=round(elapsed, 1), records=records,
        records_per_s=round(records / elapsed, 1),
        cpu_s_per_1000=round((cpu1 - cpu0) / records * 1000, 3) if records else float("nan"),
        service_cpu_share=round((cpu1 - cpu0) / elapsed, 3), machine_busy_share=round(busy, 3),
        requests=requests, throttled_429=throttled,
        share_429_pct=round(100 * throttled / requests, 3) if requests else 0.0,
        requests_per_min={name: round(sent(name) / elapsed * 60, 1) for name in ENDPOINT_NAMES if sent(name)},
        profiles_per_job=round(rows / len(jobs), 1) if jobs else 0.0,
        job_seconds_mean=round(sum(s for _, _, s in jobs) / len(jobs), 2) if jobs else 0.0,
        failed=failed, backlog_left=backlog - count1, binding="",
    )
    result.binding = binding_resource(result)
    if result.backlog_left <= 0:
        result.notes["warning"] = "the backlog ran out before the window ended: raise --backlog"
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if not bootstrap:
        broker = localkafka.start()
        bootstrap = broker.bootstrap_servers
    load_before = load_average()
    warmup, window = (5.0, 15.0) if args.quick else (args.warmup, args.window)
    results: dict[str, Any] = {
        "command": " ".join(["python", "bench/e2e_customers.py", *sys.argv[1:]]),
        "simulator": {"latency_ms": LATENCY_MS, "body_validation": False,
                      "quotas": "Klaviyo's (create_profile, get_profiles 75/s 750/min; bulk_import_profiles, "
                                "get_bulk_import_profiles_job, get_errors_for_bulk_import_profiles_job 10/s 150/min "
                                "each)",
                      "import_job": {"queued_s": args.job_queued_s, "profiles_per_s": args.job_profiles_per_s,
                                     "note": "an assumption: Klaviyo documents no processing time"}},
        "customer": "new (no profile in Klaviyo): name, email, phone, company, billing address",
        "per_record_ceiling_records_per_s": round(SINGLE.steady / 60, 1),
        "targets": {"records_per_s": f">= {round(20 * SINGLE.steady / 60)} (20x one request each), or CPU-bound"},
    }
    try:
        async with Simulator(args.job_queued_s, args.job_profiles_per_s) as sim:
            bulk = args.label != "before"
            backlog = args.backlog if bulk else args.before_backlog
            print(f"throughput, {args.label} ...", flush=True)
            run = await throughput(bootstrap, sim, bulk=bulk, backlog=backlog // (6 if args.quick else 1),
                                   warmup_s=warmup, window_s=window, in_flight=args.in_flight)
            results["label"] = args.label
            results["throughput"] = asdict(run)
            print(json.dumps(results["throughput"], indent=2), flush=True)
    finally:
        if broker is not None:
            localkafka.stop(broker)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_before": load_before, "load_average_after": load_average()}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", choices=("after", "before"), default="after",
                        help="after: the profile importer; before: klaviyo.bulk_profiles = false")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (the quota windows don't bind)")
    parser.add_argument("--backlog", type=int, default=90_000, help="customers queued for the bulk run")
    parser.add_argument("--before-backlog", type=int, default=3_000, help="customers queued for the 'before' run")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=120.0,
                        help="measured seconds (>= 70 so the minute binds; whole minutes average its pattern)")
    parser.add_argument("--in-flight", type=int, default=256, help="runtime.max_in_flight")
    parser.add_argument("--job-queued-s", type=float, default=1.0, help="simulator: seconds a job waits queued")
    parser.add_argument("--job-profiles-per-s", type=float, default=1000.0, help="simulator: profiles a job "
                                                                                   "imports a second")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the results (default bench/results/e2e_customers[_<label>].json)")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if not arguments.quick:
        output = arguments.output or (RESULTS if arguments.label == "after"
                                      else RESULTS.with_name(f"e2e_customers_{arguments.label}.json"))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
