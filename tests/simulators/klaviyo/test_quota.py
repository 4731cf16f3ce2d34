from consumer.klaviyo.ratelimits import EndpointLimit
from simulators.klaviyo.quota import FixedWindowQuota

LIMIT = EndpointLimit(burst=2, steady=3, burst_window_s=1.0, steady_window_s=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fixed_windows_burst_then_steady() -> None:
    clock = Clock()
    quota = FixedWindowQuota(clock)
    charge = lambda: quota.charge("acct", [("op", LIMIT)])  # noqa: E731
    first = charge()
    assert first.allowed and first.remaining == 2 and first.reset_s == 10
    assert charge().allowed
    refused = charge()
    assert not refused.allowed and refused.retry_after_s == 1  # burst window
    clock.now = 101.0
    assert charge().allowed  # third in the steady window
    clock.now = 102.5
    refused = charge()
    assert not refused.allowed and refused.retry_after_s == 8  # steady window resets at 110
    clock.now = 110.0
    assert charge().allowed


def test_refused_requests_are_not_counted_and_classes_are_all_or_nothing() -> None:
    clock = Clock()
    quota = FixedWindowQuota(clock)
    strict = EndpointLimit(1, 1, 1.0, 10.0)
    assert quota.charge("acct", [("op", LIMIT), ("op:include", strict)]).allowed
    assert not quota.charge("acct", [("op", LIMIT), ("op:include", strict)]).allowed
    assert quota.charge("acct", [("op", LIMIT)]).allowed  # the refused call took nothing from "op"
    assert quota.charge("other", [("op", LIMIT)]).allowed


def test_headers() -> None:
    verdict = FixedWindowQuota(Clock()).charge("a", [("op", EndpointLimit(75, 750))])
    assert verdict.headers() == [("ratelimit-limit", "750, 75;w=1, 750;w=60"), ("ratelimit-remaining", "749"),
                                 ("ratelimit-reset", "20")]
