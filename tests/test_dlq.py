"""Dead-letter tooling against the real broker: reading, filtering, replay (republish and direct), dry runs,
interrupted replays resuming without duplicates, and a replayed record that fails again keeping its history."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from consumer import deadletter as dl
from consumer import dlq, topics
from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST, CatalogError, Flow
from consumer.cli import main as cli_main
from consumer.envelopes import ChangeEvent
from consumer.flows.context import FlowContext
from consumer.kafka import reliable_producer
from consumer.routing import Route
from consumer.runtime import Failure, Message
from consumer.settings import Settings
from consumer.topics import TopicCatalog
from tests.support.kafka import end_offsets, read_all
from tests.support.service import running_service, service_settings

SELECTED, OTHER = KLAVIYO_REJECTED_REQUEST.code, KLAVIYO_CONNECTION_ERROR.code


# --- without the broker ------------------------------------------------------------------------------------------
def test_times_are_iso_or_relative():
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert dlq.parse_time("2h", now) == now - timedelta(hours=2)
    assert dlq.parse_time("90s", now) == now - timedelta(seconds=90)
    assert dlq.parse_time("7d", now) == now - timedelta(days=7)
    assert dlq.parse_time("2026-04-30T10:00:00Z") == datetime(2026, 4, 30, 10, tzinfo=UTC)
    assert dlq.parse_time("2026-04-30") == datetime(2026, 4, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="relative one"):
        dlq.parse_time("yesterday")


def _letter(headers: dict[str, str], key: bytes | None = b"c-1", value: bytes | None = b"{}") -> dlq.DeadLetter:
    return dlq.DeadLetter("t.dlt", 3, 42, 1_700_000_000_000, key, value,
                          tuple((name, text.encode()) for name, text in headers.items()))


def test_a_letter_is_decoded_and_replayed_with_its_failure_context_and_a_replay_count():
    letter = _letter({
        "trace": "t-1", dl.ORIGINAL_TOPIC: "src", dl.ORIGINAL_PARTITION: "3", dl.ORIGINAL_OFFSET: "17",
        dl.ORIGINAL_TIMESTAMP: "1700000000000", dl.ORIGINAL_CONSUMER_GROUP: "g", dl.EXCEPTION_FQCN: "x.Y",
        dl.EXCEPTION_MESSAGE: "boom", dl.ERROR_CODE: SELECTED, dl.ERROR_CLASS: "fatal", dl.FLOW: "all",
        dl.ATTEMPTS: "3", dl.FIRST_FAILURE: "2026-05-01T10:00:00.000Z", dl.LAST_FAILURE: "2026-05-01T10:00:02.000Z",
        dl.REPLAY_COUNT: "1", dl.HISTORY: '[{"code": "X", "attempts": 1}]',
    })
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == ("src", 3, 17)
    assert (letter.flow, letter.code, letter.attempts, letter.replay_count) == ("all", SELECTED, 3, 1)
    assert letter.what_to_do == KLAVIYO_REJECTED_REQUEST.action
    assert letter.history == [{"code": "X", "attempts": 1}]
    replayed = dict(letter.replay_headers())
    assert replayed["trace"] == b"t-1" and replayed[dl.REPLAY_COUNT] == b"2"
    assert set(replayed) == {"trace", dl.REPLAY_COUNT} | set(dlq.CARRIED_ON_REPLAY)
    assert dl.ORIGINAL_CONSUMER_GROUP not in replayed and dl.ERROR_CLASS not in replayed
    shown = dlq.format_letter(letter)
    assert "what to do     " + KLAVIYO_REJECTED_REQUEST.action in shown and "value (UTF-8 text):" in shown
    binary = dlq.format_letter(_letter({dl.ERROR_CODE: "POISON_PILL_NOT_UTF8"}, value=b"\xff\x00"))
    assert "value (not UTF-8; base64):\n/wA=" in binary
    assert "The record was set aside on the dead-letter topic" in binary  # RECORD_NOT_READABLE's action


def test_the_filter_selects_by_flow_code_key_and_time():
    letter = _letter({dl.FLOW: Flow.ADD_PROFILE_FROM_IPAAS.slug, dl.ERROR_CODE: SELECTED,
                      dl.LAST_FAILURE: "2026-05-01T10:00:00.000Z"})
    build = dlq.LetterFilter.build
    assert build().matches(letter)
    assert build(flows=[Flow.ADD_PROFILE_FROM_IPAAS.value]).matches(letter)  # the catalog's name works too
    assert not build(flows=["update_profile_from_ipaas"]).matches(letter)
    assert build(codes=[SELECTED.lower(), OTHER]).matches(letter)
    assert not build(codes=[OTHER]).matches(letter)
    assert build(keys=["c-1"]).matches(letter) and not build(keys=["c-2"]).matches(letter)
    assert build(since="2026-05-01T09:00:00Z", until="2026-05-01T11:00:00Z").matches(letter)
    assert not build(since="2026-05-01T10:00:01Z").matches(letter)


def test_topics_are_resolved_from_the_catalog():
    catalog = TopicCatalog.load(prefix="p.")
    everything = dlq.dead_letter_topics(catalog)
    assert len(everything) == 3 and all(name.endswith("-dlt") for name in everything)
    dlt = catalog.name("customer-changes-dlt")
    assert dlq.dead_letter_topics(catalog, ["customer-changes"]) == [dlt]
    assert dlq.dead_letter_topics(catalog, [catalog.name("customer-changes"), dlt, "customer-changes-dlt"]) == [dlt]
    with pytest.raises(ValueError, match="neither"):
        dlq.dead_letter_topics(catalog, ["error-log"])
    assert dlq.parse_ref(f"{dlt}:2:5", []) == [(TopicPartition(dlt, 2), 5)]
    assert dlq.parse_ref("2:5", ["a", "b"]) == [(TopicPartition("a", 2), 5), (TopicPartition("b", 2), 5)]


# --- through the broker ------------------------------------------------------------------------------------------
async def _prepared(kafka_bootstrap: str, unique: str) -> tuple[Settings, TopicCatalog]:
    settings = service_settings(kafka_bootstrap, unique, klaviyo={"api_key": "pk_test_not_used"})
    catalog = TopicCatalog.load(prefix=settings.topic_prefix)
    await topics.apply(catalog, settings.kafka)
    return settings, catalog


async def _dead_letter(settings: Settings, catalog: TopicCatalog, ids: Sequence[int], code: str) -> None:
    """Dead-letter plain-JSON customer records ``c-<id>`` as if the service had failed them (same publisher)."""
    producer = reliable_producer(settings.kafka)
    await producer.start()
    try:
        publisher = dl.DeadLetterPublisher(producer, settings.kafka.group_id, catalog.dead_letter_name)
        source = catalog.name("customer-changes")
        failure = Failure(code=code, message=f"{code}: 400 invalid", exception_fqcn="consumer.catalog.CatalogError",
                          flow=Flow.ADD_PROFILE_FROM_IPAAS.slug, attempts=3)
        await asyncio.gather(*(publisher.publish(Message(
            topic=source, partition=i % 8, offset=10_000 + i, key=f"c-{i}".encode(),
            value=orjson.dumps({"id": f"c-{i}", "first_name": f"Name {i}"}), headers=[("trace", f"t-{i}".encode())],
            timestamp=1_700_000_000_000,
        ), failure) for i in ids))
    finally:
        await producer.stop()


async def _all_offsets(settings: Settings, catalog: TopicCatalog) -> dict[TopicPartition, int]:
    found: dict[TopicPartition, int] = {}
    for logical, spec in catalog.topics.items():
        found.update(await end_offsets(settings.kafka.bootstrap_servers, catalog.name(logical), spec.partitions))
    return found


async def _committed(settings: Settings, topic: str, expected: int) -> list[ConsumerRecord]:
    """What a read_committed consumer (like the service) sees on ``topic``, once ``expected`` records arrived."""
    async with dlq.TopicScan(settings.kafka, [topic]) as scan:
        records = [record async for record in scan.records()]
    assert len(records) >= expected
    return records


async def _physical(settings: Settings, topic: str) -> int:
    """Records on ``topic`` as a read_uncommitted consumer sees them (aborted ones included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None,
                                isolation_level="read_uncommitted", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or range(8)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        count = 0
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


def _recording_routes(handled: list[ChangeEvent], failing: set[str] | None = None) -> list[Route]:
    async def handle(event: ChangeEvent, ctx: FlowContext) -> None:
        if failing is not None and event.record_id in failing:
            raise CatalogError(KLAVIYO_REJECTED_REQUEST, "400 invalid: email is not valid", http_status=400)
        handled.append(event)

    return [Route("customer-changes", "customer/created", Flow.ADD_PROFILE_FROM_IPAAS, handle),
            Route("customer-changes", "customer/updated", Flow.ADD_PROFILE_FROM_IPAAS, handle)]


async def test_replay_of_1000_letters_selected_by_a_filter_reaches_the_handler_once_each(
    kafka_bootstrap: str, unique: str
):
    settings, catalog = await _prepared(kafka_bootstrap, unique)
    await _dead_letter(settings, catalog, range(1000), SELECTED)
    await _dead_letter(settings, catalog, range(1000, 1200), OTHER)  # not selected

    listed = await dlq.read_dead_letters(settings.kafka, dlq.dead_letter_topics(catalog),
                                         dlq.LetterFilter.build(codes=[SELECTED]))
    assert len(listed) == 1000
    result = await dlq.replay(settings, catalog=catalog, topics=["customer-changes"],
                              selection=dlq.LetterFilter.build(codes=[SELECTED]), batch_size=128, rate=100_000)
    assert (result.replayed, result.skipped, result.resumed, result.total_replayed) == (1000, 0, False, 1000)
    assert REGISTRY.get_sample_value("ipaas_klaviyo_dead_letters_replayed_total", {
        "flow": Flow.ADD_PROFILE_FROM_IPAAS.slug, "mode": "republish"}) >= 1000

    handled: list[ChangeEvent] = []
    async with running_service(settings, routes=_recording_routes(handled)) as svc:
        finished = await svc.wait_finished(1000)
    assert Counter(event.record_id for event in handled) == Counter(f"c-{i}" for i in range(1000))
    assert len(finished) == 1000
    # nothing else is on the source topic, in the original partitions, with the headers and a replay count
    replayed = await _committed(settings, catalog.name("customer-changes"), 1000)
    assert len(replayed) == 1000
    for record in replayed:
        headers = dl.decoded_headers(record.headers)
        number = int(record.key.decode().removeprefix("c-"))
        assert record.partition == number % 8
        assert headers["trace"] == f"t-{number}" and headers[dl.REPLAY_COUNT] == "1"
        assert headers[dl.ORIGINAL_OFFSET] == str(10_000 + number) and headers[dl.ERROR_CODE] == SELECTED
    # per partition, in dead-letter order (the source's per-key order)
    letters_order = [(letter.partition, letter.key) for letter in listed]
    for partition in range(8):
        assert [r.key for r in replayed if r.partition == partition] == [k for p, k in letters_order if p == partition]
    # re-running the same command resumes the finished run: nothing is sent again
    again = await dlq.replay(settings, catalog=catalog, topics=["customer-changes"],
                             selection=dlq.LetterFilter.build(codes=[SELECTED]))
    assert (again.run_id, again.resumed, again.replayed, again.total_replayed) == (result.run_id, True, 0, 1000)


async def test_a_dry_run_lists_what_would_be_replayed_and_writes_nothing(kafka_bootstrap: str, unique: str):
    settings, catalog = await _prepared(kafka_bootstrap, unique)
    await _dead_letter(settings, catalog, range(300), SELECTED)
    await _dead_letter(settings, catalog, range(300, 400), OTHER)
    before = await _all_offsets(settings, catalog)

    result = await dlq.replay(settings, catalog=catalog, selection=dlq.LetterFilter.build(codes=[SELECTED]),
                              dry_run=True)
    assert result.dry_run and result.replayed == 300
    assert sorted(letter.key for letter in result.letters) == sorted(f"c-{i}".encode() for i in range(300))
    assert await _all_offsets(settings, catalog) == before  # no record, no progress, no transaction marker
    assert await dlq.load_replay_state(settings.kafka, catalog.name("replay-state"), result.run_id) is None


async def test_an_interrupted_replay_resumes_without_duplicates(kafka_bootstrap: str, unique: str):
    settings, catalog = await _prepared(kafka_bootstrap, unique)
    await _dead_letter(settings, catalog, range(1000), SELECTED)
    selection = dlq.LetterFilter.build(flows=[Flow.ADD_PROFILE_FROM_IPAAS.slug])
    seen: list[dlq.ReplayProgress] = []

    def interrupt_half_way(progress: dlq.ReplayProgress) -> None:
        seen.append(progress)
        if progress.replayed == 500 and not task.cancelling():
            task.cancel()

    task = asyncio.create_task(dlq.replay(settings, catalog=catalog, selection=selection, batch_size=64,
                                          on_progress=interrupt_half_way))
    with pytest.raises(asyncio.CancelledError):
        await task
    run_id = dlq.default_run_id("republish", dlq.dead_letter_topics(catalog), selection.spec())
    state = await dlq.load_replay_state(settings.kafka, catalog.name("replay-state"), run_id)
    assert state is not None and not state.finished
    assert state.replayed == 448 == seen[-1].committed  # 7 batches of 64 committed; the 8th was aborted
    source = catalog.name("customer-changes")
    assert len(await _committed(settings, source, 448)) == 448  # the aborted batch is invisible...
    assert await _physical(settings, source) >= 500  # ...though its records were written

    resumed = await dlq.replay(settings, catalog=catalog, selection=selection, batch_size=64)
    assert (resumed.resumed, resumed.replayed, resumed.total_replayed) == (True, 552, 1000)
    handled: list[ChangeEvent] = []
    async with running_service(settings, routes=_recording_routes(handled)) as svc:
        await svc.wait_finished(1000)
    assert Counter(event.record_id for event in handled) == Counter(f"c-{i}" for i in range(1000))
    assert len(await _committed(settings, source, 1000)) == 1000


async def test_a_replayed_record_that_fails_again_is_dead_lettered_again_with_its_history(
    kafka_bootstrap: str, unique: str
):
    settings = service_settings(kafka_bootstrap, unique, klaviyo={"api_key": "pk_test_not_used"})
    handled: list[ChangeEvent] = []
    failing = {f"c-{i}" for i in range(0, 10, 2)}
    routes = _recording_routes(handled, failing)
    async with running_service(settings, routes=routes) as svc:
        placed = await svc.send("customer-changes", [
            (f"c-{i}".encode(), orjson.dumps({"id": f"c-{i}", "first_name": f"N{i}"}), [("trace", b"t")])
            for i in range(10)])
        await svc.wait_finished(10)
        first = await svc.dead_letters("customer-changes", expected=5)
        assert len(first) == 5

        # republish: the service fails them again and dead-letters them with the first failure in their history
        result = await dlq.replay(settings, catalog=svc.catalog, selection=dlq.LetterFilter.build(codes=[SELECTED]))
        assert result.replayed == 5
        await svc.wait_finished(15)
        letters = await svc.dead_letters("customer-changes", expected=10)
    second = [dlq.DeadLetter.from_record(r) for r in letters if dl.decoded_headers(r.headers).get(dl.REPLAY_COUNT)]
    assert len(second) == 5
    by_key = {letter.key: letter for letter in map(dlq.DeadLetter.from_record, first)}
    for letter in second:
        earlier = by_key[letter.key]
        number = int(letter.key.decode().removeprefix("c-"))  # type: ignore[union-attr]
        assert letter.replay_count == 1
        assert (letter.original_partition, letter.original_offset) == placed[number]  # the first source position
        assert letter.context["trace"] == "t"
        assert [h["code"] for h in letter.history] == [SELECTED]
        assert letter.history[0]["last_failure"] == earlier.context[dl.LAST_FAILURE]
        assert letter.first_failure == earlier.first_failure

    # direct, still failing: the service's failure path (error log, dead letter), history of two failures
    since = min(letter.last_failure for letter in second)  # type: ignore[type-var]
    direct = await dlq.replay(settings, catalog=svc.catalog, selection=dlq.LetterFilter.build(since=since),
                              mode="direct", routes=routes)
    assert (direct.replayed, direct.failed) == (0, 5)
    dlt = svc.topic("customer-changes-dlt")
    third = [letter for letter in await dlq.read_dead_letters(settings.kafka, [dlt]) if letter.replay_count == 2]
    assert len(third) == 5
    assert all(len(letter.history) == 2 and letter.attempts == 1 for letter in third)
    errors = await read_all(kafka_bootstrap, svc.topic("error-log"), expected=15)
    assert sum(1 for e in errors if orjson.loads(e.value)["dead_lettered"]) == 15

    # direct, fixed: each letter reaches the handler once
    failing.clear()
    since = min(letter.last_failure for letter in third)  # type: ignore[type-var]
    fixed = await dlq.replay(settings, catalog=svc.catalog, selection=dlq.LetterFilter.build(since=since),
                             mode="direct", routes=routes, rate=1000)
    assert (fixed.replayed, fixed.failed) == (5, 0)
    assert Counter(e.record_id for e in handled) == Counter(
        [f"c-{i}" for i in range(1, 10, 2)] + [f"c-{i}" for i in range(0, 10, 2)])


async def test_an_interrupted_direct_replay_resumes_without_handling_a_letter_twice(
    kafka_bootstrap: str, unique: str
):
    settings, catalog = await _prepared(kafka_bootstrap, unique)
    await _dead_letter(settings, catalog, range(100), SELECTED)
    handled: list[ChangeEvent] = []
    routes = _recording_routes(handled)

    def interrupt(progress: dlq.ReplayProgress) -> None:
        if progress.replayed == 40 and not task.cancelling():
            task.cancel()

    task = asyncio.create_task(dlq.replay(settings, catalog=catalog, mode="direct", routes=routes,
                                          on_progress=interrupt))
    with pytest.raises(asyncio.CancelledError):
        await task
    before = len(handled)  # 40, or 41 when the next letter was handled before the cancellation could land
    assert before in (40, 41)
    started = time.monotonic()
    resumed = await dlq.replay(settings, catalog=catalog, mode="direct", routes=routes, rate=40)
    assert (resumed.resumed, resumed.replayed, resumed.total_replayed) == (True, 100 - before, 100)
    assert time.monotonic() - started >= 0.95  # the rate limit: 40 at once, the rest after a second
    assert Counter(e.record_id for e in handled) == Counter(f"c-{i}" for i in range(100))


async def test_the_cli_lists_shows_and_dry_runs(kafka_bootstrap: str, unique: str, monkeypatch, capsys):
    settings, catalog = await _prepared(kafka_bootstrap, unique)
    await _dead_letter(settings, catalog, range(5), SELECTED)
    await _dead_letter(settings, catalog, range(5, 8), OTHER)
    monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("IPAAS_KLAVIYO_TOPIC_PREFIX", settings.topic_prefix)

    async def cli(*argv: str, expect: int = 0) -> str:
        capsys.readouterr()
        code = await asyncio.to_thread(cli_main, list(argv))
        out, err = capsys.readouterr()
        assert code == expect, f"{' '.join(argv)}: exit {code}; stderr: {err}"
        return out

    lines = (await cli("dlq", "list", "--code", SELECTED)).strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("DEAD LETTER")
    assert all(SELECTED in line and catalog.name("customer-changes") in line for line in lines[1:])

    out = await cli("dlq", "list", "--topic", "customer-changes", "--key", "c-6", "--json")
    (document,) = [json.loads(line) for line in out.strip().splitlines()]
    assert (document["code"], document["key"], document["attempts"]) == (OTHER, "c-6", 3)
    assert document["original"] == {"topic": catalog.name("customer-changes"), "partition": 6, "offset": 10_006}

    out = await cli("dlq", "show", document["ref"])
    assert f"what to do     {KLAVIYO_CONNECTION_ERROR.action}" in out
    assert '{"id":"c-6","first_name":"Name 6"}' in out and "trace: t-6" in out
    out = await cli("dlq", "show", f"{document['partition']}:{document['offset']}", "--json")
    assert json.loads(out)["value"] == '{"id":"c-6","first_name":"Name 6"}'
    await cli("dlq", "show", "7:999999", expect=1)

    before = await _all_offsets(settings, catalog)
    out = await cli("dlq", "replay", "--dry-run", "--since", "1h", "--flow", "add_profile_from_ipaas",
                    "--code", SELECTED)
    assert "would replay 5 dead letters" in out
    assert await _all_offsets(settings, catalog) == before

    summary = json.loads(await cli("dlq", "replay", "--code", OTHER, "--json"))
    assert (summary["replayed"], summary["mode"]) == (3, "republish")
    await cli("dlq", "list", "--since", "tomorrow", expect=2)


def test_the_progress_bar_draws_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = dlq.TextProgress(stream, every_s=0)
        bar(dlq.ReplayProgress(scanned=50, total=100, replayed=40, committed=0, failed=0, skipped=1))
        bar.close()
    assert "50.0%" in terminal.getvalue() and "replayed 40" in terminal.getvalue()
    assert pipe.getvalue() == ""
