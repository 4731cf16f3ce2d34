"""No silent staleness: a later change of a record whose earlier change was dead-lettered is applied and the error
log says a dead letter waits; ``dlq replay --skip-superseded`` leaves out the letter a newer successful change
superseded and replays the ones whose newer change failed too."""

from __future__ import annotations

import asyncio
import json

import pytest

from consumer.catalog import EARLIER_CHANGE_DEAD_LETTERED, KLAVIYO_REJECTED_REQUEST, PROFILE_COULD_NOT_BE_CREATED
from consumer.cli import main as cli_main
from consumer.failures import headers as dl
from consumer.failures.deadletters import DeadLetter
from simulators.klaviyo import Faults, KlaviyoSimulator
from tests.support.kafka import read_all
from tests.support.service import running_service

from .conftest import (
    Watch,
    assert_everything_committed,
    customer_change,
    error_log,
    profiles_by_external_id,
    settings_for,
)

pytestmark = pytest.mark.kafka

SUPERSEDED, BOTH_FAILED = "c-superseded", "c-both-failed"


async def test_a_later_change_is_applied_with_a_warning_and_replay_skips_the_letter_it_superseded(
    kafka_bootstrap: str, unique: str, klaviyo_sim: KlaviyoSimulator, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(kafka_bootstrap, unique, klaviyo_sim)
    async with running_service(settings) as svc:
        watch = Watch.on(svc)

        async def one(change: tuple[object, ...], outcome: str, rejected: bool = False) -> None:
            if rejected:  # Klaviyo refuses the profile this once (400: the record's own failure)
                klaviyo_sim.faults = Faults(fail_next=[400], operations=["create_profile"])
            count = len(watch.finished)
            await svc.send("customer-changes", [change])
            await watch.count(count + 1)
            assert watch.finished[-1][2] == outcome

        await one(customer_change(SUPERSEDED, 0, email_address="not-an-email"), "dead_lettered")
        await one(customer_change(BOTH_FAILED, 0), "dead_lettered", rejected=True)
        await one(customer_change(SUPERSEDED, 1), "succeeded")  # applied: with a warning
        await one(customer_change(BOTH_FAILED, 1), "dead_lettered", rejected=True)  # no warning: it failed
        letters = await svc.dead_letters("customer-changes", expected=3)
        await assert_everything_committed(svc, "customer-changes")

        # replay, leaving out what a newer successful change superseded (the service keeps running)
        monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
        monkeypatch.setenv("IPAAS_KLAVIYO_TOPIC_PREFIX", settings.topic_prefix)
        capsys.readouterr()
        code = await asyncio.to_thread(cli_main, ["dlq", "replay", "--topic", "customer-changes",
                                                  "--skip-superseded", "--json"])
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0, summary
        await watch.count(6)  # the two replayed changes of the key whose newer change failed too

    assert (summary["replayed"], summary["superseded"], summary["skipped"]) == (2, 1, 0)
    assert sorted(letter.key for letter in letters) == sorted(key.encode() for key in (SUPERSEDED, BOTH_FAILED,
                                                                                       BOTH_FAILED))
    codes = {dl.decoded_headers(letter.headers)[dl.ERROR_CODE] for letter in letters}
    assert codes == {PROFILE_COULD_NOT_BE_CREATED.code, KLAVIYO_REJECTED_REQUEST.code}
    replayed = [record.key for record in await read_all(kafka_bootstrap, svc.topic("customer-changes"), 6)
                if any(name == dl.REPLAY_COUNT for name, _ in record.headers)]
    assert replayed == [BOTH_FAILED.encode()] * 2  # nothing was sent again for the superseded key
    assert [outcome for _, _, outcome in watch.finished[4:]] == ["succeeded"] * 2
    profiles = profiles_by_external_id(klaviyo_sim)
    assert profiles[SUPERSEDED]["last_name"] == "v1" and profiles[BOTH_FAILED]["last_name"] == "v1"

    warnings = [r for r in await error_log(svc) if r["code"] == EARLIER_CHANGE_DEAD_LETTERED.code]
    [warning] = warnings  # for the later change of the superseded key only; none for the replays
    first_letter = DeadLetter.from_record(next(letter for letter in letters if letter.key == SUPERSEDED.encode()))
    assert warning["severity"] == "warning" and warning["dead_lettered"] is False and warning["flow"] == "service"
    assert warning["transfer"] == {"kind": "customer", "id": SUPERSEDED, "event_type": "customer/updated"}
    assert warning["message"].startswith(EARLIER_CHANGE_DEAD_LETTERED.message + " (")
    assert f"offset {first_letter.original_offset} of {svc.topic('customer-changes')}" in warning["detail"]
    assert PROFILE_COULD_NOT_BE_CREATED.code in warning["detail"]
    assert warning["what_to_do"] == EARLIER_CHANGE_DEAD_LETTERED.action
