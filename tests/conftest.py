"""Shared fixtures: the real Kafka broker every integration test runs against.

The broker is, in order: ``KAFKA_BOOTSTRAP_SERVERS`` when set; testcontainers' Kafka where a Docker engine
answers; else a local single-node KRaft broker started by ``simulators.localkafka`` (no Docker).
Also each module's ``topic_space`` (the topics its tests create, deleted at its end), the API clients' recorded
backoff ``sleeps``, and Klaviyo's OpenAPI contract (``openapi_spec``), read once for every test that checks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from simulators import localkafka
from simulators.klaviyo import Spec
from tests.support.klaviyo_contract import require_spec
from tests.support.sleeps import RecordedSleeps
from tests.support.topic_space import TopicSpace


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``) every worker shares the broker named by ``KAFKA_BOOTSTRAP_SERVERS``: with none
    given, each worker would start a broker of its own, so refuse (``./dev test`` starts one and names it)."""
    workers = getattr(config.option, "numprocesses", None)
    if workers and "PYTEST_XDIST_WORKER" not in os.environ \
            and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise pytest.UsageError("-n needs KAFKA_BOOTSTRAP_SERVERS (the workers share one broker): "
                                "run ./dev test, which starts one, or set it to a running broker")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for the whole test session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = localkafka.start(record=False)  # a broker `ipaas-klaviyo kafka start` recorded is not touched
    try:
        yield broker.bootstrap_servers
    finally:
        localkafka.stop(broker)


@pytest.fixture(scope="module")
async def topic_space(kafka_bootstrap: str) -> AsyncIterator[TopicSpace]:
    """The topics of this test module (each test makes its own, under the module's prefix); deleted at its end."""
    space = TopicSpace(kafka_bootstrap)
    try:
        yield space
    finally:
        await space.delete()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for consumer groups and other names, so tests never share state on the broker."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def sleeps() -> RecordedSleeps:
    """The API clients' backoff sleep for one test: records the delays, waits for none."""
    return RecordedSleeps()


@pytest.fixture(scope="session")
def openapi_spec() -> Spec:
    """Klaviyo's OpenAPI contract (vendored, or ``$KLAVIYO_OPENAPI_SPEC``); a missing one fails, never skips."""
    return require_spec()
