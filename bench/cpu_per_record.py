"""CPU per record of the flows: from a record's bytes, through the dispatcher and the flow, to the encoded request
bodies (and, over HTTP, through the Klaviyo and iPaaS.com clients to the simulators' answers).

Usage::

    python bench/cpu_per_record.py                       # this checkout, both modes, prints the figures
    python bench/cpu_per_record.py --compare /tmp/before # before (that checkout) and now, interleaved, best of 3;
                                                         # writes bench/results/cpu_per_record.json

Scenarios (CPU seconds of this process per 1,000 records, user + system, ``resource.getrusage``):

* ``customer_new_debezium``: Debezium change events (JsonConverter with schemas, op ``c``) of new customers, with
  a billing address and custom fields: decode, Add Profile mapping and checks, ``POST /api/profiles``;
* ``customer_new_hook``: iPaaS.com hook notifications of new customers: decode, fetch the Customer and its
  addresses from iPaaS.com, then as above;
* ``customer_update``: Debezium op ``u`` of those customers (the link cache knows their profiles, the steady
  state): Update Profile mapping and checks, ``PATCH /api/profiles/{id}``;
* ``order_3_lines``: guest transactions of 3 lines (Debezium, op ``c``): the order flow's mapping and checks,
  4 events each through the event batcher into bulk jobs.

Modes:

* ``flow``: the flows alone, against in-process ports that do what the measured checkout's clients do around the
  HTTP exchange (write the request body as its client writes it, read a canned answer of the simulator's shape as
  its client reads it), and the real ``EventBatcher`` over a fake ``send_event_job`` that builds the job body;
* ``http``: the real ``KlaviyoClient`` (and ``IpaasClient`` for the hooks) against the simulators in a child
  process, with Klaviyo's limits off (the simulator's and the client's), no added latency, no body validation
  (the simulator's CPU is not ours; it shares the cores though).

Records are handled 64 at a time (``--concurrency``) by the real ``Dispatcher`` (as the runtime's workers call it),
after a warm-up of 200 records. Each measurement runs in a fresh child process (``--once``), so before and after
load their own code: ``--code DIR`` puts DIR first on ``sys.path``. ``--once --profile FILE`` profiles the measured
part (cProfile; with ``--sample``, the stack every 0.5 ms of CPU, as text).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "cpu_per_record.json"
SCENARIOS = ("customer_new_debezium", "customer_new_hook", "customer_update", "order_3_lines")
MODES = ("flow", "http")
WARMUP = 200


def _code_path(argv: Sequence[str]) -> None:
    """``--code DIR``: the checkout whose ``consumer`` package is measured (before anything imports it)."""
    code = str(ROOT)
    for position, arg in enumerate(argv):
        if arg == "--code" and position + 1 < len(argv):
            code = argv[position + 1]
        elif arg.startswith("--code="):
            code = arg.split("=", 1)[1]
    sys.path.insert(0, code)
    if code != str(ROOT):
        sys.path.append(str(ROOT))  # the simulators (dev tooling) come from this checkout for both


# --------------------------------------------------------------------------------------------------- records
_PHONE_BLOCKS = {"warm": 2, "run": 3, "warmhook": 4, "hook": 5}


def _phone(n: int, tag: str) -> str:
    """A North American number of its own for every customer (Klaviyo keeps phone numbers unique too)."""
    return f"({_PHONE_BLOCKS[tag]}12) {200 + n // 10_000}-{n % 10_000:04d}"


def _customer_row(n: int, tag: str) -> dict[str, Any]:
    address = {"id": f"a-{tag}-{n}", "first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines",
               "address_1": "12 St James's Sq", "address_2": "Floor 2", "city": "London", "region": "LND",
               "country": "GB", "postal_code": "SW1Y 4JH", "phone_number": "+442071234567",
               "is_primary_billing": True, "is_primary_shipping": True}
    custom = [{"name": "LoyaltyTier", "value": "gold"}, {"name": "Source", "value": "web"}]
    return {"id": f"c-{tag}-{n}", "customer_number": f"CN-{n}", "first_name": " Ada ", "last_name": "Lovelace",
            "email_address": f"ada.{tag}.{n}@example.com", "company": "Analytical Engines",
            "phone_number": _phone(n, tag), "category_id": "7", "created_datetime": 1_795_000_000_123_456,
            "updated_datetime": "2026-11-27T10:00:00Z", "custom_fields": json.dumps(custom),
            "addresses": json.dumps([address])}


_CUSTOMER_SCHEMA = {
    "type": "struct", "name": "ipaas.public.customer.Envelope", "optional": False,
    "fields": [
        {"field": side, "type": "struct", "optional": True, "name": "ipaas.public.customer.Value", "fields": [
            {"field": "id", "type": "string", "optional": False},
            {"field": "customer_number", "type": "string", "optional": True},
            {"field": "first_name", "type": "string", "optional": True},
            {"field": "last_name", "type": "string", "optional": True},
            {"field": "email_address", "type": "string", "optional": True},
            {"field": "company", "type": "string", "optional": True},
            {"field": "phone_number", "type": "string", "optional": True},
            {"field": "category_id", "type": "string", "optional": True},
            {"field": "created_datetime", "type": "int64", "optional": True,
             "name": "io.debezium.time.MicroTimestamp", "version": 1},
            {"field": "updated_datetime", "type": "string", "optional": True,
             "name": "io.debezium.time.ZonedTimestamp", "version": 1},
            {"field": "custom_fields", "type": "string", "optional": True, "name": "io.debezium.data.Json"},
            {"field": "addresses", "type": "string", "optional": True, "name": "io.debezium.data.Json"},
        ]} for side in ("before", "after")
    ] + [
        {"field": "source", "type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source",
         "fields": []},
        {"field": "op", "type": "string", "optional": False},
        {"field": "ts_ms", "type": "int64", "optional": True},
    ],
}


def _source(n: int, table: str) -> dict[str, Any]:
    return {"version": "2.7.0.Final", "connector": "postgresql", "name": "ipaas", "ts_ms": 1_795_000_000_000,
            "snapshot": "false", "db": "ipaas", "schema": "public", "table": table, "txId": 555 + n,
            "lsn": 24_023_928 + n, "xmin": None}


def debezium_customer(n: int, tag: str, *, update: bool = False) -> bytes:
    import orjson

    after = _customer_row(n, tag)
    before = None
    if update:
        before = dict(after)
        after = {**after, "last_name": "Byron", "updated_datetime": "2026-11-28T10:00:00Z"}
    payload = {"before": before, "after": after, "source": _source(n, "customer"), "op": "u" if update else "c",
               "ts_ms": 1_795_000_000_456, "transaction": None}
    return orjson.dumps({"schema": _CUSTOMER_SCHEMA, "payload": payload})


def hook_notification(customer_id: str, n: int) -> bytes:
    import orjson

    return orjson.dumps({"id": f"b5f0c8e2-{n}", "attempt": 1, "notifications": [
        {"action": 1, "id": customer_id, "destination": "42", "scope": "customer/created", "type": 8,
         "tracking_guid": "0d7c5a3e-2222-4444-8888-aaaabbbbcccc"}]})


def transaction(n: int, tag: str, lines: int = 3) -> bytes:
    import orjson

    rows = [{"sequence_number": i, "sku": f"SKU-{i}", "description": f"Item number {i}", "qty": 2,
             "unit_price": 12.5, "extended_price": 25} for i in range(1, lines + 1)]
    address = {"first_name": "Ada", "last_name": "Lovelace", "address_1": "12 St James's Sq", "city": "London",
               "region": "LND", "country": "GB", "postal_code": "SW1Y 4JH", "is_primary_billing": True,
               "is_primary_shipping": True}
    after = {"id": f"t-{tag}-{n}", "transaction_number": f"SO-{n}", "customer_id": None, "total": 25 * lines,
             "email_address": f"guest.{tag}.{n}@example.com", "created_datetime": "2026-11-27T10:00:00Z",
             "discount_amount": 0, "lines": rows, "addresses": [address]}
    return orjson.dumps({"schema": {"type": "struct"}, "payload": {
        "before": None, "after": after, "source": _source(n, "transaction"), "op": "c", "ts_ms": 1_795_000_000_000}})


def ipaas_customer(n: int, tag: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Customer as iPaaS.com stores it, and its addresses (for the hook scenario)."""
    row = _customer_row(n, tag)
    addresses = json.loads(row.pop("addresses"))
    row["custom_fields"] = json.loads(row["custom_fields"])
    row.pop("created_datetime")
    for address in addresses:
        address.pop("id")
    return row, addresses


