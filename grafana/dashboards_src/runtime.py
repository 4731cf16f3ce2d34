"""The runtime dashboard: process and consumer-runtime internals of every scraped ipaas-klaviyo process."""

from __future__ import annotations

from .panels import (
    Json,
    color_override,
    dashboard,
    query_variable,
    row,
    state_timeline,
    target,
    targets,
    timeseries,
    value_mapping,
)

INSTANCE = 'instance=~"$instance"'


def runtime() -> Json:
    """Process and consumer-runtime internals of every scraped ipaas-klaviyo process."""
    panels = [
        row("Process"),
        timeseries(
            "Scrape health",
            targets((f'up{{job=~"ipaas-klaviyo.*",{INSTANCE}}}', "{{job}} {{instance}}")),
            description="1 while Prometheus scrapes the process; 0 means it is down or unreachable (alert "
            "IpaasKlaviyoDown).",
            width=8,
        ),
        timeseries(
            "Resident memory",
            targets((f"process_resident_memory_bytes{{{INSTANCE}}}", "{{job}} {{instance}}")),
            description="Resident set size of each process (process_resident_memory_bytes).",
            unit="bytes",
            width=8,
        ),
        timeseries(
            "CPU",
            targets((f"rate(process_cpu_seconds_total{{{INSTANCE}}}[$__rate_interval])", "{{job}} {{instance}}")),
            description="CPU time used per second (1 = one core busy), from process_cpu_seconds_total.",
            unit="percentunit",
            width=8,
        ),
        timeseries(
            "Open file descriptors",
            targets(
                (f"process_open_fds{{{INSTANCE}}}", "{{job}} {{instance}} open"),
                (f"process_max_fds{{{INSTANCE}}}", "{{job}} {{instance}} max"),
            ),
            description="Open file descriptors (sockets included) against the limit.",
            width=8,
        ),
        timeseries(
            "Python GC: objects collected",
            targets((
                f"sum by (instance, generation) (rate(python_gc_objects_collected_total{{{INSTANCE}}}"
                "[$__rate_interval]))",
                "{{instance}} gen {{generation}}",
            )),
            description="Objects collected per second by the garbage collector, by generation.",
            unit="cps",
            width=8,
        ),
        timeseries(
            "Python GC: collections",
            targets((
                f"sum by (instance, generation) (rate(python_gc_collections_total{{{INSTANCE}}}[$__rate_interval]))",
                "{{instance}} gen {{generation}}",
            )),
            description="Garbage collections per second, by generation.",
            unit="cps",
            width=8,
        ),
        row("Consumer runtime"),
        timeseries(
            "Handlers in flight, and waiting for quota",
            targets((f"sum by (instance) (ipaas_klaviyo_in_flight{{{INSTANCE}}})", "working {{instance}}"),
                    (f"sum by (instance) (ipaas_klaviyo_handlers_waiting_for_quota{{{INSTANCE}}})",
                     "waiting {{instance}}")),
            description="Handlers working now (ipaas_klaviyo_in_flight, bounded by runtime.max_in_flight) and "
            "handlers waiting for a Klaviyo or iPaaS.com quota or their turn in a bulk request "
            "(ipaas_klaviyo_handlers_waiting_for_quota: they hold no worker).",
            width=8,
        ),
        timeseries(
            "Records buffered",
            targets((f"sum by (instance) (ipaas_klaviyo_buffered_records{{{INSTANCE}}})", "{{instance}}")),
            description="Records fetched and not yet finished (ipaas_klaviyo_buffered_records); above "
            "runtime.max_buffered consumption pauses for backpressure.",
            width=8,
        ),
        timeseries(
            "Offset commits by outcome",
            targets((f"sum by (outcome) (rate(ipaas_klaviyo_commits_total{{{INSTANCE}}}[$__rate_interval]))",
                     "{{outcome}}")),
            description="Offset commits per second, ok or failed (ipaas_klaviyo_commits_total).",
            unit="cps",
            overrides=[color_override("failed", "red"), color_override("ok", "green")],
            width=8,
        ),
        timeseries(
            "Rebalances",
            targets((f"sum by (kind) (increase(ipaas_klaviyo_rebalances_total{{{INSTANCE}}}[5m]))",
                     "{{kind}} (last 5m)")),
            description="Partition assignment changes in the last 5 minutes, assigned or revoked "
            "(ipaas_klaviyo_rebalances_total). Frequent rebalances mean members join, leave or miss heartbeats.",
            width=8,
        ),
        state_timeline(
            "Consumption paused by reason",
            target(f"max by (reason) (ipaas_klaviyo_consumption_paused{{{INSTANCE}}})", "{{reason}}"),
            description="1 while consumption is paused, by reason (ipaas_klaviyo_consumption_paused): "
            "backpressure, infrastructure (Klaviyo or iPaaS.com unreachable) or authorization.",
            mappings=[value_mapping({"0": ("consuming", "green"), "1": ("paused", "red")})],
            width=16,
            height=8,
        ),
        timeseries(
            "Records skipped",
            targets((f"sum by (topic, reason) (increase(ipaas_klaviyo_records_skipped_total{{{INSTANCE}}}[5m]))",
                     "{{topic}} {{reason}} (last 5m)")),
            description="Readable records that change no record, acknowledged without a flow "
            "(ipaas_klaviyo_records_skipped_total): Debezium truncates and logical-decoding messages, connector "
            "heartbeats, hook calls that notify nothing. They are never dead-lettered.",
            width=8,
        ),
        timeseries(
            "Quota share",
            targets((f"max by (instance) (ipaas_klaviyo_quota_share{{{INSTANCE}}})", "{{instance}}")),
            description="Each instance's share of Klaviyo's quota (ipaas_klaviyo_quota_share): its assigned "
            "partitions over all partitions of its consumer group, recomputed on every rebalance. The shares of one "
            "group add up to 1, so the instances together never spend more than the account's quota.",
            unit="percentunit",
            width=8,
        ),
        row("Kafka view and replay processes"),
        timeseries(
            "Kafka view age",
            targets((
                f"time() - max by (instance, view) (ipaas_klaviyo_kafka_view_updated_timestamp_seconds{{{INSTANCE}}})",
                "{{instance}} {{view}}",
            )),
            description="Seconds since each process last read its view of Kafka (the lag, the dead-letter backlog) "
            "successfully (ipaas_klaviyo_kafka_view_updated_timestamp_seconds): a few seconds normally; alert "
            "KafkaViewStale above 5 minutes, when the lag and dead-letter figures stop moving.",
            unit="s",
        ),
        timeseries(
            "Dead letters replayed, counted by the replaying process",
            targets((
                f"sum by (instance, flow, mode) (rate(ipaas_klaviyo_dead_letters_replayed_total{{{INSTANCE}}}"
                "[$__rate_interval])) * 60",
                "{{instance}} {{flow}} {{mode}}",
            )),
            description="Replays per minute as counted by the process that ran them "
            "(ipaas_klaviyo_dead_letters_replayed_total): only a replay run inside a scraped process shows here "
            "(`ipaas-klaviyo dlq replay` is usually a short command nothing scrapes). The dead letters replayed "
            "and waiting on the Integration Monitoring dashboard are read from Kafka and count every replay.",
            unit="cpm",
        ),
    ]
    return dashboard(
        "ipaas-klaviyo-runtime",
        "ipaas-klaviyo runtime",
        "Process and consumer-runtime internals of the ipaas-klaviyo processes: memory, CPU, file descriptors, "
        "garbage collection, in-flight handlers, buffered records, commits, rebalances and pauses. Generated by "
        "grafana/build_dashboards.py.",
        panels,
        [query_variable("instance", "Instance", "label_values(ipaas_klaviyo_in_flight, instance)")],
    )
