"""Prometheus rules and config (promtool), and the docker-compose file (docker-compose config)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability import helpers

REQUIRED_ALERTS = {"DeadLettersGrowing", "ConsumerLagGrowing", "KlaviyoAuthorizationLost", "KlaviyoRejectingRequests"}
COMPOSE_SERVICES = {"kafka", "topics", "klaviyo-simulator", "ipaas-simulator", "service", "poller", "prometheus",
                    "grafana"}


def _run(command: list[str], cwd: Path = helpers.ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    command = " ".join(result.args)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"


def test_promtool_check_rules() -> None:
    """The rule files parse and pass promtool's linter (duplicate rules etc.), lint problems fatal."""
    promtool = helpers.require_tool("promtool", "prometheus")
    assert helpers.RULE_FILES
    _assert_ok(_run([promtool, "check", "rules", "--lint=all", "--lint-fatal", *map(str, helpers.RULE_FILES)]))


def test_promtool_check_config() -> None:
    """prometheus/prometheus.yml (the compose Prometheus) is valid and its rule_files glob finds the rules."""
    promtool = helpers.require_tool("promtool", "prometheus")
    result = _run([promtool, "check", "config", str(helpers.PROMETHEUS / "prometheus.yml")])
    _assert_ok(result)
    assert f"SUCCESS: {len(helpers.RULE_FILES)} rule files found" in result.stdout


def test_promtool_test_rules() -> None:
    """The alert unit tests (prometheus/tests/*.test.yml) pass."""
    promtool = helpers.require_tool("promtool", "prometheus")
    assert helpers.RULE_TEST_FILES
    _assert_ok(_run([promtool, "test", "rules", *(path.name for path in helpers.RULE_TEST_FILES)],
                    cwd=helpers.PROMETHEUS / "tests"))


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each alert is asserted firing somewhere and asserted not firing somewhere."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in helpers.RULE_TEST_FILES:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in helpers.alert_rules() if "alert" in rule}
    assert alerts - firing == set(), "alerts never asserted firing"
    assert alerts - quiet == set(), "alerts never asserted quiet"


def test_the_alerts_the_operators_need_exist_and_tell_what_to_do() -> None:
    """Required alerts, each with a ``for:``, a severity and summary/description that name a command to run."""
    rules = {rule["alert"]: rule for rule in helpers.alert_rules() if "alert" in rule}
    assert set(rules) >= REQUIRED_ALERTS
    for name, rule in rules.items():
        assert rule.get("for"), f"{name} has no `for:`"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    for name in REQUIRED_ALERTS:
        assert "ipaas-klaviyo " in rules[name]["annotations"]["description"], f"{name}: no command for the operator"


def test_docker_compose_config_is_valid() -> None:
    """`docker-compose config -q` accepts docker-compose.yml (no Docker engine needed)."""
    docker_compose = helpers.require_tool("docker-compose", "docker-compose")
    _assert_ok(_run([docker_compose, "--file", str(helpers.COMPOSE_FILE), "config", "--quiet"]))


def test_compose_runs_the_whole_integration() -> None:
    """Every piece is a compose service; Prometheus gets the config and rules, Grafana the provisioning."""
    compose = yaml.safe_load(helpers.COMPOSE_FILE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) >= COMPOSE_SERVICES
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["topics"]["command"] == ["topics", "apply"]
    assert services["service"]["command"] == ["run"]
    assert services["poller"]["command"] == ["poll-profiles"]
    env = services["service"]["environment"]
    assert env["IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["IPAAS_KLAVIYO_KLAVIYO__BASE_URL"] == "http://klaviyo-simulator:8080"
    assert env["IPAAS_KLAVIYO_IPAAS__BASE_URL"] == "http://ipaas-simulator:8081"
    assert env["IPAAS_KLAVIYO_HTTP__HOST"] == "0.0.0.0"
    assert services["service"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    prometheus_mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in services["prometheus"]["volumes"]}
    assert prometheus_mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prometheus_mounts["./prometheus/rules"] == "/etc/prometheus/rules"
    scraped = {
        target
        for job in yaml.safe_load((helpers.PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert "service:9400" in scraped


def test_dockerfile_builds_the_cli_image() -> None:
    dockerfile = (helpers.ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in dockerfile.splitlines()
    assert 'pip install ".[oauth-encryption]"' in dockerfile  # cryptography: the encrypted token store
    assert 'ENTRYPOINT ["ipaas-klaviyo"]' in dockerfile


@pytest.mark.parametrize("path", helpers.RULE_TEST_FILES, ids=lambda path: path.name)
def test_rule_unit_tests_load_the_repo_rules(path: Path) -> None:
    rule_files = yaml.safe_load(path.read_text(encoding="utf-8"))["rule_files"]
    assert {(path.parent / name).resolve() for name in rule_files} <= {rule.resolve() for rule in helpers.RULE_FILES}
