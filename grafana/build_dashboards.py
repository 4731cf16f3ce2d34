"""Dashboards as code: writes ``grafana/dashboards/*.json`` from plain Python dicts.

    python grafana/build_dashboards.py           # (re)write the JSON files
    python grafana/build_dashboards.py --check   # exit 1 when a committed file differs from the generator

Every panel queries the provisioned Prometheus datasource by its fixed uid (``prometheus``, see
``grafana/provisioning/datasources/prometheus.yaml``). The metric names are those of
``consumer/observability/metrics.py``; the legends of the error-catalog panels are generated from
``consumer.catalog.ENTRIES`` so that each catalog code is shown with its exact catalog message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from consumer.catalog import ENTRIES, Severity

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39
TAGS = ["ipaas-klaviyo"]
GRID_WIDTH = 24

Json = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------


def target(expr: str, legend: str = "__auto", *, ref: str = "A", instant: bool = False, table: bool = False) -> Json:
    """A Prometheus query of a panel."""
    query: Json = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }
    if table:
        query["format"] = "table"
    query["instant"] = instant or table
    query["range"] = not (instant or table)
    return query


def targets(*queries: tuple[str, str]) -> list[Json]:
    """Several range queries, ``(expr, legend)`` each, with refIds A, B, C..."""
    return [target(expr, legend, ref=chr(ord("A") + index)) for index, (expr, legend) in enumerate(queries)]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def value_mapping(options: dict[str, tuple[str, str | None]]) -> Json:
    """One Grafana value mapping: raw value -> (display text, colour or None)."""
    mapped: Json = {}
    for index, (value, (text, color)) in enumerate(options.items()):
        result: Json = {"index": index, "text": text}
        if color:
            result["color"] = color
        mapped[value] = result
    return {"type": "value", "options": mapped}


def display_name_override(name: str, display: str) -> Json:
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "displayName", "value": display}]}


def color_override(name: str, color: str) -> Json:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}],
    }


def timeseries(
    title: str,
    queries: list[Json],
    *,
    description: str,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    bars: bool = False,
    stack: bool = False,
    overrides: Sequence[Json] = (),
    legend_calcs: Sequence[str] = ("lastNotNull", "max"),
) -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": "bars" if bars else "line",
                    "lineWidth": 1,
                    "fillOpacity": 80 if bars else 10,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"group": "A", "mode": "normal" if stack else "none"},
                },
            },
            "overrides": list(overrides),
        },
        "options": {
            "legend": {"calcs": list(legend_calcs), "displayMode": "table", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (width, height),
    }


def stat(
    title: str,
    query: Json,
    *,
    description: str,
    unit: str = "short",
    width: int = 4,
    height: int = 4,
    steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mappings: Sequence[Json] = (),
    graph: bool = False,
    text_mode: str = "auto",
    decimals: int | None = 0,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": thresholds(*steps),
        "mappings": list(mappings),
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [query],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "background",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
        },
        "_size": (width, height),
    }


def state_timeline(
    title: str, query: Json, *, description: str, mappings: Sequence[Json], width: int = 12, height: int = 6
) -> Json:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [query],
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "mappings": list(mappings),
                "thresholds": thresholds((None, "green")),
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "mergeValues": True,
            "rowHeight": 0.9,
            "showValue": "auto",
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "_size": (width, height),
    }


def table(
    title: str,
    query: Json,
    *,
    description: str,
    transformations: Sequence[Json] = (),
    overrides: Sequence[Json] = (),
    sort_by: str | None = None,
    width: int = 24,
    height: int = 8,
) -> Json:
    options: Json = {"cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""},
                     "showHeader": True}
    if sort_by:
        options["sortBy"] = [{"desc": True, "displayName": sort_by}]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [query],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}, "decimals": 0},
            "overrides": list(overrides),
        },
        "options": options,
        "transformations": list(transformations),
        "_size": (width, height),
    }


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (GRID_WIDTH, 1)}


def layout(panels: Iterable[Json]) -> list[Json]:
    """Give each panel an id and a gridPos: left to right, wrapping at 24 columns; rows take a full line."""
    placed: list[Json] = []
    x = y = line_height = 0
    for panel_id, panel in enumerate(panels, start=1):
        width, height = panel.pop("_size")
        if panel["type"] == "row" or x + width > GRID_WIDTH:
            y += line_height
            x = line_height = 0
        placed.append({"id": panel_id, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel})
        x += width
        line_height = max(line_height, height)
        if panel["type"] == "row":
            y += line_height
            x = line_height = 0
    return placed


def query_variable(name: str, label: str, query: str) -> Json:
    """A multi-value template variable over label values, "All" matching everything."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def dashboard(uid: str, title: str, description: str, panels: Iterable[Json], variables: Sequence[Json]) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": False,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "ipaas-klaviyo dashboards",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": list(variables)},
        "panels": layout(panels),
    }


def quantiles(metric: str, selector: str, by: str = "") -> list[tuple[str, str]]:
    """p50/p95/p99 of a histogram, optionally per label ``by``."""
    group = f"{by}, le" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[$__rate_interval])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


# ---------------------------------------------------------------------------------------------------------
# Integration Monitoring
# ---------------------------------------------------------------------------------------------------------

