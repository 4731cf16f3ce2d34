"""What the observability tests share: the repo's dashboards and rules, their PromQL, metric names, tools."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from consumer.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
PROMETHEUS = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
COMPOSE_FILE = ROOT / "docker-compose.yml"

# Grafana's macros, replaced by values that make sense for a 1s-scrape Prometheus holding a few minutes of data.
GRAFANA_MACROS = {
    "$__rate_interval": "1m",
    "$__interval_ms": "15000",
    "$__interval": "15s",
    "$__range_s": "3600",
    "$__range_ms": "3600000",
    "$__range": "1h",
}
# Series Prometheus itself makes for every target; not in the service's registry.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


# --- tools: fail in CI, skip locally ------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, package: str) -> str:
    """The path of a command-line tool; a missing tool fails the test in CI (CI=true) and skips it elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"`{name}` not found: install Debian's {package} package (.ci/install-observability-tools.sh)"
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    pytest.skip(reason)


# --- dashboards and their queries ----------------------------------------------------------------------------


def load_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def dashboards() -> dict[str, dict[str, Any]]:
    """Every committed dashboard, by file name."""
    return {path.name: load_json(path) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard or rule file, and where it comes from."""

    where: str
    expr: str


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$")


def variable_query(variable: dict[str, Any]) -> str | None:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return query if isinstance(query, str) and query else None


def variable_as_promql(query: str) -> str:
    """``label_values(selector, label)`` -> a PromQL query returning one series per value."""
    match = _LABEL_VALUES.match(query)
    if match:
        return f"count by ({match['label']}) ({match['selector']})"
    return query


def dashboard_queries() -> list[Query]:
    """Every PromQL query of every dashboard (panel targets and template variables), Grafana syntax."""
    found: list[Query] = []
    for name, board in dashboards().items():
        for variable in board.get("templating", {}).get("list", []):
            query = variable_query(variable) if variable.get("type") == "query" else None
            if query:
                found.append(Query(f"{name}:variable {variable['name']}", variable_as_promql(query)))
        for panel in all_panels(board):
            for target in panel.get("targets", []):
                found.append(Query(f"{name}:{panel.get('title')}:{target.get('refId')}", target.get("expr", "")))
    return found


def dashboard_promql() -> list[Query]:
    """Every dashboard query as plain PromQL: Grafana macros and variables substituted."""
    boards = dashboards()
    return [
        Query(query.where, grafana_to_promql(query.expr, variables_of(boards[query.where.split(":", 1)[0]])))
        for query in dashboard_queries()
    ]


def variables_of(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in board.get("templating", {}).get("list", [])}


def grafana_to_promql(expr: str, variables: dict[str, dict[str, Any]] | None = None) -> str:
    """Replace Grafana macros and template variables (``$var``, ``${var}``, ``${var:fmt}``) by plain values.

    A variable becomes its ``allValue`` (``.*``): what Grafana sends when "All" is selected.
    """
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    for name, variable in (variables or {}).items():
        value = variable.get("allValue") or ".*"
        expr = re.sub(r"\$\{" + re.escape(name) + r"(?::[^}]*)?\}", value, expr)
        expr = re.sub(r"\$" + re.escape(name) + r"\b", value, expr)
    return expr


def grafana_variables_used(expr: str) -> set[str]:
    names = set(re.findall(r"\$\{(\w+)(?::[^}]*)?\}", expr)) | set(re.findall(r"\$(\w+)", expr))
    return {name for name in names if not name.startswith("__")}


# --- alert rules ---------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules.extend(group["rules"])
    return rules


def rule_queries() -> list[Query]:
    return [Query(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in alert_rules()]


# --- a little PromQL lexing: enough for metric names and top-level operands -----------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w])")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
     "inf", "nan", "atan2", "start", "end"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers that are neither functions, keywords nor labels)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(1)
        rest = text[match.end():].lstrip()
        if name.lower() in _KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


_SPLIT_WORD = re.compile(r"(?:and|unless)\b")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def top_level_operands(expr: str) -> list[str]:
    """Split an expression at its top-level comparisons and ``and``/``unless``: the parts that carry the signal.

    ``sum(x) > 100 and rate(y[5m]) > 0`` -> ``["sum(x)", "rate(y[5m])"]`` (numeric literals are dropped).
    ``or`` is not split: ``(a or b * 0)`` is one operand by design.
    """
    parts: list[str] = []
    depth = 0
    start = 0
    index = 0
    quote: str | None = None
    while index < len(expr):
        char = expr[index]
        if quote:
            if char == "\\":
                index += 2
                continue
            if char == quote:
                quote = None
            index += 1
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            previous = expr[index - 1] if index else " "
            word = _SPLIT_WORD.match(expr, index) if not (previous.isalnum() or previous == "_") else None
            token = word.group(0) if word else next((op for op in _COMPARISONS if expr.startswith(op, index)), None)
            if token:
                parts.append(expr[start:index])
                index += len(token)
                start = index
                continue
        index += 1
    parts.append(expr[start:])
    operands = []
    for part in parts:
        part = re.sub(r"^\s*bool\b", "", part)
        part = re.sub(r"^\s*(?:on|ignoring|group_left|group_right)\s*\([^()]*\)", "", part).strip()
        if part and not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", part):
            operands.append(part)
    return operands


# --- the service's metric names ---------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def service_collectors() -> dict[str, Collector]:
    """Every metric object (and custom collector) of consumer.observability.metrics, by attribute name."""
    kinds = (MetricWrapperBase, metrics.HandlingStats)
    return {name: value for name, value in vars(metrics).items() if isinstance(value, kinds)}


def exposed_names(collector: Collector) -> set[str]:
    """The sample names a prometheus_client metric is exposed under (``_total``, ``_bucket``...)."""
    names: set[str] = set()
    for family in collector.describe():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def service_metric_names() -> set[str]:
    return set().union(*(exposed_names(collector) for collector in service_collectors().values()))


def default_collector_names() -> set[str]:
    """Sample names of prometheus_client's default collectors (process_*, python_gc_*, python_info)."""
    names: set[str] = set()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        for family in collector.collect():
            names.update(sample.name for sample in family.samples)
    return names