# --------------------------------------------------------------------------------------------- in-process ports
_PROFILE_ANSWER = (
    b'{"data":{"type":"profile","id":"@ID@","attributes":{"email":"ada@example.com","phone_number":"+12122000001",'
    b'"external_id":"c-1","anonymous_id":null,"first_name":"Ada","last_name":"Lovelace","organization":"Analytical '
    b'Engines","locale":null,"title":null,"image":null,"location":{"address1":"12 St James\'s Sq","address2":"Floor 2",'
    b'"city":"London","region":"LND","country":"GB","zip":"SW1Y 4JH"},"properties":{},'
    b'"created":"2026-11-27T10:00:00+00:00","updated":"2026-11-27T10:00:00+00:00","last_event_date":null},'
    b'"relationships":{"lists":{"links":{"self":"https://a.klaviyo.com/api/profiles/@ID@/relationships/lists/",'
    b'"related":"https://a.klaviyo.com/api/profiles/@ID@/lists/"}},"segments":{"links":{"self":'
    b'"https://a.klaviyo.com/api/profiles/@ID@/relationships/segments/","related":'
    b'"https://a.klaviyo.com/api/profiles/@ID@/segments/"}}},"links":{"self":"https://a.klaviyo.com/api/profiles/@ID@/"}}}'
)
"""Klaviyo's answer to a profile write (the simulator's shape), with ``@ID@`` for the profile id."""


