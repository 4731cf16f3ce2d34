"""The Integration Monitoring dashboard: transfers, errors, dead letters, lag, Klaviyo, authorization.

The metric names are those of ``consumer/observability/metrics.py``; the legends of the error-catalog panels are
generated from ``consumer.catalog.ENTRIES`` so that each catalog code is shown with its exact catalog message.
"""

from __future__ import annotations

from consumer.catalog import ENTRIES, Severity

from .panels import (
    Json,
    color_override,
    dashboard,
    display_name_override,
    quantiles,
    query_variable,
    row,
    stat,
    state_timeline,
    table,
    target,
    targets,
    timeseries,
    value_mapping,
)

FLOW = 'flow=~"$flow"'
TOPIC = 'topic=~"$topic"'
HANDLED = f"ipaas_klaviyo_events_handled_total{{{FLOW},{TOPIC}}}"
FAILED = f'ipaas_klaviyo_events_handled_total{{{FLOW},{TOPIC},outcome="dead_lettered"}}'
KLAVIYO_REQUESTS = "ipaas_klaviyo_klaviyo_requests_total"


def letters(status: str) -> str:
    """Dead letters in the topics by status, one copy per (topic, flow, code) however many processes export it."""
    return (f'max by (topic, flow, code) (ipaas_klaviyo_dead_letter_records{{status="{status}",{FLOW},{TOPIC}}})')


LAG = f"max by (topic, partition) (ipaas_klaviyo_consumer_lag{{{TOPIC}}})"
"""The lag per partition, one copy however many processes export it (service replicas, the exporter)."""

DEAD_LETTERS_WAITING_NOTE = (
    "Dead letters waiting: the letters in the dead-letter topics that no `ipaas-klaviyo dlq replay` run has "
    "replayed yet (ipaas_klaviyo_dead_letter_records{status=\"waiting\"}). Read from Kafka by the service (and the "
    "exporter): the dead-letter topics and the replay progress in the replay-state topic, so the figure is the same "
    "after a restart and whichever process replayed. Letters deleted by retention leave it. `ipaas-klaviyo status` "
    "shows it per topic and code, `ipaas-klaviyo dlq list` lists the letters."
)

AUTHORIZATION_CODES = {"connected": 1, "not_configured": 2, "unauthorized": 3, "needs_reauthorization": 4}
PAUSE_CODES = {"backpressure": 1, "infrastructure": 2, "authorization": 3}


def encoded_state(metric: str, label: str, codes: dict[str, int]) -> str:
    """One number for a one-hot state gauge: the code of the state that is 1 (the highest code wins), else 0."""
    alternatives = " or ".join(f'({metric}{{{label}="{value}"}} * {code})' for value, code in codes.items())
    return f"max({alternatives}) or vector(0)"


def catalog_message_overrides(severity: Severity) -> list[Json]:
    """Series legend ``{{code}}`` -> the entry's catalog message (the exact text users grep for)."""
    return [display_name_override(entry.code, entry.message) for entry in ENTRIES if entry.severity is severity]


def catalog_message_mapping() -> Json:
    """Value mapping of the ``code`` column: catalog code -> catalog message."""
    return value_mapping({entry.code: (entry.message, None) for entry in ENTRIES})


