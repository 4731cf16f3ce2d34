"""Every Prometheus metric of the service, in one place (the dashboards and alert rules read these names).

Labels never carry personal data: no emails, no record ids, no keys; only topics, partitions, flows,
catalog codes, endpoints and status codes.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

NAMESPACE = "ipaas_klaviyo"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# --- consumer runtime -------------------------------------------------------------------------------------
EVENTS_RECEIVED = Counter(
    "events_received", "Records fetched from Kafka", ["topic"], namespace=NAMESPACE
)


class HandlingStats(Collector):
    """``events_handled_total`` and the ``handling_seconds`` histogram, kept in plain counters.

    Recorded once per record on the hot path, where prometheus_client's locked ``inc``/``observe`` cost more
    than the runtime's own bookkeeping; exposed at scrape time as an ordinary counter and histogram.
    """

    def __init__(self, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self._bounds = buckets
        self._handled: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, list[float]] = {}  # flow -> bucket counts..., +Inf count, sum

    def record(self, topic: str, flow: str, outcome: str, seconds: float) -> None:
        self._handled[(topic, flow, outcome)] += 1
        latency = self._latency.get(flow)
        if latency is None:
            latency = self._latency[flow] = [0.0] * (len(self._bounds) + 2)
        latency[bisect.bisect_left(self._bounds, seconds)] += 1
        latency[-1] += seconds

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(f"{NAMESPACE}_events_handled", "", labels=["topic", "flow", "outcome"])
        yield HistogramMetricFamily(f"{NAMESPACE}_handling_seconds", "", labels=["flow"])

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            f"{NAMESPACE}_events_handled", "Records finished, by outcome (succeeded, dead_lettered, skipped, "
            "retry_scheduled: handed on to a retry topic)",
            labels=["topic", "flow", "outcome"],
        )
        for labels, count in list(self._handled.items()):
            handled.add_metric(list(labels), count)
        yield handled
        histogram = HistogramMetricFamily(
            f"{NAMESPACE}_handling_seconds", "Time from a record's first handling attempt to its outcome",
            labels=["flow"],
        )
        for flow, latency in list(self._latency.items()):
            counts, total = latency[:-1], latency[-1]
            cumulative: list[tuple[str, float]] = []
            running: float = 0.0
            for bound, in_bucket in zip([*map(str, self._bounds), "+Inf"], counts, strict=True):
                running += in_bucket
                cumulative.append((bound, running))
            histogram.add_metric([flow], cumulative, total)
        yield histogram


HANDLING = HandlingStats()
REGISTRY.register(HANDLING)
IN_FLIGHT = Gauge("in_flight", "Handlers running now", namespace=NAMESPACE)
WAITING_FOR_QUOTA = Gauge(
    "handlers_waiting_for_quota",
    "Handler calls waiting for a destination's quota or their turn in a bulk request (they hold no worker)",
    namespace=NAMESPACE,
)
BUFFERED = Gauge("buffered_records", "Records fetched and not yet finished", namespace=NAMESPACE)
RETRIES = Counter(
    "retries", "Handling attempts retried after a retryable failure", ["flow", "code"], namespace=NAMESPACE
)
DEAD_LETTERS = Counter(
    "dead_letters", "Records written to a dead-letter topic", ["topic", "flow", "code"], namespace=NAMESPACE
)
CONSUMER_LAG = Gauge(
    "consumer_lag",
    "Records of the partition the consumer group has not committed (end offset minus committed offset, read from "
    "Kafka; a partition never committed counts from its log start)",
    ["topic", "partition"], namespace=NAMESPACE,
)
CONSUMER_LAG_SECONDS = Gauge(
    "consumer_lag_seconds",
    "Age of the partition's oldest unfinished record (now minus its timestamp; 0 when nothing waits)",
    ["topic", "partition"], namespace=NAMESPACE,
)
COMMITS = Counter("commits", "Offset commits, by outcome (ok, failed)", ["outcome"], namespace=NAMESPACE)
REBALANCES = Counter(
    "rebalances", "Partition assignment changes, by kind (assigned, revoked)", ["kind"], namespace=NAMESPACE
)
CONSUMPTION_PAUSED = Gauge(
    "consumption_paused",
    "1 while consumption is paused, by reason (backpressure, infrastructure, authorization)",
    ["reason"],
    namespace=NAMESPACE,
)

# --- error catalog ---------------------------------------------------------------------------------------
CATALOG_ERRORS = Counter(
    "catalog_errors",
    "Errors and warnings of the error catalog, by flow, code and severity",
    ["flow", "code", "severity"],
    namespace=NAMESPACE,
)
DEAD_LETTERS_REPLAYED = Counter(
    "dead_letters_replayed", "Dead letters replayed, by flow", ["flow", "mode"], namespace=NAMESPACE
)
DEAD_LETTER_RECORDS = Gauge(
    "dead_letter_records",
    "Dead letters in the dead-letter topics, read from Kafka, by source topic, flow, code and status: waiting "
    "(not replayed yet) or replayed (by `ipaas-klaviyo dlq replay`, from its progress in the replay-state topic)",
    ["topic", "flow", "code", "status"], namespace=NAMESPACE,
)
KAFKA_VIEW_UPDATED = Gauge(
    "kafka_view_updated_timestamp_seconds",
    "When the view read from Kafka was last refreshed, by view (lag, dead_letters)",
    ["view"], namespace=NAMESPACE,
)

# --- outbound HTTP: Klaviyo and iPaaS.com -----------------------------------------------------------------
KLAVIYO_REQUESTS = Counter(
    "klaviyo_requests",
    "Requests sent to Klaviyo, by endpoint class, method and HTTP status (or 'error' for transport failures)",
    ["endpoint", "method", "status"],
    namespace=NAMESPACE,
)
KLAVIYO_REQUEST_SECONDS = Histogram(
    "klaviyo_request_seconds", "Klaviyo request latency", ["endpoint"], namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
KLAVIYO_RATE_LIMIT_WAITS = Counter(
    "klaviyo_rate_limit_waits", "Times a request waited for the client-side rate limiter", ["endpoint"],
    namespace=NAMESPACE,
)
KLAVIYO_RATE_LIMIT_WAIT_SECONDS = Counter(
    "klaviyo_rate_limit_wait_seconds", "Seconds spent waiting for the client-side rate limiter", ["endpoint"],
    namespace=NAMESPACE,
)
KLAVIYO_THROTTLED = Counter(
    "klaviyo_throttled", "429 answers from Klaviyo", ["endpoint"], namespace=NAMESPACE
)
IPAAS_REQUESTS = Counter(
    "ipaas_requests", "Requests sent to iPaaS.com, by endpoint, method and HTTP status",
    ["endpoint", "method", "status"], namespace=NAMESPACE,
)
IPAAS_REQUEST_SECONDS = Histogram(
    "ipaas_request_seconds", "iPaaS.com request latency", ["endpoint"], namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)

# --- authorization and the profile poller ------------------------------------------------------------------
AUTHORIZATION_STATE = Gauge(
    "authorization_state",
    "1 for the current Klaviyo authorization state (connected, unauthorized, needs_reauthorization, not_configured)",
    ["state"],
    namespace=NAMESPACE,
)
RECORDS_SKIPPED = Counter(
    "records_skipped", "Readable records that change nothing (Debezium truncates and messages, heartbeats, empty "
    "hook calls), acknowledged without a flow", ["topic", "reason"], namespace=NAMESPACE,
)
QUOTA_SHARE = Gauge(
    "quota_share", "This instance's share of the destinations' quotas: its partitions / all of its group's",
    namespace=NAMESPACE,
)
DESTINATION_STATE = Gauge(
    "destination_state",
    "1 for each destination's current state (up, down, unauthorized, misconfigured)",
    ["destination", "state"],
    namespace=NAMESPACE,
)
DESTINATION_OUTAGES = Counter(
    "destination_outages", "Outage episodes of a destination, by the state they began with",
    ["destination", "state"], namespace=NAMESPACE,
)
POLLER_PROFILES = Counter(
    "poller_profiles", "Changed Klaviyo profiles published by the poller", namespace=NAMESPACE
)
POLLER_WATERMARK = Gauge(
    "poller_watermark_timestamp_seconds", "The poller's durable watermark (profile 'updated' time)",
    namespace=NAMESPACE,
)
POLLER_LAST_POLL = Gauge(
    "poller_last_poll_timestamp_seconds",
    "When the poller last finished a poll successfully (its start, until the first one); 0: no poller here",
    namespace=NAMESPACE,
)
POLLER_INTERVAL = Gauge(
    "poller_interval_seconds", "The poller's configured interval between polls; 0: no poller here",
    namespace=NAMESPACE,
)


PAUSE_REASONS = ("backpressure", "infrastructure", "authorization", "dead_letter_unavailable")
AUTHORIZATION_STATES = ("connected", "unauthorized", "needs_reauthorization", "not_configured")
DESTINATION_STATES = ("up", "down", "unauthorized", "misconfigured")


def initialize() -> None:
    """Create every labelled series the dashboards and alerts read, at zero, so they exist before traffic."""
    from consumer.catalog import ENTRIES

    for reason in PAUSE_REASONS:
        CONSUMPTION_PAUSED.labels(reason)
    for state in AUTHORIZATION_STATES:
        AUTHORIZATION_STATE.labels(state)
    for entry in ENTRIES:
        CATALOG_ERRORS.labels(entry.flow.slug, entry.code, entry.severity.value)
    QUOTA_SHARE.set(1.0)
    for outcome in ("ok", "failed"):
        COMMITS.labels(outcome)
    for kind in ("assigned", "revoked"):
        REBALANCES.labels(kind)


def initialize_destination(destination: str) -> None:
    """The series of a destination the service calls: up, and no outage yet."""
    set_destination_state(destination, "up")
    for state in DESTINATION_STATES[1:]:
        DESTINATION_OUTAGES.labels(destination, state)


def set_destination_state(destination: str, state: str) -> None:
    """Exactly one state of ``destination`` is 1."""
    for known in DESTINATION_STATES:
        DESTINATION_STATE.labels(destination, known).set(1 if known == state else 0)


def set_authorization_state(state: str) -> None:
    """Exactly one authorization state is 1."""
    for known in AUTHORIZATION_STATES:
        AUTHORIZATION_STATE.labels(known).set(1 if known == state else 0)


def authorization_state() -> str | None:
    """The authorization state that is 1 (None: none set, e.g. before the service started)."""
    for family in AUTHORIZATION_STATE.collect():
        for sample in family.samples:
            if sample.value == 1:
                return sample.labels["state"]
    return None


def poller_last_poll() -> float | None:
    """When this process's poller last polled successfully (None: no poller here)."""
    for family in POLLER_LAST_POLL.collect():
        for sample in family.samples:
            return sample.value or None
    return None
