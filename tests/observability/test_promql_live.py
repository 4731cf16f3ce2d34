"""Every PromQL expression of the dashboards and alert rules, evaluated by a real Prometheus scraping metrics.

Prometheus (Debian's ``prometheus`` package) scrapes ``metrics_target`` every second and evaluates the alert
rules. The target is, by default, the service itself, running in this process against the real broker and the
Klaviyo simulator after some real traffic; metrics its traffic cannot reach here are exercised with realistic label
values, and a background thread keeps producing traffic. Set ``IPAAS_KLAVIYO_METRICS_TARGET=host:port[/path]`` to
scrape a running service instead (or override the ``metrics_target`` fixture).

Each dashboard query must parse and return series; each alert rule must parse, and each of its operands (the
expression split at its top-level comparisons and ``and``) must return series.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import yaml

from consumer.catalog import ENTRIES, Flow, Severity
from consumer.klaviyo.ratelimits import ENDPOINTS
from consumer.observability import metrics
from consumer.topics import DEFAULT_CATALOG
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig
from tests.observability import helpers
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace

TARGET_ENV = "IPAAS_KLAVIYO_METRICS_TARGET"
JOB = "ipaas-klaviyo"
POLLER_JOB = "ipaas-klaviyo-poller"
STARTUP_TIMEOUT_S = 60.0
SCRAPES_BEFORE_QUERYING = 5

T = TypeVar("T")

# --- the scrape target ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    """What Prometheus scrapes: ``host:port`` and the metrics path."""

    address: str
    path: str = "/metrics"

    @classmethod
    def parse(cls, text: str) -> ScrapeTarget:
        address, _, path = text.removeprefix("http://").partition("/")
        return cls(address, "/" + path if path else "/metrics")


def _source_topics() -> dict[str, str]:
    """Source topic name -> record kind, from the shipped topic catalog."""
    catalog = yaml.safe_load(Path(DEFAULT_CATALOG).read_text(encoding="utf-8"))["topics"]
    return {spec["name"]: spec["record_kind"] for spec in catalog.values() if spec["role"] == "source"}


_FLOWS_BY_KIND = {
    "customer": (Flow.ADD_PROFILE_FROM_IPAAS, Flow.UPDATE_PROFILE_FROM_IPAAS),
    "transaction": (Flow.PLACED_ORDER_FROM_IPAAS, Flow.ORDERED_PRODUCT_FROM_IPAAS),
    "klaviyo_profile": (
        Flow.ADD_PROFILE_TO_IPAAS,
        Flow.UPDATE_PROFILE_TO_IPAAS,
        Flow.ADD_PROFILE_ADDRESS_TO_IPAAS,
        Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS,
    ),
}
_IPAAS_ENDPOINTS = (("customers", "GET"), ("customers", "POST"), ("customers", "PUT"), ("customer_addresses", "POST"))


class Traffic:
    """Drives every metric of consumer.observability.metrics the way the running service would."""

    def __init__(self, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.topics = _source_topics()
        self.lag = dict.fromkeys(((topic, str(p)) for topic in self.topics for p in range(8)), 0)

    def _errors_of(self, flow: Flow) -> list[str]:
        return [entry.code for entry in ENTRIES if entry.flow in (flow, Flow.ALL) and entry.severity is Severity.ERROR]

    def round(self, first: bool = False) -> None:
        """One burst of activity; the first one creates every label combination the dashboards read."""
        rnd = self.random
        for topic, kind in self.topics.items():
            flows = _FLOWS_BY_KIND[kind]
            metrics.EVENTS_RECEIVED.labels(topic).inc(rnd.randint(5, 20))
            metrics.RECORDS_SKIPPED.labels(topic, "heartbeat").inc(rnd.randint(0, 2) or first)
            for flow in flows:
                for outcome, times in (("succeeded", rnd.randint(3, 15)), ("skipped", rnd.randint(0, 2) or first),
                                       ("dead_lettered", rnd.randint(0, 1) or first)):
                    for _ in range(times):
                        metrics.HANDLING.record(topic, flow.slug, outcome, rnd.lognormvariate(-3, 1))
                codes = self._errors_of(flow)
                metrics.DEAD_LETTERS.labels(topic, flow.slug, rnd.choice(codes)).inc()
                metrics.RETRIES.labels(flow.slug, "KLAVIYO_CONNECTION_ERROR").inc(rnd.randint(0, 3) or first)
                metrics.DEAD_LETTERS_REPLAYED.labels(flow.slug, "replay").inc(rnd.randint(0, 1) or first)
        for entry in ENTRIES:
            flow = entry.flow if entry.flow is not Flow.ALL else Flow.ADD_PROFILE_FROM_IPAAS
            if first or rnd.random() < 0.3:
                metrics.CATALOG_ERRORS.labels(flow.slug, entry.code, entry.severity.value).inc()
        for key in self.lag:
            self.lag[key] = max(0, self.lag[key] + rnd.randint(-3, 5))
            metrics.CONSUMER_LAG.labels(*key).set(self.lag[key])
            metrics.CONSUMER_LAG_SECONDS.labels(*key).set(rnd.uniform(0, 30) if self.lag[key] else 0)
        metrics.COMMITS.labels("ok").inc(rnd.randint(1, 3))
        metrics.COMMITS.labels("failed").inc(first or rnd.random() < 0.05)
        metrics.REBALANCES.labels("assigned").inc(first)
        metrics.REBALANCES.labels("revoked").inc(first)
        for reason in ("backpressure", "infrastructure", "authorization"):
            metrics.CONSUMPTION_PAUSED.labels(reason).set(0)
        for state in ("connected", "needs_reauthorization", "not_configured"):
            metrics.AUTHORIZATION_STATE.labels(state).set(1 if state == "connected" else 0)
        for operation, endpoint in ENDPOINTS.items():
            ok = "201" if operation.startswith("create") or endpoint.method == "POST" else "200"
            metrics.KLAVIYO_REQUESTS.labels(operation, endpoint.method, ok).inc(rnd.randint(2, 10))
            metrics.KLAVIYO_REQUEST_SECONDS.labels(operation).observe(rnd.lognormvariate(-2, 0.7))
            metrics.KLAVIYO_RATE_LIMIT_WAITS.labels(operation).inc(rnd.randint(0, 2) or first)
            metrics.KLAVIYO_RATE_LIMIT_WAIT_SECONDS.labels(operation).inc(rnd.uniform(0.0, 0.5))
        metrics.KLAVIYO_REQUESTS.labels("create_profile", "POST", "400").inc(rnd.randint(0, 2) or first)
        metrics.KLAVIYO_REQUESTS.labels("create_profile", "POST", "409").inc(first)
        metrics.KLAVIYO_REQUESTS.labels("get_profiles", "GET", "429").inc(rnd.randint(0, 2) or first)
        metrics.KLAVIYO_REQUESTS.labels("create_event", "POST", "error").inc(first)
        metrics.KLAVIYO_THROTTLED.labels("get_profiles").inc(rnd.randint(0, 2) or first)
        for endpoint, method in _IPAAS_ENDPOINTS:
            metrics.IPAAS_REQUESTS.labels(endpoint, method, "200").inc(rnd.randint(1, 5))
            metrics.IPAAS_REQUEST_SECONDS.labels(endpoint).observe(rnd.lognormvariate(-2.5, 0.5))
        metrics.IPAAS_REQUESTS.labels("customers", "GET", "404").inc(first)
        metrics.POLLER_PROFILES.inc(rnd.randint(0, 4))
        metrics.POLLER_WATERMARK.set(time.time() - rnd.uniform(5, 60))
        metrics.POLLER_LAST_POLL.set(time.time() - rnd.uniform(0, 5))
        metrics.POLLER_INTERVAL.set(60)
        metrics.IN_FLIGHT.set(rnd.randint(0, 32))
        metrics.BUFFERED.set(rnd.randint(0, 500))


def _gauges() -> list[Any]:
    collectors = helpers.service_collectors().values()
    return [collector for collector in collectors if getattr(collector, "_type", None) == "gauge"]


def _snapshot_gauges() -> dict[Any, dict[tuple[str, ...], float]]:
    """Current children of every gauge (label values -> value), to put them back after the test."""
    snapshot: dict[Any, dict[tuple[str, ...], float]] = {}
    for gauge in _gauges():
        children: dict[tuple[str, ...], float] = {}
        for family in gauge.collect():
            for sample in family.samples:
                children[tuple(sample.labels[name] for name in gauge._labelnames)] = sample.value
        snapshot[gauge] = children
    return snapshot


def _restore_gauges(snapshot: dict[Any, dict[tuple[str, ...], float]]) -> None:
    """Gauges are absolute: leave none of ours behind for the tests that run later in this process."""
    after = _snapshot_gauges()
    for gauge, before in snapshot.items():
        for labels in after[gauge]:
            if labels not in before and gauge._labelnames:
                gauge.remove(*labels)
        for labels, value in before.items():
            (gauge.labels(*labels) if labels else gauge).set(value)


@contextlib.contextmanager
def _traffic_in_background() -> Iterator[Traffic]:
    """Exercise every metric once, then keep the counters moving so that rate() has something to show."""
    traffic = Traffic()
    traffic.round(first=True)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.25):  # pacing of the simulated traffic, not a synchronisation
            traffic.round()

    thread = threading.Thread(target=loop, name="metrics-traffic", daemon=True)
    thread.start()
    try:
        yield traffic
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
async def metrics_target(topic_space: TopicSpace) -> AsyncIterator[ScrapeTarget]:
    """The running service's /metrics after some real traffic (or the service named by IPAAS_KLAVIYO_METRICS_TARGET).

    The service runs against the real broker and the Klaviyo simulator, and handles customers, an order and a
    poison pill; what its traffic cannot reach here (the poller, iPaaS.com calls, replays, OAuth states) is then
    exercised with realistic label values in the same process, so every series the dashboards read exists.
    """
    configured = os.environ.get(TARGET_ENV)
    if configured:
        yield ScrapeTarget.parse(configured)
        return
    snapshot = _snapshot_gauges()
    async with KlaviyoSimulator(SimulatorConfig(seed=3)) as sim:
        settings = service_settings(topic_space, f"promql{os.getpid()}",
                                    klaviyo={"base_url": sim.base_url, "api_key": DEFAULT_API_KEY})
        async with running_service(settings) as svc:
            customer = {"id": "c-1", "first_name": "Ada", "email_address": "ada@example.com"}
            order = {"id": "t-1", "customer_id": "c-1", "email_address": "ada@example.com", "total": 10,
                     "lines": [{"sequence_number": 1, "sku": "A", "qty": 1, "unit_price": 10, "extended_price": 10}]}
            await svc.send("customer-changes", [(b"c-1", orjson.dumps(customer)), (b"c-x", b"not json")])
            await svc.send("transaction-changes", [(b"t-1", orjson.dumps(order))])
            await svc.wait_finished(3)
            assert svc.service.ops is not None and svc.service.view is not None
            await svc.service.view.refresh()  # the poison pill's dead letter is in the view before the first scrape
            with _traffic_in_background():
                yield ScrapeTarget(f"127.0.0.1:{svc.service.ops.port}")
    _restore_gauges(snapshot)


# --- a real Prometheus ------------------------------------------------------------------------------------


class PrometheusError(AssertionError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(condition: Callable[[], T | None], timeout_s: float, what: str, describe: Callable[[], str]) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout_s`` saying what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise PrometheusError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{describe()}")
        time.sleep(0.2)


@dataclass
class Prometheus:
    """A running ``prometheus`` process and its HTTP API."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "prometheus log (tail):\n" + "\n".join(text.splitlines()[-lines:])

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, orjson.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read() or b"{}")

    def query(self, expr: str) -> dict[str, Any]:
        """POST /api/v1/query; the decoded answer (``status`` is "success" or "error")."""
        body = urllib.parse.urlencode({"query": expr}).encode()
        request = urllib.request.Request(self.url + "/api/v1/query", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 bad_data (parse errors), 422 execution errors
            return orjson.loads(exc.read())

    def series(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        if answer.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        result = answer["data"]["result"]
        return result if answer["data"]["resultType"] in ("vector", "matrix") else [{"value": result}]

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise PrometheusError(f"prometheus exited with {self.process.returncode}\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture(scope="module")
def prometheus(metrics_target: ScrapeTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping ``metrics_target`` every second with the repo's alert rules, after a few scrapes."""
    binary = helpers.require_tool("prometheus", "prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in helpers.RULE_FILES],
        "scrape_configs": [
            {"job_name": job, "metrics_path": metrics_target.path,
             "static_configs": [{"targets": [metrics_target.address]}]}
            for job in (JOB, POLLER_JOB)  # the service in-process runs the poller too: alert PollerDown reads it
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = _free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = Prometheus(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_until(server.ready, STARTUP_TIMEOUT_S, "/-/ready", server.log_tail)
        _wait_until(lambda: server.series(f'up{{job="{JOB}"}} == 1'), STARTUP_TIMEOUT_S,
                    f"the first successful scrape of {metrics_target}", lambda: _targets(server))
        _wait_until(lambda: server.series(f'count_over_time(up{{job="{JOB}"}}[1m]) >= {SCRAPES_BEFORE_QUERYING}'),
                    STARTUP_TIMEOUT_S, f"{SCRAPES_BEFORE_QUERYING} scrapes", lambda: _targets(server))
        _wait_until(lambda: _all_rules_evaluated(server), STARTUP_TIMEOUT_S, "every rule evaluated once",
                    lambda: str(server.get("/api/v1/rules")[1]))
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _targets(server: Prometheus) -> str:
    status, answer = server.get("/api/v1/targets?state=active")
    return f"targets ({status}): {answer.get('data')}\n{server.log_tail()}"


def _rules(server: Prometheus) -> list[dict[str, Any]]:
    status, answer = server.get("/api/v1/rules")
    assert status == 200, answer
    return [rule for group in answer["data"]["groups"] for rule in group["rules"]]


def _all_rules_evaluated(server: Prometheus) -> bool:
    rules = _rules(server)
    return bool(rules) and all(not rule.get("lastEvaluation", "").startswith("0001-") for rule in rules)


# --- the expressions -----------------------------------------------------------------------------------------

DASHBOARD_QUERIES = helpers.dashboard_promql()
RULES = {rule["alert"]: rule for rule in helpers.alert_rules() if "alert" in rule}


@pytest.mark.parametrize("query", DASHBOARD_QUERIES, ids=[query.where for query in DASHBOARD_QUERIES])
def test_dashboard_query_returns_series(prometheus: Prometheus, query: helpers.Query) -> None:
    """Grafana macros and variables substituted, the query parses and returns at least one series."""
    assert "$" not in query.expr, f"unsubstituted Grafana variable in {query.expr!r}"
    assert prometheus.series(query.expr), f"{query.where}: no series for {query.expr!r}"


@pytest.mark.parametrize("name", sorted(RULES))
def test_alert_rule_parses_and_its_operands_return_series(prometheus: Prometheus, name: str) -> None:
    """The alert's expression parses; each operand of its top-level comparisons and ``and`` returns series."""
    expr = RULES[name]["expr"]
    prometheus.series(expr)  # raises on a parse or evaluation error; empty while the alert is not firing
    operands = helpers.top_level_operands(expr)
    assert operands
    for operand in operands:
        assert prometheus.series(operand), f"{name}: no series for operand {operand!r}"


def test_prometheus_evaluates_every_rule_without_error(prometheus: Prometheus) -> None:
    """The rules loaded from prometheus/rules/ all evaluate healthily against the scraped metrics."""
    rules = {rule["name"]: rule for rule in _rules(prometheus)}
    assert set(rules) == set(RULES)
    for name, rule in rules.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"


def test_every_service_metric_was_exposed(prometheus: Prometheus) -> None:
    """Every metric of consumer.observability.metrics reached Prometheus (so the tests above cover them all)."""
    missing = []
    for attribute, collector in helpers.service_collectors().items():
        names = "|".join(sorted(helpers.exposed_names(collector)))
        if not prometheus.series(f'count({{__name__=~"{names}",job="{JOB}"}})'):
            missing.append(attribute)
    assert not missing, f"metrics the target does not expose: {missing}"