def _overview() -> list[Json]:
    return [
        row("Overview"),
        stat(
            "Transfers handled",
            target(f"sum(increase({HANDLED}[$__range])) or vector(0)", "handled", instant=True),
            description="Records finished in the selected time range, whatever the outcome (succeeded, "
            "dead_lettered, skipped).",
        ),
        stat(
            "Transfers failed",
            target(f"sum(increase({FAILED}[$__range])) or vector(0)", "failed", instant=True),
            description="Records dead-lettered in the selected time range: the transfer failed and the record "
            "waits in a dead-letter topic. See the error panels below for why; `ipaas-klaviyo dlq list` lists them.",
            steps=((None, "green"), (1, "red")),
        ),
        stat(
            "Dead letters waiting",
            target(f"sum({letters('waiting')})", "waiting", instant=True),
            description=DEAD_LETTERS_WAITING_NOTE,
            steps=((None, "green"), (1, "orange")),
        ),
        stat(
            "Consumer lag",
            target(f"sum({LAG})", "lag"),
            description="Records on the source topics the consumer group has not committed, summed over "
            "partitions: end offset minus committed offset, read from Kafka, so right while the service is "
            "paused, stuck or down (the exporter reports it then). `ipaas-klaviyo status` shows it per topic.",
            steps=((None, "green"), (100, "orange"), (1000, "red")),
            graph=True,
        ),
        stat(
            "Klaviyo authorization",
            target(encoded_state("ipaas_klaviyo_authorization_state", "state", AUTHORIZATION_CODES), "state"),
            description="The service's Klaviyo authorization state (ipaas_klaviyo_authorization_state). "
            "'Unauthorized': Klaviyo refuses the credential (a rotated or revoked private API key, a missing "
            "scope); the Klaviyo flows wait until it is replaced. 'Needs reauthorization': start the Authorize "
            "step again from the integration's connection settings.",
            mappings=[
                value_mapping(
                    {
                        "0": ("Unknown", "text"),
                        "1": ("Connected", "green"),
                        "2": ("Not configured", "orange"),
                        "3": ("Unauthorized", "red"),
                        "4": ("Needs reauthorization", "red"),
                    }
                )
            ],
        ),
        stat(
            "Consumption",
            target(encoded_state("ipaas_klaviyo_consumption_paused", "reason", PAUSE_CODES), "paused"),
            description="Whether the service is consuming or has paused, and why (ipaas_klaviyo_consumption_paused): "
            "backpressure (too many records buffered), infrastructure (Klaviyo or iPaaS.com unreachable; resumes by "
            "itself) or authorization (re-authorize Klaviyo).",
            mappings=[
                value_mapping(
                    {
                        "0": ("Consuming", "green"),
                        "1": ("Paused: backpressure", "yellow"),
                        "2": ("Paused: infrastructure", "red"),
                        "3": ("Paused: authorization", "red"),
                    }
                )
            ],
        ),
    ]


def _transfers() -> list[Json]:
    return [
        row("Transfers per flow"),
        timeseries(
            "Transfers handled by flow and outcome",
            targets((f"sum by (flow, outcome) (rate({HANDLED}[$__rate_interval]))", "{{flow}} {{outcome}}")),
            description="Records finished per second, by flow and outcome (ipaas_klaviyo_events_handled_total).",
            unit="cps",
        ),
        timeseries(
            "Transfers failed by flow",
            targets((f"sum by (flow) (rate({FAILED}[$__rate_interval])) * 60", "{{flow}}")),
            description="Records dead-lettered per minute, by flow: the transfer failed after its retries, or the "
            "error is not retryable.",
            unit="cpm",
        ),
        table(
            "Transfers in the time range, by flow",
            target(f"sum by (flow, outcome) (increase({HANDLED}[$__range]))", ref="A", table=True),
            description="Records finished in the selected time range: one row per flow, one column per outcome.",
            transformations=[
                {"id": "groupingToMatrix", "options": {"columnField": "outcome", "rowField": "flow",
                                                       "valueField": "Value"}},
            ],
            width=12,
        ),
        timeseries(
            "Retries by flow and catalog code",
            targets((f"sum by (flow, code) (rate(ipaas_klaviyo_retries_total{{{FLOW}}}[$__rate_interval])) * 60",
                     "{{flow}} {{code}}")),
            description="Handling attempts retried per minute after a retryable failure (ipaas_klaviyo_retries_total).",
            unit="cpm",
        ),
        timeseries(
            "Handling latency",
            targets(*quantiles("ipaas_klaviyo_handling_seconds", f"{{{FLOW}}}")),
            description="Time from a record's first handling attempt to its outcome, retries included: "
            "50th, 95th and 99th percentile over all selected flows.",
            unit="s",
        ),
        timeseries(
            "Handling latency p95 by flow",
            targets(
                (
                    "histogram_quantile(0.95, sum by (flow, le) "
                    f"(rate(ipaas_klaviyo_handling_seconds_bucket{{{FLOW}}}[$__rate_interval])))",
                    "{{flow}}",
                )
            ),
            description="95th percentile of the handling time per flow.",
            unit="s",
        ),
    ]


