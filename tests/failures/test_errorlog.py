"""Reading the error log back (``ipaas-klaviyo errors``): by flow, code, severity, record and time, through the
real broker, from records the service's own writer produced."""

from __future__ import annotations

import asyncio
import json

from consumer.catalog import (
    COULD_NOT_LINK_TO_EXISTING_PROFILE,
    KLAVIYO_REJECTED_REQUEST,
    ORDER_EVENT_COULD_NOT_BE_CREATED,
    CatalogError,
    Flow,
)
from consumer.cli import main as cli_main
from consumer.failures.errorlog import ErrorLog, build_record, read_error_log
from consumer.failures.filters import ErrorLogFilter
from consumer.failures.output import format_error
from consumer.kafka import reliable_producer
from consumer.runtime import Message, classify
from consumer.settings import KafkaSettings
from consumer.topics import TopicCatalog
from consumer.transfers import TransferRef
from tests.support.topic_space import TopicSpace


async def _written(topic_space: TopicSpace) -> tuple[KafkaSettings, TopicCatalog]:
    """An error log of its own with: a link warning and a dead-lettered failure of customer c-1, an old failure of
    customer c-2 (written a day ago), and an order event failure of transaction t-9."""
    kafka = KafkaSettings(bootstrap_servers=topic_space.bootstrap)
    catalog = await topic_space.catalog("error-log")
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        log = ErrorLog(producer, catalog.name("error-log"))
        c1 = TransferRef("customer", "c-1", "customer/updated")
        await log.report(CatalogError(COULD_NOT_LINK_TO_EXISTING_PROFILE, "2 profiles share a@example.com",
                                      flow=Flow.ADD_PROFILE_FROM_IPAAS), c1)
        error = CatalogError(KLAVIYO_REJECTED_REQUEST, "400 invalid: email is not valid",
                             flow=Flow.UPDATE_PROFILE_FROM_IPAAS, http_status=400, error_code="invalid")
        error.transfer = c1  # type: ignore[attr-defined]  # as the dispatcher sets it
        source = Message(catalog.name("customer-changes"), 3, 77, b"c-1", b"{}", [], 0)
        await log.failed(source, classify(error))
        old = build_record(entry=KLAVIYO_REJECTED_REQUEST, flow=Flow.ADD_PROFILE_FROM_IPAAS.slug, message="old",
                           detail=None, transfer=TransferRef("customer", "c-2"), source=None)
        old["time"] = "2020-01-01T00:00:00.000Z"
        await log.write(old)
        await log.report(CatalogError(ORDER_EVENT_COULD_NOT_BE_CREATED, "no line items"),
                         TransferRef("transaction", "t-9"))
    finally:
        await producer.stop()
    return kafka, catalog


async def test_the_error_log_is_read_back_by_flow_code_severity_record_and_time(topic_space: TopicSpace):
    kafka, catalog = await _written(topic_space)
    topic = catalog.name("error-log")

    async def read(**criteria: object) -> list[str]:
        entries = await read_error_log(kafka, topic, ErrorLogFilter.build(**criteria))  # type: ignore[arg-type]
        return [f"{e.transfer} {e.record['code']}" for e in entries]

    everything = await read_error_log(kafka, topic)
    assert len(everything) == 4
    assert [e.record["time"] for e in everything] == sorted(e.record["time"] for e in everything)
    assert sorted(await read(records=["customer:c-1"])) == [
        "customer:c-1 COULD_NOT_LINK_TO_EXISTING_PROFILE", "customer:c-1 KLAVIYO_REJECTED_REQUEST"]
    assert await read(records=["c-1"]) == await read(records=["customer:c-1"])
    assert await read(records=["t-9"]) == ["transaction:t-9 ORDER_EVENT_COULD_NOT_BE_CREATED"]
    assert await read(severities=["warning"]) == ["customer:c-1 COULD_NOT_LINK_TO_EXISTING_PROFILE"]
    assert sorted(await read(codes=["klaviyo_rejected_request"])) == [
        "customer:c-1 KLAVIYO_REJECTED_REQUEST", "customer:c-2 KLAVIYO_REJECTED_REQUEST"]
    assert await read(flows=[Flow.UPDATE_PROFILE_FROM_IPAAS.value]) == ["customer:c-1 KLAVIYO_REJECTED_REQUEST"]
    assert await read(until="2021-01-01") == ["customer:c-2 KLAVIYO_REJECTED_REQUEST"]
    assert "customer:c-2 KLAVIYO_REJECTED_REQUEST" not in await read(since="1h")
    assert len(await read(since="1h")) == 3
    failed = (await read_error_log(kafka, topic, ErrorLogFilter.build(codes=["KLAVIYO_REJECTED_REQUEST"],
                                                                      records=["c-1"])))[0]
    assert failed.record["meaning"] == KLAVIYO_REJECTED_REQUEST.meaning
    assert failed.record["operator_hint"] == KLAVIYO_REJECTED_REQUEST.operator_hint
    shown = format_error(failed)
    assert f"meaning      {KLAVIYO_REJECTED_REQUEST.meaning}" in shown
    assert f"what to do   {KLAVIYO_REJECTED_REQUEST.action}" in shown
    assert f"self-hosted  {KLAVIYO_REJECTED_REQUEST.operator_hint}" in shown
    assert f"source       {catalog.name('customer-changes')} partition 3 offset 77  (dead-lettered)" in shown
    assert "HTTP status  400" in shown


async def test_the_errors_command(topic_space: TopicSpace, monkeypatch, capsys):
    _, catalog = await _written(topic_space)
    monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS", topic_space.bootstrap)
    monkeypatch.setenv("IPAAS_KLAVIYO_TOPIC_PREFIX", catalog.prefix)

    async def cli(*argv: str) -> str:
        capsys.readouterr()
        code = await asyncio.to_thread(cli_main, list(argv))
        out, err = capsys.readouterr()
        assert code == 0, f"{' '.join(argv)}: exit {code}; stderr: {err}"
        return out

    out = await cli("errors", "--record", "customer:c-1", "--json")
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert {r["code"] for r in records} == {"COULD_NOT_LINK_TO_EXISTING_PROFILE", "KLAVIYO_REJECTED_REQUEST"}
    assert all(r["transfer"]["id"] == "c-1" and "offset" in r for r in records)

    lines = (await cli("errors", "--severity", "error", "--since", "1h")).strip().splitlines()
    assert lines[0].split()[:4] == ["TIME", "SEVERITY", "FLOW", "CODE"] and len(lines) == 3
    assert any("transaction:t-9" in line and "ORDER_EVENT_COULD_NOT_BE_CREATED" in line for line in lines)

    out = await cli("errors", "--code", "ORDER_EVENT_COULD_NOT_BE_CREATED", "--full")
    assert ORDER_EVENT_COULD_NOT_BE_CREATED.action in out and ORDER_EVENT_COULD_NOT_BE_CREATED.meaning in out
    assert f"self-hosted  {ORDER_EVENT_COULD_NOT_BE_CREATED.operator_hint}" in out
