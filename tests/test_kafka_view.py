"""Lag and dead letters as Kafka sees them, in the service's ``/metrics`` and ``/status`` and in ``status``,
against the real broker: right while the service is paused, for partitions it never committed, without a
service at all, and (the dead-letter backlog) across a restart after a replay.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from consumer import cli, topics
from consumer.failures.deadletters import read_dead_letters
from consumer.failures.filters import LetterFilter
from consumer.failures.replay import replay
from consumer.kafka_view import KafkaView
from consumer.runtime.engine import PAUSE_DEAD_LETTER
from consumer.settings import Settings
from simulators.klaviyo import DEFAULT_API_KEY, Faults, KlaviyoSimulator, SimulatorConfig
from tests.support.kafka import end_offsets, group_offsets
from tests.support.service import RunningService, running_service, service_settings

CUSTOMERS = "customer-changes"


@pytest.fixture
async def klaviyo_sim() -> AsyncIterator[KlaviyoSimulator]:
    async with KlaviyoSimulator(SimulatorConfig(seed=11, validate_bodies=False)) as sim:
        yield sim


def _settings(bootstrap: str, unique: str, sim: KlaviyoSimulator) -> Settings:
    return service_settings(bootstrap, unique, runtime={"retry_attempts": 1},
                            klaviyo={"base_url": sim.base_url, "api_key": DEFAULT_API_KEY, "max_retries": 0})


def _customer(cid: str) -> bytes:
    return orjson.dumps({"id": cid, "first_name": "Ada", "email_address": f"{cid}@example.com"})


async def _produce_to(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> float:
    """Send (partition, key, value) records; returns the time (``time.time()``) once all were acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key, partition=partition)
                   for partition, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.time()


async def _until(condition: Callable[[], Any], what: str, timeout_s: float = 60.0) -> None:
    """Poll a condition of the broker or the service (which has no event to await) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - the broker's group offsets have no event to await
            await asyncio.sleep(0.1)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def _samples(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of a metric family in the service's /metrics, by its labels."""
    text = _get(f"http://127.0.0.1:{port}/metrics").decode()
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == name}


def _lag_by_partition(port: int, topic: str) -> dict[int, float]:
    return {int(dict(labels)["partition"]): value
            for labels, value in _samples(port, "ipaas_klaviyo_consumer_lag").items()
            if dict(labels)["topic"] == topic}


