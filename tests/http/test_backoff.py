import random

import pytest

from consumer.http.backoff import Backoff


def test_ceiling_grows_exponentially_and_is_capped() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0)
    assert [backoff.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert Backoff(base_s=1.0, cap_s=30.0).ceiling(10_000) == 30.0


def test_full_jitter_stays_within_zero_and_the_ceiling_and_spreads() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0)
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(500)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 7.0  # full jitter uses the whole range


@pytest.mark.parametrize("kwargs", [{"base_s": -1}, {"cap_s": -1}, {"multiplier": 0.5}])
def test_invalid_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