FLOW = 'flow=~"$flow"'
TOPIC = 'topic=~"$topic"'
HANDLED = f"ipaas_klaviyo_events_handled_total{{{FLOW},{TOPIC}}}"
FAILED = f'ipaas_klaviyo_events_handled_total{{{FLOW},{TOPIC},outcome="dead_lettered"}}'
DEAD_LETTERS = f"ipaas_klaviyo_dead_letters_total{{{FLOW}}}"
REPLAYED = f"ipaas_klaviyo_dead_letters_replayed_total{{{FLOW}}}"
KLAVIYO_REQUESTS = "ipaas_klaviyo_klaviyo_requests_total"

DEAD_LETTERS_WAITING_NOTE = (
    "Dead letters waiting = dead letters written minus dead letters replayed, from the service's counters "
    "(ipaas_klaviyo_dead_letters_total - ipaas_klaviyo_dead_letters_replayed_total). There is no gauge of the "
    "dead-letter topics' size: the counters count since each process started (a restart resets them) and a "
    "replay run by a process Prometheus does not scrape is not subtracted. `ipaas-klaviyo dlq list` reads the "
    "dead-letter topics and is authoritative."
)

AUTHORIZATION_CODES = {"connected": 1, "not_configured": 2, "needs_reauthorization": 3}
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
            target(
                f"clamp_min((sum({DEAD_LETTERS}) or vector(0)) - (sum({REPLAYED}) or vector(0)), 0)",
                "waiting",
                instant=True,
            ),
            description=DEAD_LETTERS_WAITING_NOTE,
            steps=((None, "green"), (1, "orange")),
        ),
        stat(
            "Consumer lag",
            target(f"sum(ipaas_klaviyo_consumer_lag{{{TOPIC}}})", "lag"),
            description="Records on the source topics not yet committed by the service (high watermark minus "
            "committed offset), summed over partitions.",
            steps=((None, "green"), (100, "orange"), (1000, "red")),
            graph=True,
        ),
        stat(
            "Klaviyo authorization",
            target(encoded_state("ipaas_klaviyo_authorization_state", "state", AUTHORIZATION_CODES), "state"),
            description="The service's Klaviyo authorization state (ipaas_klaviyo_authorization_state). "
            "'Needs reauthorization': start the Authorize step again from the integration's connection settings.",
            mappings=[
                value_mapping(
                    {
                        "0": ("Unknown", "text"),
                        "1": ("Connected", "green"),
                        "2": ("Not configured", "orange"),
                        "3": ("Needs reauthorization", "red"),
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
            "Dead letters replayed by flow",
            targets((f"sum by (flow, mode) (rate({REPLAYED}[$__rate_interval])) * 60", "{{flow}} {{mode}}")),
            description="Dead letters replayed per minute (ipaas_klaviyo_dead_letters_replayed_total).",
            unit="cpm",
            bars=True,
            stack=True,
        ),
        timeseries(
            "Dead letters waiting by flow",
            targets(
                (
                    f"clamp_min(sum by (flow) ({DEAD_LETTERS}) - (sum by (flow) ({REPLAYED}) "
                    f"or sum by (flow) ({DEAD_LETTERS}) * 0), 0)",
                    "{{flow}}",
                )
            ),
            description=DEAD_LETTERS_WAITING_NOTE,
            width=24,
        ),
    ]


def _consumption() -> list[Json]:
    return [
        row("Kafka consumption"),
        timeseries(
            "Consumer lag by topic and partition",
            targets(
                (f"sum by (topic, partition) (ipaas_klaviyo_consumer_lag{{{TOPIC}}})", "{{topic}} [{{partition}}]")
            ),
            description="High watermark minus committed offset per assigned partition (ipaas_klaviyo_consumer_lag). "
            "Lag that keeps growing means the service consumes slower than records arrive, or has paused.",
        ),
        timeseries(
            "Records received by topic",
            targets((f"sum by (topic) (rate(ipaas_klaviyo_events_received_total{{{TOPIC}}}[$__rate_interval]))",
                     "{{topic}}")),
            description="Records fetched from Kafka per second (ipaas_klaviyo_events_received_total).",
            unit="cps",
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
            width=4,
        ),
        stat(
            "Poller watermark age",
            target("time() - max(ipaas_klaviyo_poller_watermark_timestamp_seconds)", "age"),
            description="How far behind the poller's durable watermark is (now minus the 'updated' time of the "
            "last profile it published). It grows while no profile changes, so read it with the published rate.",
            unit="s",
            width=4,
            height=8,
            decimals=None,
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


# ---------------------------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------------------------

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
            "Handlers in flight",
            targets((f"sum by (instance) (ipaas_klaviyo_in_flight{{{INSTANCE}}})", "{{instance}}")),
            description="Handlers running now (ipaas_klaviyo_in_flight), bounded by runtime.max_in_flight.",
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


# ---------------------------------------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], Json]] = {
    "integration-monitoring.json": integration_monitoring,
    "runtime.json": runtime,
}


def render(board: Json) -> str:
    """The JSON text written to disk (stable: same input, same bytes)."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    args = parser.parse_args(argv)
    stale = []
    for filename, build in DASHBOARDS.items():
        path = args.out / filename
        text = render(build())
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} differs from the generator: run python grafana/build_dashboards.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