def _client_bodies() -> tuple[Callable[..., bytes], Callable[[Any], bytes]]:
    """How the measured checkout's ``KlaviyoClient`` writes profile and event bodies."""
    from consumer.klaviyo import models

    if hasattr(models, "profile_body"):
        return models.profile_body, models.event_body

    def profile_body(attributes: Any, *, profile_id: str | None = None, patch_properties: Any = None) -> bytes:
        if profile_id is None:
            return models.ProfileCreateQuery.build(attributes).to_json()
        return models.ProfilePartialUpdateQuery.build(profile_id, attributes, patch_properties).to_json()

    return profile_body, lambda event: models.EventCreateQuery.build(event).to_json()


class FakeKlaviyo:
    """``KlaviyoPort`` and the batcher's ``EventsApi`` in process: every request body is written as the measured
    checkout's ``KlaviyoClient`` writes it, every answer is a canned document of the simulator's shape read as the
    client reads it (decoded once to accept it, once to read it, the profile validated)."""

    def __init__(self) -> None:
        from consumer.klaviyo.ratelimits import ENDPOINTS

        self._limits = {name: endpoint.limit for name, endpoint in ENDPOINTS.items()}
        self._profile_body, self._event_body = _client_bodies()
        self._next = 0
        self.requests = 0
        self.body_bytes = 0

    rate_limited = False

    def endpoint_limit(self, endpoint_class: str) -> Any:
        return self._limits[endpoint_class]

    def admission_delay(self, endpoint_class: str) -> float:
        return 0.0

    def _sent(self, body: bytes) -> None:
        self.requests += 1
        self.body_bytes += len(body)

    @staticmethod
    def _answer(profile_id: str) -> Any:
        import orjson

        from consumer.klaviyo.models import Profile

        answer = _PROFILE_ANSWER.replace(b"@ID@", profile_id.encode())
        orjson.loads(answer)  # the sender's check that the body is the documented JSON:API document
        return Profile.model_validate(orjson.loads(answer)["data"])

    async def create_profile(self, attributes: Any) -> Any:
        self._sent(self._profile_body(attributes))
        self._next += 1
        return self._answer(f"01FAKE{self._next:020d}")

    async def update_profile(self, profile_id: str, attributes: Any, *, patch_properties: Any = None) -> Any:
        self._sent(self._profile_body(attributes, profile_id=profile_id, patch_properties=patch_properties))
        return self._answer(profile_id)

    async def find_profile_by_external_id(self, external_id: str) -> Any:
        self.requests += 1
        return None

    async def find_profile_by_email(self, email: str) -> Any:
        self.requests += 1
        return None

    async def send_event_job(self, events: Sequence[Any]) -> None:
        from consumer.klaviyo.models import bulk_job_body

        self._sent(bulk_job_body(events))

    async def create_event(self, event: Any) -> None:
        self._sent(self._event_body(event))


