"""The README's first command: the demo runs every sample change through the service and reports it."""

from __future__ import annotations

import re

import pytest

from consumer.settings import load_settings
from simulators.demo import run_demo, sample_changes
from tests.support.kafka import delete_topics


async def test_the_demo_handles_every_sample_change_and_shows_both_sides(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    try:
        assert await run_demo(load_settings()) == 0
    finally:
        out = capsys.readouterr().out
        if found := re.search(r"topics under prefix '([^']+)'", out):  # the demo's own: not left on the broker
            await delete_topics(kafka_bootstrap, found.group(1))
    assert f"all {len(sample_changes())} sample changes handled: True" in out
    assert "event 'Placed Order': unique_id=t-5001 value=1250.0" in out
    assert "margaret@example.com name=Margaret Hamilton addresses=1" in out  # a Klaviyo sign-up reached iPaaS.com
    assert "POISON_PILL_INVALID_JSON" in out and "PROFILE_COULD_NOT_BE_CREATED" in out
    assert "ipaas_klaviyo_events_handled_total" in out