def _errors() -> list[Json]:
    severities = (Severity.ERROR, Severity.WARNING)
    catalog = "ipaas_klaviyo_catalog_errors_total"
    panels: list[Json] = [row("Errors and warnings (error catalog)")]
    for severity in severities:
        noun = "Errors" if severity is Severity.ERROR else "Warnings"
        panels.append(
            timeseries(
                f"{noun} by catalog entry",
                targets(
                    (
                        f'sum by (code) (rate({catalog}{{{FLOW},severity="{severity.value}"}}[$__rate_interval])) * 60',
                        "{{code}}",
                    )
                ),
                description=f"{noun} of the error catalog per minute; each series is named by its catalog message. "
                "`ipaas-klaviyo errors` explains each entry and what to do.",
                unit="cpm",
                overrides=catalog_message_overrides(severity),
            )
        )
    panels.append(
        table(
            "Errors and warnings in the time range",
            target(f"sum by (code, flow, severity) (increase({catalog}{{{FLOW}}}[$__range]))", table=True),
            description="Catalog errors and warnings in the selected time range, by catalog message, flow and "
            "severity. `ipaas-klaviyo errors` explains each entry and what to do.",
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "indexByName": {"code": 0, "flow": 1, "severity": 2, "Value": 3},
                        "renameByName": {"code": "Message", "flow": "Flow", "severity": "Severity", "Value": "Count"},
                    },
                }
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "Message"},
                    "properties": [{"id": "mappings", "value": [catalog_message_mapping()]},
                                   {"id": "custom.width", "value": 900}],
                },
                {
                    "matcher": {"id": "byName", "options": "Severity"},
                    "properties": [
                        {"id": "mappings", "value": [value_mapping({"error": ("error", "red"),
                                                                    "warning": ("warning", "orange")})]},
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    ],
                },
            ],
            sort_by="Count",
        )
    )
    return panels


def _dead_letters() -> list[Json]:
    return [
        row("Dead letters"),
        timeseries(
            "Dead letters written by flow and code",
            targets((f"sum by (flow, code) (rate(ipaas_klaviyo_dead_letters_total{{{FLOW},{TOPIC}}}"
                     "[$__rate_interval])) * 60", "{{flow}} {{code}}")),
            description="Records written to a dead-letter topic per minute (ipaas_klaviyo_dead_letters_total). "
            "`ipaas-klaviyo dlq list` lists them.",
            unit="cpm",
            bars=True,
            stack=True,
        ),
        timeseries(
            "Dead letters waiting by topic and code",
            targets((f"sum by (topic, code) ({letters('waiting')})", "{{topic}} {{code}}")),
            description=DEAD_LETTERS_WAITING_NOTE,
        ),
        timeseries(
            "Dead letters waiting by flow",
            targets((f"sum by (flow) ({letters('waiting')})", "{{flow}}")),
            description=DEAD_LETTERS_WAITING_NOTE,
        ),
        timeseries(
            "Dead letters replayed by flow",
            targets((f"sum by (flow) ({letters('replayed')})", "{{flow}}")),
            description="Dead letters in the dead-letter topics that an `ipaas-klaviyo dlq replay` run has replayed "
            "(ipaas_klaviyo_dead_letter_records{status=\"replayed\"}), read from the replay progress in the "
            "replay-state topic: a step up is a replay. A replayed record that fails again is a new letter, waiting.",
        ),
    ]


def _consumption() -> list[Json]:
    return [
        row("Kafka consumption"),
        timeseries(
            "Consumer lag by topic and partition",
            targets((LAG, "{{topic}} [{{partition}}]")),
            description="End offset minus the group's committed offset per partition of the source topics "
            "(ipaas_klaviyo_consumer_lag), read from Kafka: every partition, committed or not, whether the service "
            "runs or not. Lag that keeps growing means the service consumes slower than records arrive, or has "
            "paused (alert ConsumerLagGrowing).",
            width=8,
        ),
        timeseries(
            "Oldest waiting record by topic",
            targets((f"max by (topic) (ipaas_klaviyo_consumer_lag_seconds{{{TOPIC}}})", "{{topic}}")),
            description="Age of the oldest record the service has not finished, per topic "
            "(ipaas_klaviyo_consumer_lag_seconds): the time lag. It grows while a topic is paused or a record is "
            "stuck, even when few records wait (alert RecordsWaitingTooLong above 15 minutes).",
            unit="s",
            width=8,
        ),
        timeseries(
            "Records received by topic",
            targets((f"sum by (topic) (rate(ipaas_klaviyo_events_received_total{{{TOPIC}}}[$__rate_interval]))",
                     "{{topic}}")),
            description="Records fetched from Kafka per second (ipaas_klaviyo_events_received_total).",
            unit="cps",
            width=8,
        ),
    ]