class FakeIpaas:
    """``IpaasPort.fetch_record`` in process: the Customer and its addresses decoded from canned iPaaS.com answers
    as the client decodes them."""

    def __init__(self) -> None:
        self.customers: dict[str, tuple[bytes, bytes]] = {}

    def add(self, customer_id: str, row: dict[str, Any], addresses: list[dict[str, Any]]) -> None:
        import orjson

        rendered = {**row, "id": customer_id, "created_datetime": "2026-11-27T10:00:00Z"}
        self.customers[customer_id] = (orjson.dumps(rendered), orjson.dumps(
            [{**address, "id": f"{customer_id}-{i}", "customer_id": customer_id}
             for i, address in enumerate(addresses)]))

    async def fetch_record(self, kind: str, record_id: str) -> Any:
        import orjson

        from consumer.records import Customer, CustomerAddress

        customer_bytes, address_bytes = self.customers[record_id]
        customer = Customer.model_validate(orjson.loads(customer_bytes))
        addresses = [CustomerAddress.model_validate(item) for item in orjson.loads(address_bytes)]
        return customer.model_copy(update={"addresses": addresses}) if addresses else customer


# ------------------------------------------------------------------------------------------------- simulators
SIMULATORS = """
import asyncio
from simulators.ipaas import IpaasSimulator
from simulators.klaviyo import KlaviyoSimulator, SimulatorConfig
async def main():
    config = SimulatorConfig(validate_bodies=False, rate_limits_enabled=False, max_recorded_requests=100, seed=1)
    async with KlaviyoSimulator(config) as klaviyo, IpaasSimulator() as ipaas:
        print(klaviyo.base_url, ipaas.base_url, ipaas.token, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def simulators() -> AsyncIterator[tuple[str, str, str]]:
    """The Klaviyo and iPaaS.com simulators in a child process (their CPU is not this process's)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIMULATORS, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().split()
        yield line[0], line[1], line[2]
    finally:
        process.terminate()
        await process.wait()


# ---------------------------------------------------------------------------------------------------- running
async def drive(dispatcher: Callable[[Any], Any], messages: Iterator[Any], concurrency: int) -> int:
    """Hand the messages to the dispatcher, ``concurrency`` at a time; returns how many were handled."""
    handled = 0

    async def worker() -> None:
        nonlocal handled
        for message in messages:
            await dispatcher(message)
            handled += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return handled


async def run_mode(mode: str, records: int, concurrency: int, scenarios: Sequence[str],
                   profiler: Any = None) -> dict[str, Any]:
    import httpx

    from consumer.flows.context import FlowContext
    from consumer.klaviyo.batching import EventBatcher
    from consumer.mapping import load_collections
    from consumer.routing import Dispatcher, RoutingTable, default_sources
    from consumer.runtime.messages import Message
    from consumer.topics import TopicCatalog

    catalog = TopicCatalog.load(None, "bench.")
    table = RoutingTable(default_sources(), catalog)
    customers, transactions = catalog.name("customer-changes"), catalog.name("transaction-changes")
    results: dict[str, Any] = {}

    async def warnings(error: Any, transfer: Any) -> None:
        raise AssertionError(f"unexpected warning {error.code}")

    async with contextlib.AsyncExitStack() as stack:
        admin_ipaas: httpx.AsyncClient | None = None
        fake_ipaas: FakeIpaas | None = None
        if mode == "http":
            from consumer.ipaas import IpaasClient
            from consumer.klaviyo import ApiKeyAuth, KlaviyoClient
            from consumer.settings import IpaasSettings, KlaviyoSettings
            from simulators.klaviyo import DEFAULT_API_KEY

            klaviyo_url, ipaas_url, token = await stack.enter_async_context(simulators())
            klaviyo: Any = await stack.enter_async_context(KlaviyoClient(
                KlaviyoSettings(base_url=klaviyo_url, api_key=DEFAULT_API_KEY, rate_limit=False),
                ApiKeyAuth(DEFAULT_API_KEY)))
            ipaas: Any = await stack.enter_async_context(IpaasClient(
                IpaasSettings(base_url=ipaas_url, api_token=token)))
            admin_ipaas = await stack.enter_async_context(httpx.AsyncClient(base_url=ipaas_url, timeout=30))
        else:
            klaviyo = FakeKlaviyo()
            ipaas = fake_ipaas = FakeIpaas()
        events = await stack.enter_async_context(EventBatcher(klaviyo, linger_s=0.05))
        context = FlowContext(klaviyo=klaviyo, ipaas=ipaas, events=events, mappings=load_collections(),
                              warn=warnings)
        dispatcher = Dispatcher(table, context, max_value_bytes=1_048_576)

        def message(topic: str, key: str, value: bytes) -> Message:
            return Message(topic, 0, 0, key.encode(), value, [], 1_795_000_000_000)

        async def hook_customers(tag: str, count: int) -> list[str]:
            ids = []
            for n in range(count):
                row, addresses = ipaas_customer(n, tag)
                if admin_ipaas is not None:
                    answer = await admin_ipaas.post("/__admin/customers", json={**row, "addresses": addresses})
                    answer.raise_for_status()
                    ids.append(str(answer.json()["id"]))
                else:
                    assert fake_ipaas is not None
                    ids.append(f"{100_001 + len(fake_ipaas.customers)}")
                    fake_ipaas.add(ids[-1], row, addresses)
            return ids

        async def measure(name: str, make: Callable[[int], Message], count: int) -> None:
            if profiler is not None:
                profiler.enable()
            start_usage, start_wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            handled = await drive(dispatcher, (make(n) for n in range(count)), concurrency)
            usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start_wall
            user, system = usage.ru_utime - start_usage.ru_utime, usage.ru_stime - start_usage.ru_stime
            cpu = user + system
            if profiler is not None:
                profiler.disable()
            results[name] = {"records": handled, "cpu_s": round(cpu, 4), "user_s": round(user, 4),
                             "system_s": round(system, 4), "wall_s": round(wall, 4),
                             "cpu_s_per_1000": round(cpu / handled * 1000, 4)}

        # warm-up: every scenario's path once, unmeasured
        await drive(dispatcher, (message(customers, f"w-{n}", debezium_customer(n, "warm")) for n in range(WARMUP)),
                    concurrency)
        await drive(dispatcher, (message(customers, f"w-{n}", debezium_customer(n, "warm", update=True))
                                 for n in range(WARMUP)), concurrency)
        warm_ids = await hook_customers("warmhook", WARMUP // 4)
        await drive(dispatcher, (message(customers, i, hook_notification(i, n)) for n, i in enumerate(warm_ids)),
                    concurrency)
        await drive(dispatcher, (message(transactions, f"t-{n}", transaction(n, "warm")) for n in range(WARMUP)),
                    concurrency)

        if "customer_new_debezium" in scenarios or "customer_update" in scenarios:
            news = [debezium_customer(n, "run") for n in range(records)]
            await measure("customer_new_debezium", lambda n: message(customers, f"c-run-{n}", news[n]), records)
        if "customer_update" in scenarios:
            updates = [debezium_customer(n, "run", update=True) for n in range(records)]
            await measure("customer_update", lambda n: message(customers, f"c-run-{n}", updates[n]), records)
        if "customer_new_hook" in scenarios:
            ids = await hook_customers("hook", records)
            hooks = [hook_notification(i, n) for n, i in enumerate(ids)]
            await measure("customer_new_hook", lambda n: message(customers, ids[n], hooks[n]), records)
        if "order_3_lines" in scenarios:
            orders = [transaction(n, "run") for n in range(records)]
            await measure("order_3_lines", lambda n: message(transactions, f"t-run-{n}", orders[n]), records)
    return results


class Sampler:
    """A statistical profiler: every 0.5 ms of CPU, the functions on the stack (inclusive counts) and the innermost
    one (exclusive counts). Unlike cProfile it does not inflate code made of many small calls."""

    def __init__(self) -> None:
        import collections

        self.inclusive: collections.Counter[str] = collections.Counter()
        self.exclusive: collections.Counter[str] = collections.Counter()
        self.samples = 0

    def _sample(self, signum: int, frame: Any) -> None:
        self.samples += 1
        seen = set()
        self.exclusive[self._name(frame)] += 1
        while frame is not None:
            name = self._name(frame)
            if name not in seen:
                seen.add(name)
                self.inclusive[name] += 1
            frame = frame.f_back

    @staticmethod
    def _name(frame: Any) -> str:
        code = frame.f_code
        path = code.co_filename
        for marker in ("site-packages/", "/consumer/", "/bench/", "/lib/python3"):
            if marker in path:
                path = path.split(marker, 1)[1] if marker != "/consumer/" else "consumer/" + path.split(marker, 1)[1]
                break
        return f"{path}:{code.co_firstlineno}({code.co_name})"

    def enable(self) -> None:
        import signal

        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)

    def disable(self) -> None:
        import signal

        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def dump_stats(self, path: str) -> None:
        lines = [f"{self.samples} samples of 0.5 ms CPU", "", "inclusive:"]
        lines += [f"{count / self.samples:7.1%}  {name}" for name, count in self.inclusive.most_common(80)]
        lines += ["", "exclusive:"]
        lines += [f"{count / self.samples:7.1%}  {name}" for name, count in self.exclusive.most_common(50)]
        Path(path).write_text("\n".join(lines) + "\n")


def once(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement of every mode and scenario, in this process."""
    import consumer

    out: dict[str, Any] = {"code": str(Path(consumer.__file__).resolve().parents[1]), "modes": {}}
    for mode in args.modes:
        profiler: Any = None
        if args.profile is not None and args.sample:
            profiler = Sampler()
        elif args.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
        out["modes"][mode] = asyncio.run(run_mode(mode, args.records, args.concurrency, args.scenarios, profiler))
        if profiler is not None:
            profiler.dump_stats(f"{args.profile}.{mode}")
    return out


def child(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--once", "--code", str(code), "--records",
               str(args.records), "--concurrency", str(args.concurrency), "--modes", *args.modes,
               "--scenarios", *args.scenarios]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=str(ROOT))
    return json.loads(done.stdout.strip().splitlines()[-1])


def best(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for run in runs:
        for mode, scenarios in run["modes"].items():
            for name, figures in scenarios.items():
                key = table.setdefault(mode, {})
                key[name] = min(key.get(name, float("inf")), figures["cpu_s_per_1000"])
    return table


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000, help="records per scenario and run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--compare", type=Path, help="a checkout of the code before: measure both, interleaved")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="with --once: cProfile the measured part into PROFILE.<mode>")
    parser.add_argument("--sample", action="store_true", help="with --profile: sample the stack instead (text)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.once:
        print(json.dumps(once(args)))
        return

    started = uptime()
    labelled = [("before", args.compare), ("after", args.code)] if args.compare else [("now", args.code)]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in labelled}
    for repeat in range(args.repeats):
        for label, code in labelled:
            run = child(code, args)
            runs[label].append(run)
            figures = {mode: {name: f["cpu_s_per_1000"] for name, f in scenarios.items()}
                       for mode, scenarios in run["modes"].items()}
            print(f"run {repeat + 1} {label}: {json.dumps(figures)}", flush=True)
    bests = {label: best(items) for label, items in runs.items()}
    summary: dict[str, Any] = {
        "benchmark": "bench/cpu_per_record.py", "unit": "CPU seconds per 1,000 records (best of runs)",
        "records_per_scenario": args.records, "concurrency": args.concurrency, "repeats": args.repeats,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "uptime_start": started, "uptime_end": uptime(), "best": bests, "runs": runs,
    }
    if args.compare:
        summary["after_over_before"] = {
            mode: {name: round(bests["after"][mode][name] / bests["before"][mode][name], 3)
                   for name in bests["after"][mode]}
            for mode in bests["after"]}
    print(json.dumps({key: summary[key] for key in ("best", "after_over_before", "uptime_start", "uptime_end")
                      if key in summary}, indent=2))
    if args.compare:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    _code_path(sys.argv)
    main()