def _topic(document: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [topic for topic in document["topics"] if topic["topic"] == name]
    return found


async def _cli_status(settings: Settings, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = cli.build_parser().parse_args(["status", *argv])
    code = await args.handler(args, settings)
    return code, capsys.readouterr().out


# --- lag -------------------------------------------------------------------------------------------------------
async def test_lag_counts_every_waiting_record_while_the_service_is_paused(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, capsys: pytest.CaptureFixture[str],
) -> None:
    """Partition 0 is consumed and committed; then Klaviyo goes down, the topic pauses, and records wait on
    partition 0 and on partitions the group never committed. Kafka's view counts every one of them."""
    settings = _settings(kafka_bootstrap, unique, klaviyo_sim)
    async with running_service(settings) as svc:
        topic, port = svc.topic(CUSTOMERS), _port(svc)
        await _produce_to(kafka_bootstrap, topic, [(0, b"c-0", _customer("c-0"))])
        await svc.wait_finished(1)
        await _until(lambda: _committed(kafka_bootstrap, settings, topic, 0, 1), "partition 0 committed")

        klaviyo_sim.faults = Faults(error_rates={503: 1.0})
        await _produce_to(kafka_bootstrap, topic, [(0, b"c-1", _customer("c-1"))])
        runtime = svc.service.runtime
        assert runtime is not None
        await _until(_async(lambda: "klaviyo" in (runtime.health.destinations or {})), "Klaviyo marked down")
        waiting = {partition: 5 + partition for partition in range(1, 8)}  # never committed by the group
        produced_at = await _produce_to(kafka_bootstrap, topic, [
            (partition, f"w-{partition}-{i}".encode(), _customer(f"w-{partition}-{i}"))
            for partition, count in waiting.items() for i in range(count)])
        total = 1 + sum(waiting.values())

        view = svc.service.view
        assert view is not None
        refreshing_at = time.time()
        await view.refresh()
        assert _lag_by_partition(port, topic) == {0: 1.0, **{p: float(n) for p, n in waiting.items()}}
        ages = {int(dict(labels)["partition"]): value
                for labels, value in _samples(port, "ipaas_klaviyo_consumer_lag_seconds").items()
                if dict(labels)["topic"] == topic}
        assert set(ages) == set(range(8))
        for partition in waiting:  # each waiting record was written before `produced_at`, read after `refreshing_at`
            assert ages[partition] >= refreshing_at - produced_at > 0
        paused = _samples(port, "ipaas_klaviyo_consumption_paused")
        assert paused[(("reason", "infrastructure"),)] == 1.0

        document = orjson.loads(_get(f"http://127.0.0.1:{port}/status"))
        customers = _topic(document, topic)
        assert document["source"] == "service" and document["unavailable"] == []
        assert customers["lag"] == total and customers["state"] == "paused"
        assert customers["pause_reasons"] == ["klaviyo down"]
        assert customers["time_lag_s"] >= refreshing_at - produced_at
        assert document["destinations"]["klaviyo"] == "down"
        assert document["authorization"] == "connected"

        code, out = await _cli_status(settings, "--url", f"http://127.0.0.1:{port}", "--json", capsys=capsys)
        assert code == 0 and _topic(orjson.loads(out), topic)["lag"] == total
        code, out = await _cli_status(settings, "--url", f"http://127.0.0.1:{port}", capsys=capsys)
        line = next(line for line in out.splitlines() if line.startswith(topic))
        assert code == 0 and f" {total} " in line and "paused: klaviyo down" in line

        klaviyo_sim.faults = Faults()  # Klaviyo is back: everything goes through and is committed
        await svc.wait_finished(1 + total)
        await _until(lambda: _all_committed(kafka_bootstrap, settings, topic), "every partition committed")
        await view.refresh()
        assert set(_lag_by_partition(port, topic).values()) == {0.0}
        assert _topic(orjson.loads(_get(f"http://127.0.0.1:{port}/status")), topic)["state"] == "consuming"


async def test_a_global_pause_shows_the_whole_backlog(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator,
) -> None:
    """Every partition paused (the dead-letter topic unavailable) before any record arrived: nothing was ever
    committed or fetched, and the lag is every record written."""
    settings = _settings(kafka_bootstrap, unique, klaviyo_sim)
    async with running_service(settings) as svc:
        runtime, view = svc.service.runtime, svc.service.view
        assert runtime is not None and view is not None
        await asyncio.wait_for(runtime.assigned.wait(), 60)
        paused_at = time.monotonic()
        runtime.pause(PAUSE_DEAD_LETTER)
        # the fetch loop pauses every partition before its next poll: once a poll ended, nothing more is fetched
        await _until(_async(lambda: runtime.health.last_poll > paused_at), "a poll after the pause")
        topic = svc.topic(CUSTOMERS)
        await _produce_to(kafka_bootstrap, topic, [(i % 8, f"g-{i}".encode(), _customer(f"g-{i}")) for i in range(120)])
        snapshot = await view.refresh()
        assert sum(row.lag for row in snapshot.lag or () if row.topic == topic) == 120
        assert sum(_lag_by_partition(_port(svc), topic).values()) == 120
        document = orjson.loads(_get(f"http://127.0.0.1:{_port(svc)}/status"))
        assert _topic(document, topic)["pause_reasons"] == ["dead-letter topic unavailable"]
        assert svc.finished == []
        runtime.resume(PAUSE_DEAD_LETTER)


async def test_without_a_service_the_lag_and_status_come_from_kafka_alone(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """No service ever ran for this group: every record counts (auto_offset_reset earliest), and ``status`` says
    which fields only the service knows."""
    settings = service_settings(kafka_bootstrap, unique)
    catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    await topics.apply(catalog, settings.kafka)
    topic = catalog.name("transaction-changes")
    await _produce_to(kafka_bootstrap, topic, [(3, b"t", b"{}")] * 7 + [(5, b"u", b"{}")] * 2)

    code, out = await _cli_status(settings, "--url", f"http://127.0.0.1:{_free_port()}", "--json", capsys=capsys)
    document = orjson.loads(out)
    assert code == 0 and document["source"] == "kafka"
    assert document["unavailable"] == ["pause_state", "destinations", "authorization"]
    transactions = _topic(document, topic)
    assert transactions["lag"] == 9 and "state" not in transactions
    assert {p["partition"]: (p["committed"], p["lag"]) for p in transactions["partitions"] if p["lag"]} == {
        3: (None, 7), 5: (None, 2)}
    code, out = await _cli_status(settings, "--kafka", capsys=capsys)
    assert code == 0 and "from Kafka alone" in out
    assert "Without the service, unknown: pause state, destinations, authorization" in out

    latest = service_settings(kafka_bootstrap, unique, kafka={**settings.kafka.model_dump(),
                                                              "auto_offset_reset": "latest"})
    snapshot = await _view_once(latest, catalog)
    assert sum(row.lag for row in snapshot.lag or () if row.topic == topic) == 0  # such a group never reads them


async def test_the_exporter_serves_the_lag_from_kafka(kafka_bootstrap: str, unique: str) -> None:
    """``ipaas-klaviyo exporter``: a process of its own, serving the lag and /status from Kafka alone."""
    settings = service_settings(kafka_bootstrap, unique)
    catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    await topics.apply(catalog, settings.kafka)
    topic = catalog.name(CUSTOMERS)
    await _produce_to(kafka_bootstrap, topic, [(1, b"e", b"{}")] * 4)
    port = _free_port()
    env = {**os.environ, "IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "IPAAS_KLAVIYO_KAFKA__GROUP_ID": settings.kafka.group_id,
           "IPAAS_KLAVIYO_TOPIC_PREFIX": settings.topic_prefix,
           "IPAAS_KLAVIYO_HTTP__PORT": str(port)}
    env.pop("IPAAS_KLAVIYO_SETTINGS_FILE", None)
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; the test awaits its HTTP answers, not the process
        [sys.executable, "-m", "consumer.cli", "exporter", "--interval", "0.5"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async def exported() -> bool:
            try:
                return _lag_by_partition(port, topic).get(1) == 4.0
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, process.communicate()[1].decode()[-2000:]
                return False

        await _until(exported, "the exporter's lag")
        document = orjson.loads(_get(f"http://127.0.0.1:{port}/status"))
        assert document["source"] == "exporter" and _topic(document, topic)["lag"] == 4
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]


# --- dead letters ---------------------------------------------------------------------------------------------
async def test_dead_letters_waiting_are_those_not_replayed_across_a_restart(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, capsys: pytest.CaptureFixture[str],
) -> None:
    """Write dead letters, replay some (``dlq replay`` is its own process: nothing it counts is scraped), restart
    the service: "waiting" is exactly the letters not yet replayed, read back from the topics."""
    settings = _settings(kafka_bootstrap, unique, klaviyo_sim)
    klaviyo_sim.faults = Faults(fail_next=[400] * 4, operations=["create_profile"])
    rejected = [f"c-{i}" for i in range(4)]
    async with running_service(settings) as svc:
        topic = svc.topic(CUSTOMERS)
        await svc.send(CUSTOMERS, [(cid.encode(), _customer(cid)) for cid in rejected]
                       + [(b"bad-1", b"not json"), (b"bad-2", b"{")])
        await svc.wait_finished(6)
        assert [outcome for _, outcome in svc.finished] == ["dead_lettered"] * 6
        view = svc.service.view
        assert view is not None
        await view.refresh()
        before = _waiting_by_code(_port(svc), topic)
    dead_letter_topic = svc.topic("customer-changes-dlt")
    poison = next(letter.code for letter in await read_dead_letters(settings.kafka, [dead_letter_topic])
                  if letter.key == b"bad-1")
    assert before == {"KLAVIYO_REJECTED_REQUEST": 4, poison: 2}

    # replay two of the four rejected customers (the faults are used up: they go through this time)
    result = await replay(settings, catalog=svc.catalog, topics=[CUSTOMERS],
                          selection=LetterFilter.build(keys=["c-0", "c-1"]))
    assert (result.replayed, result.failed) == (2, 0)

    async with running_service(settings) as restarted:
        await restarted.wait_finished(2)  # the two replayed records, consumed again
        assert [outcome for _, outcome in restarted.finished] == ["succeeded"] * 2
        view = restarted.service.view
        assert view is not None
        await view.refresh()
        letters = await read_dead_letters(settings.kafka, [dead_letter_topic])
        not_replayed: dict[str, int] = {}
        for letter in letters:
            if letter.key not in (b"c-0", b"c-1"):
                not_replayed[letter.code] = not_replayed.get(letter.code, 0) + 1
        assert _waiting_by_code(_port(restarted), topic) == not_replayed == {
            "KLAVIYO_REJECTED_REQUEST": 2, poison: 2}
        replayed = {dict(labels)["code"]: value
                    for labels, value in _samples(_port(restarted), "ipaas_klaviyo_dead_letter_records").items()
                    if dict(labels)["status"] == "replayed" and dict(labels)["topic"] == topic}
        assert replayed == {"KLAVIYO_REJECTED_REQUEST": 2.0, poison: 0.0}
        document = orjson.loads(_get(f"http://127.0.0.1:{_port(restarted)}/status"))
        customers = _topic(document, topic)
        assert customers["dead_letters_waiting"] == 4 and customers["dead_letters_replayed"] == 2
        assert customers["dead_letters_waiting_by_code"] == not_replayed

        # the scan is incremental: a new letter is read on its own, not the topic again
        assert view.backlog.records_read == len(letters) == 6
        await restarted.send(CUSTOMERS, [(b"bad-3", b"not json")])
        await restarted.wait_finished(3)
        await view.refresh()
        assert view.backlog.records_read == 7
        assert _waiting_by_code(_port(restarted), topic)[poison] == 3

    code, out = await _cli_status(settings, "--kafka", "--json", capsys=capsys)
    assert code == 0 and _topic(orjson.loads(out), topic)["dead_letters_waiting"] == 5


def _waiting_by_code(port: int, topic: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for labels, value in _samples(port, "ipaas_klaviyo_dead_letter_records").items():
        fields = dict(labels)
        if fields["status"] == "waiting" and fields["topic"] == topic and value:
            found[fields["code"]] = found.get(fields["code"], 0) + int(value)
    return found


# --- helpers ----------------------------------------------------------------------------------------------------
def _port(svc: RunningService) -> int:
    assert svc.service.ops is not None
    return svc.service.ops.port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def condition() -> bool:
        return check()

    return condition


async def _committed(bootstrap: str, settings: Settings, topic: str, partition: int, offset: int) -> bool:
    offsets = await group_offsets(bootstrap, settings.kafka.group_id)
    return any(tp.topic == topic and tp.partition == partition and committed >= offset
               for tp, committed in offsets.items())


async def _all_committed(bootstrap: str, settings: Settings, topic: str) -> bool:
    ends = await end_offsets(bootstrap, topic, 8)
    committed = await group_offsets(bootstrap, settings.kafka.group_id)
    return all(committed.get(tp, 0) == end for tp, end in ends.items())


async def _view_once(settings: Settings, catalog: topics.TopicCatalog) -> Any:
    view = KafkaView.for_settings(settings, catalog, publish=False)
    await view.start()
    try:
        return await view.refresh()
    finally:
        await view.close()