def _klaviyo() -> list[Json]:
    status_colors = [color_override("429", "orange"), color_override("error", "red")]
    rejected = f'{KLAVIYO_REQUESTS}{{status=~"4..",status!="429"}}'
    return [
        row("Klaviyo API"),
        timeseries(
            "Klaviyo requests by status",
            targets((f"sum by (status) (rate({KLAVIYO_REQUESTS}[$__rate_interval]))", "{{status}}")),
            description="Requests sent to Klaviyo per second, by HTTP status ('error' = transport failure, no answer).",
            unit="reqps",
            stack=True,
            overrides=status_colors,
            width=8,
        ),
        timeseries(
            "Klaviyo requests by endpoint",
            targets((f"sum by (endpoint, method) (rate({KLAVIYO_REQUESTS}[$__rate_interval]))",
                     "{{method}} {{endpoint}}")),
            description="Requests sent to Klaviyo per second, by operation and method.",
            unit="reqps",
            width=8,
        ),
        timeseries(
            "Klaviyo rejections",
            targets(
                (
                    f"(sum(rate({rejected}[$__rate_interval])) or vector(0)) "
                    f"/ sum(rate({KLAVIYO_REQUESTS}[$__rate_interval]))",
                    "rejected (4xx except 429)",
                )
            ),
            description="Share of Klaviyo requests answered 4xx other than 429: Klaviyo received the request and "
            "rejected it (catalog entry KLAVIYO_REJECTED_REQUEST, 'Error calling Klaviyo'). Alert "
            "KlaviyoRejectingRequests fires above 10% for 10 minutes.",
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Klaviyo latency",
            targets(*quantiles("ipaas_klaviyo_klaviyo_request_seconds", "")),
            description="Klaviyo request latency, 50th, 95th and 99th percentile "
            "(ipaas_klaviyo_klaviyo_request_seconds).",
            unit="s",
            width=8,
        ),
        timeseries(
            "Klaviyo latency p95 by endpoint",
            targets(
                (
                    "histogram_quantile(0.95, sum by (endpoint, le) "
                    "(rate(ipaas_klaviyo_klaviyo_request_seconds_bucket[$__rate_interval])))",
                    "{{endpoint}}",
                )
            ),
            description="95th percentile of Klaviyo request latency per operation.",
            unit="s",
            width=8,
        ),
        timeseries(
            "Klaviyo 429 answers",
            targets((
                "sum by (endpoint) (rate(ipaas_klaviyo_klaviyo_throttled_total[$__rate_interval])) * 60",
                "{{endpoint}}",
            )),
            description="429 Too Many Requests answers from Klaviyo per minute "
            "(ipaas_klaviyo_klaviyo_throttled_total). "
            "The client-side rate limiter should keep this near zero; the requests are retried after Retry-After.",
            unit="cpm",
            width=8,
        ),
        timeseries(
            "Rate-limit waits",
            targets((
                "sum by (endpoint) (rate(ipaas_klaviyo_klaviyo_rate_limit_waits_total[$__rate_interval])) * 60",
                "{{endpoint}}",
            )),
            description="Times per minute a request waited for the client-side rate limiter, by endpoint class "
            "(ipaas_klaviyo_klaviyo_rate_limit_waits_total).",
            unit="cpm",
            width=8,
        ),
        timeseries(
            "Rate-limit wait time",
            targets((
                "sum by (endpoint) (rate(ipaas_klaviyo_klaviyo_rate_limit_wait_seconds_total[$__rate_interval]))",
                "{{endpoint}}",
            )),
            description="Seconds spent waiting for the client-side rate limiter per second of wall time, by endpoint "
            "class (ipaas_klaviyo_klaviyo_rate_limit_wait_seconds_total); above 1 several requests wait at once.",
            unit="s",
            width=8,
        ),
        state_timeline(
            "Klaviyo authorization state",
            target("max by (state) (ipaas_klaviyo_authorization_state)", "{{state}}"),
            description="Which authorization state is current over time (ipaas_klaviyo_authorization_state, 1 = "
            "current). 'needs_reauthorization': start the Authorize step again from the connection settings.",
            mappings=[value_mapping({"0": ("", "transparent"), "1": ("current", "green")})],
            width=8,
            height=8,
        ),
        state_timeline(
            "Destination health",
            target("max by (destination, state) (ipaas_klaviyo_destination_state) > 0", "{{destination}} {{state}}"),
            description="Each destination's state over time (ipaas_klaviyo_destination_state): up; down "
            "(unreachable, 5xx, timeouts); unauthorized (the credential is refused); misconfigured (a redirect, an "
            "HTML page or a missing route: check the base URL). While a destination is not up, the sources that "
            "need it pause and their records wait; nothing is dead-lettered for it.",
            mappings=[value_mapping({"0": ("", "transparent"), "1": ("current", "green")})],
            width=16,
            height=8,
        ),
        timeseries(
            "Destination outages",
            targets((
                "sum by (destination, state) (increase(ipaas_klaviyo_destination_outages_total[$__rate_interval]))",
                "{{destination}} {{state}}",
            )),
            description="Outage episodes that began, by destination and the state they began with "
            "(ipaas_klaviyo_destination_outages_total). Each is in the error log once, with its recovery.",
            width=8,
        ),
    ]


