"""No key or token ever shows up in an exception, a repr or a log record, whatever fails."""

from __future__ import annotations

import logging

import pytest

from consumer.catalog import CatalogError
from consumer.http.ratelimit import LimiterRegistry
from consumer.klaviyo import BearerTokenAuth, NewEvent, ProfileAttributes
from simulators.klaviyo import ApiKeyGrant, Faults, KlaviyoSimulator
from tests.support.klaviyo_oauth import SimulatorTokenProvider
from tests.support.sleeps import RecordedSleeps

from .conftest import MakeClient

SECRET_KEY = "pk_S3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr"
WRONG_KEY = "pk_Wr0ngWr0ngWr0ngWr0ngWr0ngWr0ngWr0n"


def texts_of(record: logging.LogRecord) -> list[str]:
    return [record.getMessage(), *(str(v) for v in record.__dict__.values())]


async def test_no_secret_in_logs_exceptions_or_reprs(
    make_client: MakeClient, simulator: KlaviyoSimulator, caplog: pytest.LogCaptureFixture, sleeps: RecordedSleeps
) -> None:
    caplog.set_level(logging.DEBUG, logger="consumer.klaviyo")
    simulator.config.api_keys[SECRET_KEY] = ApiKeyGrant()
    virtual_time = LimiterRegistry(clock=sleeps.clock, sleep=sleeps)  # a 429's Retry-After is recorded, not waited
    client = make_client(api_key=SECRET_KEY, max_retries=1, read_timeout_s=0.2, limiters=virtual_time)
    wrong = make_client(api_key=WRONG_KEY)
    provider = SimulatorTokenProvider(simulator.base_url)
    bearer = make_client(auth=BearerTokenAuth(provider), max_retries=0)
    failures: list[BaseException] = []

    async def attempt(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except CatalogError as exc:
            failures.append(exc)

    try:
        await client.create_profile(ProfileAttributes(email="s@shop.test"))
        await attempt(client.create_profile(ProfileAttributes(email="s@shop.test")))  # 409
        await attempt(client.create_profile(ProfileAttributes(email="bad", phone_number="1")))  # 400
        await attempt(wrong.get_profile("x"))  # 401
        for faults in (Faults(fail_next=[503, 503]), Faults(fail_next=[429, 429]), Faults(drop_next=2),
                       Faults(hang_next=2, hang_s=5), Faults(challenge_next=1), Faults(fail_next=[502, 502])):
            simulator.faults = faults
            await attempt(client.create_event(NewEvent(metric="M", profile=ProfileAttributes(email="s@shop.test"))))
        await bearer.create_profile(ProfileAttributes(email="b@shop.test"))
        simulator.state.oauth.expire_access_tokens()
        simulator.faults = Faults(fail_next=[500])
        await attempt(bearer.get_profile("missing"))
        tokens = [t for t in (provider.access, provider.refresh) if t] + provider.refresh_calls
    finally:
        await provider.aclose()

    assert len(failures) == 10
    secrets = [SECRET_KEY, WRONG_KEY, *tokens]
    assert len(secrets) >= 4
    texts = [text for exc in failures for text in (str(exc), repr(exc), str(exc.__dict__))]
    texts += [repr(client), repr(wrong), repr(bearer), repr(client._auth)]
    texts += [text for record in caplog.records for text in texts_of(record)]
    texts += [str(r.to_dict()) for r in simulator.received()]
    assert len(caplog.records) > 10
    for secret in secrets:
        leaks = [text for text in texts if secret in text]
        assert not leaks, f"secret leaked: {leaks[:2]}"
    assert any(isinstance(exc, CatalogError) and exc.http_status == 401 for exc in failures)
