"""Grafana dashboards and provisioning, checked offline: generated, well-formed, wired to the real metrics."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType
from typing import Any

import pytest
import yaml

from consumer.catalog import ENTRIES, Severity
from tests.observability import helpers

BOARDS = helpers.dashboards()
EXPECTED_BOARDS = {
    "integration-monitoring.json": ("ipaas-klaviyo-integration-monitoring", "Integration Monitoring"),
    "runtime.json": ("ipaas-klaviyo-runtime", "ipaas-klaviyo runtime"),
}
GRID_WIDTH = 24


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", helpers.GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _provisioned_datasource() -> dict[str, Any]:
    (datasource,) = yaml.safe_load(helpers.DATASOURCE_FILE.read_text(encoding="utf-8"))["datasources"]
    return datasource


def _panels(name: str) -> list[dict[str, Any]]:
    return list(helpers.all_panels(BOARDS[name]))


def _panel(name: str, title: str) -> dict[str, Any]:
    (panel,) = [panel for panel in _panels(name) if panel.get("title") == title]
    return panel


def test_the_committed_json_is_the_generator_output() -> None:
    """grafana/dashboards/*.json are exactly what grafana/build_dashboards.py writes, and nothing else."""
    generator = _generator()
    assert set(BOARDS) == set(generator.DASHBOARDS) == set(EXPECTED_BOARDS)
    for filename, build in generator.DASHBOARDS.items():
        committed = (helpers.DASHBOARD_DIR / filename).read_text(encoding="utf-8")
        assert committed == generator.render(build()), (
            f"{filename} is stale: run `python grafana/build_dashboards.py` and commit the result"
        )


@pytest.mark.parametrize("filename", sorted(EXPECTED_BOARDS))
def test_dashboard_identity(filename: str) -> None:
    """Fixed uid and title, a schemaVersion, and no UI-export leftovers that break file provisioning."""
    board = BOARDS[filename]
    uid, title = EXPECTED_BOARDS[filename]
    assert (board["uid"], board["title"]) == (uid, title)
    assert len(board["uid"]) <= 40
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "templating" in board and "annotations" in board
    assert "__inputs" not in board and "__requires" not in board
    assert board.get("id") is None


def test_uids_and_titles_are_unique() -> None:
    assert len({board["uid"] for board in BOARDS.values()}) == len(BOARDS)
    assert len({board["title"] for board in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("filename", sorted(EXPECTED_BOARDS))
def test_panel_ids_are_unique_and_the_grid_has_no_overlap(filename: str) -> None:
    """Unique panel ids; every gridPos inside the 24 columns; no two panels share a grid cell; rows full width."""
    panels = _panels(filename)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {filename}"
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert all(isinstance(pos[key], int) for key in ("x", "y", "w", "h")), panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] >= 1 and pos["h"] >= 1, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH, f"{panel['title']} overflows the grid"
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, GRID_WIDTH, 1), panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]


@pytest.mark.parametrize("filename", sorted(EXPECTED_BOARDS))
def test_every_query_goes_through_the_datasource_variable(filename: str) -> None:
    """Panels, targets and query variables use ``${datasource}``, a Prometheus datasource variable whose default
    is the provisioned Prometheus (by uid), so another Grafana can point the dashboards at its own."""
    datasource = _provisioned_datasource()
    assert datasource["type"] == "prometheus" and datasource["uid"]
    board = BOARDS[filename]
    variables = helpers.variables_of(board)
    chooser = variables["datasource"]
    assert (chooser["type"], chooser["query"]) == ("datasource", "prometheus")
    assert (chooser["current"]["value"], chooser["current"]["text"]) == (datasource["uid"], datasource["name"])
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]
    for panel in _panels(filename):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]


@pytest.mark.parametrize("filename", sorted(EXPECTED_BOARDS))
def test_every_target_has_an_expr_and_a_unique_ref_id(filename: str) -> None:
    for panel in _panels(filename):
        targets = panel.get("targets", [])
        ref_ids = [target.get("refId") for target in targets]
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), panel["title"]
        for target in targets:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), panel["title"]


@pytest.mark.parametrize("filename", sorted(EXPECTED_BOARDS))
def test_every_template_variable_used_is_declared(filename: str) -> None:
    board = BOARDS[filename]
    # the datasource variable is used by the panels' datasource, not by an expression
    declared = {name for name, variable in helpers.variables_of(board).items() if variable["type"] == "query"}
    used: set[str] = set()
    for panel in _panels(filename):
        for target in panel.get("targets", []):
            used |= helpers.grafana_variables_used(target["expr"])
    assert used <= declared, f"undeclared variables: {sorted(used - declared)}"
    assert declared <= used, f"variables no query uses: {sorted(declared - used)}"


def test_integration_monitoring_filters_by_flow_and_topic() -> None:
    variables = helpers.variables_of(BOARDS["integration-monitoring.json"])
    assert helpers.variable_query(variables["flow"]) == "label_values(ipaas_klaviyo_events_handled_total, flow)"
    assert "ipaas_klaviyo_" in (helpers.variable_query(variables["topic"]) or "")
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["includeAll"] and variable["allValue"] == ".*"


_ALL_QUERIES = [*helpers.dashboard_queries(), *helpers.rule_queries()]


@pytest.mark.parametrize("query", _ALL_QUERIES, ids=[query.where for query in _ALL_QUERIES])
def test_every_metric_name_exists(query: helpers.Query) -> None:
    """Each metric a dashboard or rule reads is exposed by consumer.observability.metrics (with its _total,
    _bucket, _sum, _count suffix), by prometheus_client's default collectors, or made by Prometheus (``up``)."""
    names = helpers.metric_names(query.expr)
    assert names, f"no metric name found in {query.expr!r}"
    known = helpers.service_metric_names() | helpers.default_collector_names() | helpers.PROMETHEUS_SYNTHETIC
    unknown = names - known
    assert not unknown, f"{query.where}: unknown metrics {sorted(unknown)}"
    assert not {name for name in names if name.startswith("ipaas_klaviyo_")} - helpers.service_metric_names()


def test_every_service_metric_is_on_a_dashboard() -> None:
    """A metric added to consumer/observability/metrics.py needs a panel (grafana/build_dashboards.py)."""
    used: set[str] = set()
    for query in helpers.dashboard_queries():
        used |= helpers.metric_names(query.expr)
    missing = [
        attribute
        for attribute, collector in helpers.service_collectors().items()
        if not helpers.exposed_names(collector) & used
    ]
    assert not missing, f"metrics without a panel: {missing}"


def test_the_runtime_dashboard_shows_the_process_metrics() -> None:
    used: set[str] = set()
    for query in helpers.dashboard_queries():
        if query.where.startswith("runtime.json"):
            used |= helpers.metric_names(query.expr)
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_gc_objects_collected_total",
            "process_open_fds"} <= used
    assert {"ipaas_klaviyo_in_flight", "ipaas_klaviyo_buffered_records", "ipaas_klaviyo_commits_total",
            "ipaas_klaviyo_rebalances_total", "ipaas_klaviyo_consumption_paused"} <= used


@pytest.mark.parametrize(("title", "severity"), [("Errors by catalog entry", Severity.ERROR),
                                                 ("Warnings by catalog entry", Severity.WARNING)])
def test_catalog_panels_name_each_code_by_its_catalog_message(title: str, severity: Severity) -> None:
    """The series are per ``code`` label and each code of that severity is displayed as its exact message."""
    panel = _panel("integration-monitoring.json", title)
    (target,) = panel["targets"]
    assert target["legendFormat"] == "{{code}}"
    assert re.search(r"sum by \(code\)", target["expr"]) and f'severity="{severity.value}"' in target["expr"]
    display = {
        override["matcher"]["options"]: prop["value"]
        for override in panel["fieldConfig"]["overrides"]
        if override["matcher"]["id"] == "byName"
        for prop in override["properties"]
        if prop["id"] == "displayName"
    }
    assert display == {entry.code: entry.message for entry in ENTRIES if entry.severity is severity}


def test_catalog_table_maps_codes_to_messages() -> None:
    panel = _panel("integration-monitoring.json", "Errors and warnings in the time range")
    (target,) = panel["targets"]
    assert "by (code, flow, severity)" in target["expr"]
    (organize,) = [t for t in panel["transformations"] if t["id"] == "organize"]
    column = organize["options"]["renameByName"]["code"]
    (override,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == column]
    (mappings,) = [prop["value"] for prop in override["properties"] if prop["id"] == "mappings"]
    texts = {code: result["text"] for mapping in mappings for code, result in mapping["options"].items()}
    assert texts == {entry.code: entry.message for entry in ENTRIES}


def test_dead_letters_waiting_is_read_from_kafka_not_from_process_counters() -> None:
    """Waiting and replayed come from the gauge the Kafka view keeps (right across restarts and whoever replays),
    folded over the processes exporting it; no panel note says the figure resets any more."""
    for title in ("Dead letters waiting", "Dead letters waiting by flow", "Dead letters waiting by topic and code",
                  "Dead letters replayed by flow"):
        panel = _panel("integration-monitoring.json", title)
        (target,) = panel["targets"]
        assert "ipaas_klaviyo_dead_letter_records{status=" in target["expr"]
        assert "max by (topic, flow, code)" in target["expr"]
        assert "_total" not in target["expr"]
        assert "reset" not in panel["description"]
    assert "ipaas-klaviyo status" in _panel("integration-monitoring.json", "Dead letters waiting")["description"]


def test_lag_panels_count_each_partition_once() -> None:
    """The service and the exporter both export every partition's lag: the panels take one copy per partition."""
    for title in ("Consumer lag", "Consumer lag by topic and partition"):
        (target,) = _panel("integration-monitoring.json", title)["targets"]
        assert "max by (topic, partition) (ipaas_klaviyo_consumer_lag{" in target["expr"]


def test_the_poller_panels_ignore_processes_without_a_poller() -> None:
    """Every process exports the poller gauges at 0 (no poller there): a bare ``time() - max(...)`` reads 1.8e9 s."""
    for title in ("Poller watermark age", "Time since the poller's last poll"):
        for target in _panel("integration-monitoring.json", title)["targets"]:
            assert re.search(r"ipaas_klaviyo_poller_\w+ > 0\)", target["expr"]), target["expr"]


def test_every_panel_explains_itself() -> None:
    for filename in BOARDS:
        for panel in _panels(filename):
            if panel["type"] != "row":
                assert panel.get("description"), f"{filename}: {panel['title']} has no description"


def test_provisioning_matches_the_compose_mounts() -> None:
    """Grafana reads the dashboards where docker-compose.yml mounts grafana/dashboards and the provisioning."""
    (provider,) = yaml.safe_load(helpers.PROVIDER_FILE.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load(helpers.COMPOSE_FILE.read_text(encoding="utf-8"))
    mounts = {
        volume.split(":")[0]: volume.split(":")[1]
        for volume in compose["services"]["grafana"]["volumes"]
        if volume.startswith("./")
    }
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = _provisioned_datasource()
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
