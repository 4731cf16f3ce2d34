"""docker-compose.yml works as shipped: the service and the simulators share credentials, every long-running
service has a healthcheck that runs in its image (no curl) and answers, the OAuth token store is on a volume,
the image has the encrypted token store's dependency, and the ``demo`` profile sends sample traffic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from consumer.observability.http import OpsServer
from simulators.ipaas import DEFAULT_TOKEN, IpaasSimulator
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator
from tests.observability import helpers

ROOT = Path(__file__).resolve().parents[1]
APP_IMAGE = "ipaas-klaviyo:local"
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolated(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` as compose resolves it with none of the variables set."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_interpolated(item) for item in value]
    if isinstance(value, dict):
        return {key: _interpolated(item) for key, item in value.items()}
    return value


COMPOSE: dict[str, Any] = _interpolated(yaml.safe_load(helpers.COMPOSE_FILE.read_text(encoding="utf-8")))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LONG_RUNNING = sorted(name for name, service in SERVICES.items() if service.get("restart") != "no")


def _option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == name]


def _accepted(simulator: str, option: str, default: str) -> set[str]:
    return {default, *_option(SERVICES[simulator]["command"], option)}


@pytest.mark.parametrize("name", ["service", "poller", "traffic"])
def test_the_service_sends_credentials_the_simulators_accept(name: str) -> None:
    env = SERVICES[name]["environment"]
    assert env["IPAAS_KLAVIYO_KLAVIYO__API_KEY"] in _accepted("klaviyo-simulator", "--api-key", DEFAULT_API_KEY)
    assert env["IPAAS_KLAVIYO_IPAAS__API_TOKEN"] in _accepted("ipaas-simulator", "--token", DEFAULT_TOKEN)
    for variable, simulator in (("IPAAS_KLAVIYO_KLAVIYO__BASE_URL", "klaviyo-simulator"),
                                ("IPAAS_KLAVIYO_IPAAS__BASE_URL", "ipaas-simulator")):
        port = _option(SERVICES[simulator]["command"], "--port")[0]
        assert env[variable] == f"http://{simulator}:{port}"


def test_a_credential_set_in_the_environment_reaches_both_sides() -> None:
    """KLAVIYO_API_KEY / IPAAS_API_TOKEN change what the service sends and what the simulators accept alike."""
    text = helpers.COMPOSE_FILE.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)["services"]
    assert raw["service"]["environment"]["IPAAS_KLAVIYO_KLAVIYO__API_KEY"] in raw["klaviyo-simulator"]["command"]
    assert raw["service"]["environment"]["IPAAS_KLAVIYO_IPAAS__API_TOKEN"] in raw["ipaas-simulator"]["command"]
    assert "${KLAVIYO_API_KEY:-" in raw["service"]["environment"]["IPAAS_KLAVIYO_KLAVIYO__API_KEY"]
    assert "${IPAAS_API_TOKEN:-" in raw["service"]["environment"]["IPAAS_KLAVIYO_IPAAS__API_TOKEN"]


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck_without_curl(name: str) -> None:
    service = SERVICES[name]
    test = service.get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert not any("curl" in word for word in test), f"{name}'s image has no curl"
    if service.get("image") == APP_IMAGE:
        assert test[1:3] == ["python", "-c"], f"{name}: the app image has Python, not wget or curl"


def test_the_long_running_services_are_the_expected_ones() -> None:
    assert set(LONG_RUNNING) == {"kafka", "klaviyo-simulator", "ipaas-simulator", "service", "poller", "traffic",
                                 "prometheus", "grafana"}
    assert SERVICES["topics"]["restart"] == "no" and SERVICES["topics"]["command"] == ["topics", "apply"]


def _probe(name: str, port: int) -> int:
    """Run the service's Python healthcheck against ``port`` instead of the container's."""
    code = SERVICES[name]["healthcheck"]["test"][3]
    assert re.search(r"127\.0\.0\.1:\d+/", code)
    code = re.sub(r"127\.0\.0\.1:\d+/", f"127.0.0.1:{port}/", code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False).returncode


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("name", ["service", "poller", "traffic"])
def test_the_ops_healthcheck_passes_on_healthz_and_fails_without_it(name: str) -> None:
    assert SERVICES[name]["environment"]["IPAAS_KLAVIYO_HTTP__PORT"] in SERVICES[name]["healthcheck"]["test"][3]
    live = OpsServer("127.0.0.1", 0, live=lambda: (True, {}), ready=lambda: (True, {})).start()
    dead = OpsServer("127.0.0.1", 0, live=lambda: (False, {}), ready=lambda: (True, {})).start()
    try:
        assert _probe(name, live.port) == 0
        assert _probe(name, dead.port) != 0  # /healthz answers 503
        assert _probe(name, _closed_port()) != 0
    finally:
        live.close()
        dead.close()


async def test_the_simulator_healthchecks_pass_on_a_running_simulator() -> None:
    import asyncio

    async with KlaviyoSimulator() as klaviyo, IpaasSimulator() as ipaas:
        for name, simulator in (("klaviyo-simulator", klaviyo), ("ipaas-simulator", ipaas)):
            port = int(simulator.base_url.rsplit(":", 1)[1])
            assert await asyncio.to_thread(_probe, name, port) == 0, name
    assert await asyncio.to_thread(_probe, "klaviyo-simulator", _closed_port()) != 0


@pytest.mark.parametrize("name", ["service", "poller"])
def test_the_token_store_is_on_a_volume(name: str) -> None:
    token_file = PurePosixPath(SERVICES[name]["environment"]["IPAAS_KLAVIYO_OAUTH__TOKEN_FILE"])
    mounts = dict(volume.split(":")[1::-1] for volume in SERVICES[name]["volumes"])
    assert str(token_file.parent) in mounts, f"{name}: nothing is mounted at {token_file.parent}"
    assert mounts[str(token_file.parent)] in COMPOSE["volumes"]  # a named volume: it outlives the container


def test_the_image_has_the_encrypted_token_store() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert any(requirement.startswith("cryptography") for requirement in extras["oauth-encryption"])
    assert 'pip install ".[oauth-encryption]"' in (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_demo_profile_sends_sample_traffic() -> None:
    traffic = SERVICES["traffic"]
    assert traffic["profiles"] == ["demo"]
    assert traffic["entrypoint"] == ["python", "-m", "simulators.traffic"]
    assert traffic["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert all("profiles" not in service for name, service in SERVICES.items() if name != "traffic")


def test_docker_compose_accepts_the_file_with_the_demo_profile() -> None:
    docker_compose = helpers.require_tool("docker-compose", "docker-compose")
    env = {key: value for key, value in os.environ.items() if key not in ("KLAVIYO_API_KEY", "IPAAS_API_TOKEN")}
    result = subprocess.run([docker_compose, "--file", str(helpers.COMPOSE_FILE), "--profile", "demo", "config"],
                            capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["service"]["environment"]["IPAAS_KLAVIYO_IPAAS__API_TOKEN"] == DEFAULT_TOKEN
    assert "traffic" in resolved
