"""Panel, query, threshold and dashboard builders: plain dicts in the shape of Grafana's dashboard JSON.

Every panel queries the Prometheus datasource the dashboard's ``datasource`` variable names: by default the
provisioned one (uid ``prometheus``, see ``grafana/provisioning/datasources/prometheus.yaml``), and any other
Prometheus datasource of the Grafana it runs in can be picked. A panel carries its ``(width, height)`` in ``_size``
until :func:`layout` turns it into a ``gridPos``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PROVISIONED_DATASOURCE = {"uid": "prometheus", "name": "Prometheus"}
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
TAGS = ["ipaas-klaviyo"]
GRID_WIDTH = 24

Json = dict[str, Any]


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
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
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
            "textMode": "auto",
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


def datasource_variable() -> Json:
    """The ``datasource`` variable every query goes through: a Prometheus datasource, the provisioned one first."""
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": PROVISIONED_DATASOURCE["name"], "value": PROVISIONED_DATASOURCE["uid"]},
        "regex": "",
        "refresh": 1,
        "multi": False,
        "includeAll": False,
        "options": [],
        "hide": 0,
    }


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
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout(panels),
    }


def quantiles(metric: str, selector: str) -> list[tuple[str, str]]:
    """p50/p95/p99 of a histogram."""
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{selector}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]
