"""The sliding-window limiter, driven by a fake clock: no real sleeping."""

import asyncio

import pytest

from consumer.http.ratelimit import LimiterRegistry, SlidingWindowLimiter, Window


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(fake: FakeTime, *windows: Window, margin_s: float = 0.0) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(windows, margin_s=margin_s, clock=fake.clock, sleep=fake.sleep)


async def test_burst_window_admits_its_limit_then_waits_for_the_oldest_to_expire() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(3, 1.0))
    times = []
    for _ in range(7):
        await lim.acquire()
        times.append(fake.now - 1000.0)
    assert times == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]


async def test_no_interval_of_the_window_length_ever_holds_more_than_the_limit() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(5, 1.0), Window(12, 10.0))
    stamps = []
    for i in range(40):
        fake.now += 0.07 * (i % 3)  # irregular arrivals
        await lim.acquire()
        stamps.append(fake.now)
    for window in lim.windows:
        for start in stamps:
            inside = [t for t in stamps if start <= t < start + window.seconds]
            assert len(inside) <= window.limit


async def test_steady_window_dominates_after_the_burst() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(10, 1.0), Window(15, 60.0))
    for _ in range(15):
        await lim.acquire()
    assert fake.now - 1000.0 == pytest.approx(1.0)  # 10 at once, 5 more after the burst second
    waited = await lim.acquire()
    assert waited == pytest.approx(59.0)  # the 16th waits for the steady window


async def test_margin_is_added_to_every_window() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(1, 1.0), margin_s=0.25)
    await lim.acquire()
    assert await lim.acquire() == pytest.approx(1.25)


async def test_block_for_holds_everyone_and_never_shortens() -> None:
    fake = FakeTime()
    lim = limiter(fake)  # no windows: only penalties
    lim.block_for(5.0)
    lim.block_for(2.0)
    assert lim.delay() == pytest.approx(5.0)
    assert await lim.acquire() == pytest.approx(5.0)
    assert await lim.acquire() == 0.0


async def test_advertised_policies_lower_the_configured_windows_but_never_raise_them() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(10, 1.0), Window(100, 60.0))
    lim.observe(policies=[Window(5, 1.0), Window(500, 60.0)])
    assert set(lim.windows) == {Window(5, 1.0), Window(100, 60.0)}
    lim.observe(policies=[Window(8, 1.0)])
    assert set(lim.windows) == {Window(8, 1.0), Window(100, 60.0)}


async def test_an_unknown_advertised_window_is_adopted() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(10, 1.0))
    lim.observe(policies=[Window(2, 0.5)])
    assert Window(2, 0.5) in lim.windows


async def test_remaining_zero_waits_out_the_reset() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(10, 1.0))
    lim.observe(remaining=3, reset_s=30)
    assert lim.delay() == 0.0
    lim.observe(remaining=0, reset_s=30)
    assert lim.delay() == pytest.approx(30.0)


async def test_waiters_are_served_in_arrival_order() -> None:
    fake = FakeTime()
    lim = limiter(fake, Window(1, 1.0))
    order: list[int] = []

    async def take(i: int) -> None:
        await lim.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert fake.now - 1000.0 == pytest.approx(4.0)


async def test_cancelled_waiter_takes_no_slot() -> None:
    lim = SlidingWindowLimiter([Window(1, 60.0)])
    await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert lim.delay() > 0  # still only the first acquisition counts
    assert len(lim._log) == 1


def test_window_validation() -> None:
    with pytest.raises(ValueError):
        Window(0, 1.0)
    with pytest.raises(ValueError):
        Window(1, 0.0)


def test_registry_shares_limiters_by_key() -> None:
    registry = LimiterRegistry()
    first = registry.get(("acct", "create_event"), [Window(5, 1.0)])
    again = registry.get(("acct", "create_event"), [Window(99, 1.0)])
    other = registry.get(("acct", "get_profile"), [Window(5, 1.0)])
    assert first is again and first is not other
    assert first.windows == (Window(5, 1.0),)
    assert len(registry) == 2


async def test_an_unpredicted_429_lowers_the_rate_once_per_block_and_successes_restore_it() -> None:
    fake = FakeTime()
    lim = SlidingWindowLimiter([Window(100, 1.0), Window(1000, 60.0)], decrease=0.5, recovery=0.25,
                               clock=fake.clock, sleep=fake.sleep)
    lim.throttled(2.0)
    lim.throttled(2.0)  # the same storm: one decrease only
    assert lim.scale == 0.5 and lim.windows == (Window(50, 1.0), Window(1000, 60.0))  # the burst window only
    assert lim.delay() == pytest.approx(2.0)
    fake.now += 2.0
    lim.throttled(1.0)  # a new episode
    assert lim.scale == 0.25 and lim.windows[0] == Window(25, 1.0)
    for expected in (0.5, 0.75, 1.0, 1.0):
        lim.succeeded()
        assert lim.scale == expected
    assert lim.windows == (Window(100, 1.0), Window(1000, 60.0))


async def test_throttled_without_windows_only_blocks() -> None:
    fake = FakeTime()
    lim = limiter(fake)
    lim.throttled(3.0)
    assert lim.scale == 1.0 and lim.delay() == pytest.approx(3.0)


def test_invalid_adaptation_parameters() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter([], decrease=0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter([], margin_s=-1)


def test_a_quota_share_scales_every_window_of_every_limiter_now_and_later():
    registry = LimiterRegistry()
    early = registry.get("profiles", [Window(75, 1.0), Window(750, 60.0)])
    registry.set_share(1 / 3)
    late = registry.get("events", [Window(350, 1.0), Window(3500, 60.0)])
    assert early.windows == (Window(25, 1.0), Window(250, 60.0))
    assert late.windows == (Window(116, 1.0), Window(1166, 60.0))
    registry.set_share(1.0)
    assert early.windows == (Window(75, 1.0), Window(750, 60.0))
    with pytest.raises(ValueError):
        early.set_share(0)
