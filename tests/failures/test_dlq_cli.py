"""The ``dlq`` command against the real broker: list, show, dry-run and replay dead letters."""

from __future__ import annotations

import asyncio
import json

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST
from consumer.cli import main as cli_main
from tests.failures.helpers import all_offsets, dead_letter, prepared
from tests.support.topic_space import TopicSpace

SELECTED, OTHER = KLAVIYO_REJECTED_REQUEST.code, KLAVIYO_CONNECTION_ERROR.code


async def test_the_cli_lists_shows_and_dry_runs(topic_space: TopicSpace, unique: str, monkeypatch, capsys):
    settings, catalog = await prepared(topic_space, unique)
    await dead_letter(settings, catalog, range(5), SELECTED)
    await dead_letter(settings, catalog, range(5, 8), OTHER)
    monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS", topic_space.bootstrap)
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
    assert f"what it means  {KLAVIYO_CONNECTION_ERROR.meaning}" in out
    assert f"what to do     {KLAVIYO_CONNECTION_ERROR.action}" in out
    assert '{"id":"c-6","first_name":"Name 6"}' in out and "trace: t-6" in out
    out = await cli("dlq", "show", f"{document['partition']}:{document['offset']}", "--json")
    assert json.loads(out)["value"] == '{"id":"c-6","first_name":"Name 6"}'
    await cli("dlq", "show", "7:999999", expect=1)

    before = await all_offsets(settings, catalog)
    out = await cli("dlq", "replay", "--dry-run", "--since", "1h", "--flow", "add_profile_from_ipaas",
                    "--code", SELECTED)
    assert "would replay 5 dead letters" in out
    assert await all_offsets(settings, catalog) == before

    summary = json.loads(await cli("dlq", "replay", "--code", OTHER, "--json"))
    assert (summary["replayed"], summary["mode"]) == (3, "republish")
    await cli("dlq", "list", "--since", "tomorrow", expect=2)