def _ipaas_and_poller() -> list[Json]:
    return [
        row("iPaaS.com API and profile poller"),
        timeseries(
            "iPaaS.com requests by status",
            targets(("sum by (status) (rate(ipaas_klaviyo_ipaas_requests_total[$__rate_interval]))", "{{status}}")),
            description="Requests sent to iPaaS.com per second, by HTTP status (ipaas_klaviyo_ipaas_requests_total).",
            unit="reqps",
            stack=True,
            width=8,
        ),
        timeseries(
            "iPaaS.com latency p95 by endpoint",
            targets(
                (
                    "histogram_quantile(0.95, sum by (endpoint, le) "
                    "(rate(ipaas_klaviyo_ipaas_request_seconds_bucket[$__rate_interval])))",
                    "{{endpoint}}",
                )
            ),
            description="95th percentile of iPaaS.com request latency per endpoint.",
            unit="s",
            width=8,
        ),
        timeseries(
            "Profile poller",
            targets(
                ("sum(rate(ipaas_klaviyo_poller_profiles_total[$__rate_interval])) * 60", "profiles published / min"),
            ),
            description="Changed Klaviyo profiles the poller published to Kafka per minute "
            "(ipaas_klaviyo_poller_profiles_total).",
            unit="cpm",
            width=8,
        ),
        stat(
            "Poller watermark age",
            target("time() - max(ipaas_klaviyo_poller_watermark_timestamp_seconds > 0)", "age"),
            description="How far behind the poller's durable watermark is (now minus the 'updated' time of the "
            "last profile it published). It grows while no profile changes, so read it with the published rate "
            "and the time since the last poll. No data: no poller is scraped (processes without one export 0).",
            unit="s",
            width=8,
            decimals=None,
        ),
        timeseries(
            "Time since the poller's last poll",
            targets(
                ("time() - max by (instance) (ipaas_klaviyo_poller_last_poll_timestamp_seconds > 0)", "{{instance}}"),
                ("3 * max by (instance) (ipaas_klaviyo_poller_interval_seconds > 0) + 300",
                 "{{instance}} alert threshold"),
            ),
            description="Seconds since the poller last finished a poll successfully "
            "(ipaas_klaviyo_poller_last_poll_timestamp_seconds), against the threshold of alert PollerNotPolling "
            "(three intervals, ipaas_klaviyo_poller_interval_seconds, plus 5 minutes). It saws between 0 and the "
            "interval while the poller works, whether profiles change or not.",
            unit="s",
            width=16,
        ),
    ]


def integration_monitoring() -> Json:
    """The operator's dashboard: transfers, errors, dead letters, lag, Klaviyo, authorization."""
    panels = [*_overview(), *_transfers(), *_errors(), *_dead_letters(), *_consumption(), *_klaviyo(),
              *_ipaas_and_poller()]
    return dashboard(
        "ipaas-klaviyo-integration-monitoring",
        "Integration Monitoring",
        "iPaaS.com <-> Klaviyo integration: transfers per flow, catalog errors and warnings, dead letters, "
        "consumer lag, handling latency, Klaviyo calls and authorization. Generated by grafana/build_dashboards.py.",
        panels,
        [
            query_variable("flow", "Flow", "label_values(ipaas_klaviyo_events_handled_total, flow)"),
            query_variable("topic", "Topic", "label_values(ipaas_klaviyo_events_received_total, topic)"),
        ],
    )
