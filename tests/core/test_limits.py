"""The client-wide limiter and thrifty polling: decisions on a fake clock, then a burst of
generations against the emulator's enforced rate limits, and durations kept between processes."""

from __future__ import annotations

import itertools
import json
import random
import threading
from pathlib import Path

import pytest

from flux_tools import DurationStats, PollSchedule, RateLimiter, RateLimits, Settings
from flux_tools._domain.polling import (
    PRIOR_PROBE,
    PRIOR_READS_FACTOR,
    expected_reads,
    prior_samples,
)
from flux_tools._drivers.durations import DurationStore, durations_for_api
from flux_tools._settings.settings import default_cache_dir, rate_limits_from_env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_gets_slots_spread_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(create_burst=10, safety=0, jitter=0), clock=clock)
    delays = [limiter.acquire("create") for _ in range(30)]
    assert delays[:10] == [0.0] * 10  # the burst goes at once
    later = delays[10:]
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(later))
    assert later[0] == pytest.approx(0.1)
    # Creates and reads are separate budgets: a read is not queued behind the creates.
    assert limiter.acquire("get") == 0.0
    # Once the time has passed, the bucket refills up to its burst, no more.
    clock.now += 60
    assert [limiter.acquire("create") for _ in range(11)][-1] == pytest.approx(0.1)


def test_the_budget_holds_over_a_minute_at_any_number_waiting() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(read_burst=50, safety=0, jitter=0), clock=clock)
    send_times = sorted(clock.now + limiter.acquire("get") for _ in range(10_000))
    # In any 60 s window, at most the rate plus the burst.
    start = 0
    for end, t in enumerate(send_times):
        while send_times[start] <= t - 60:
            start += 1
        assert end - start + 1 <= 3000 + 50


def test_a_slot_is_never_after_the_deadline() -> None:
    clock = Clock()
    limiter = RateLimiter(
        RateLimits(reads_per_minute=60, read_burst=1, safety=0, jitter=0), clock=clock
    )
    assert limiter.acquire("get") == 0.0
    assert limiter.acquire("get") == pytest.approx(1.0)
    assert limiter.acquire("get") == pytest.approx(2.0)
    # The next slot is 3 s away, but this request must go within 0.5 s: it goes then.
    assert limiter.acquire("get", deadline=clock.now + 0.5) == pytest.approx(0.5)
    # ...and the slot it borrowed is paid back by the requests behind it.
    assert limiter.acquire("get") == pytest.approx(4.0)
    assert limiter.acquire("get", deadline=clock.now - 5) == 0.0  # a past deadline: now


def test_a_429_pauses_the_budget_for_retry_after_and_slows_it() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(create_burst=1, safety=0, jitter=0), clock=clock)
    assert limiter.acquire("create") == 0.0
    limiter.observe("create", 429, {"retry-after": "3"})
    assert limiter.acquire("create") == pytest.approx(3.0)
    second = limiter.acquire("create")
    assert second - 3.0 == pytest.approx(0.2)  # the rate halved: 0.2 s apart, not 0.1
    assert limiter.stats().throttled["create"] == 1
    for _ in range(200):  # successes win the rate back
        limiter.observe("create", 201, {})
    clock.now += 60
    limiter.acquire("create")
    assert limiter.acquire("create") == pytest.approx(0.1)
    # The read budget was never touched by the create's 429.
    assert limiter.acquire("get") == 0.0


def test_ratelimit_remaining_drains_the_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(read_burst=50, safety=0, jitter=0), clock=clock)
    limiter.observe("get", 200, {"ratelimit-remaining": "2", "ratelimit-reset": "40"})
    delays = [limiter.acquire("get") for _ in range(4)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2] == pytest.approx(0.02) and delays[3] == pytest.approx(0.04)
    # Nonsense headers are ignored.
    limiter.observe("get", 200, {"ratelimit-remaining": "-4", "ratelimit-reset": "x"})
    assert limiter.acquire("get") == pytest.approx(0.06)
    # More left than the bucket believes: the account allows a bigger burst, which is learned
    # (less the requests still in flight, less a margin).
    limiter.observe("get", 200, {"ratelimit-remaining": "400"})
    delays = [limiter.acquire("get") for _ in range(400)]
    immediate = delays.index(next(d for d in delays if d > 0))
    assert 300 <= immediate < 400 and delays[immediate] == pytest.approx(0.02)


def _burst_answered_out_of_order(limiter: RateLimiter, burst: int, sent: int, seed: int) -> None:
    """``sent`` requests booked at once, taken by the server (a bucket of ``burst``) in some
    order, their answers read in another: each says what the server had left after it."""
    rng = random.Random(seed)
    processed = list(range(sent))
    rng.shuffle(processed)  # the order they reached the server
    remaining = {request: burst - 1 - i for i, request in enumerate(processed)}
    answered = list(range(sent))
    rng.shuffle(answered)  # the order their answers are read
    for request in answered:
        limiter.observe("create", 201, {"ratelimit-remaining": str(remaining[request])})


@pytest.mark.parametrize("seed", range(5))
def test_a_burst_answered_out_of_order_keeps_the_rest_of_the_bucket(seed: int) -> None:
    """Half a bucket sent at once, the server's counts read in any order: the other half still
    goes at once. (The count less every request in flight, a lower bound, drained the bucket
    on the first answer read late: three replicas spent seconds below the account's rate.)"""
    clock = Clock()
    limiter = RateLimiter(RateLimits(create_burst=100, safety=0, jitter=0), clock=clock)
    assert [limiter.acquire("create") for _ in range(50)] == [0.0] * 50
    _burst_answered_out_of_order(limiter, 100, 50, seed)
    rest = [limiter.acquire("create") for _ in range(51)]
    assert rest[:50] == [0.0] * 50 and rest[50] == pytest.approx(0.1)


def test_a_count_below_what_any_order_explains_still_drains() -> None:
    """Another client spends the account: an answer says 5 left while 20 of ours are in
    flight. The bucket holds at most those 5."""
    clock = Clock()
    limiter = RateLimiter(RateLimits(create_burst=100, safety=0, jitter=0), clock=clock)
    for _ in range(20):
        limiter.acquire("create")
    limiter.observe("create", 201, {"ratelimit-remaining": "5"})
    delays = [limiter.acquire("create") for _ in range(7)]
    assert delays[:5] == [0.0] * 5 and delays[5] == pytest.approx(0.1)


def _rejected_on_arrival(limits: RateLimits, rate: str, seed: int, late: float) -> int:
    """Send 40 creates on the limiter's schedule; each reaches the server (the emulator's own
    token bucket) up to ``late`` seconds after it was sent. How many does the server refuse?"""
    from flux_tools.emulator._ratelimit import RateLimit, _TokenBucket

    clock = Clock()
    start = clock.now
    limiter = RateLimiter(limits, clock=clock)
    sent = [clock.now + limiter.acquire("create") for _ in range(40)]
    rng = random.Random(seed)
    # The worst case for a token bucket: some requests late by the whole allowance, the rest
    # on time, so a later one overtakes an earlier one.
    arrivals = sorted(t + (late if rng.random() < 0.5 else 0.0) for t in sent)
    server = _TokenBucket(RateLimit.parse(rate), start)
    return sum(1 for t in arrivals if not server.take(t).allowed)


@pytest.mark.parametrize(
    ("rate", "burst"), [("120/60:burst=4", 4), ("240/60:burst=6", 6), ("6/60:burst=1", 1)]
)
def test_requests_arriving_off_their_slot_still_fit_the_server_bucket(
    rate: str, burst: int
) -> None:
    per_minute = float(rate.split("/")[0])
    limits = RateLimits(creates_per_minute=per_minute, create_burst=burst, jitter=0.1)
    # Late by up to the jitter allowance, in any pattern: never refused.
    assert [_rejected_on_arrival(limits, rate, seed, late=0.1) for seed in range(50)] == [0] * 50
    # After a burst the rate margin alone does not cover it: without the allowance some are
    # refused. (A burst of 1 at 6 a minute: the 5 % margin is 0.5 s, more than the delay.)
    bare = RateLimits(creates_per_minute=per_minute, create_burst=burst, jitter=0)
    refused = sum(_rejected_on_arrival(bare, rate, seed, late=0.1) for seed in range(50))
    assert refused > 0 if burst > 1 else refused == 0


def test_the_jitter_allowance_costs_one_short_wait_per_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(create_burst=10, safety=0, jitter=0.1), clock=clock)
    delays = [limiter.acquire("create") for _ in range(12)]
    assert delays[:9] == [0.0] * 9  # most of the burst still goes at once
    assert delays[9:] == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    # A burst of 1: the first request is not delayed, each next one waits the jitter more.
    single = RateLimiter(RateLimits(creates_per_minute=6, create_burst=1, safety=0), clock=clock)
    assert [single.acquire("create") for _ in range(3)] == [
        0.0,
        pytest.approx(10.1),
        pytest.approx(20.2),
    ]
    with pytest.raises(ValueError, match="jitter"):
        RateLimits(jitter=-1)


def test_a_burst_is_not_learned_while_throttled() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(create_burst=2, safety=0, jitter=0), clock=clock)
    limiter.acquire("create")
    limiter.observe("create", 429, {"retry-after": "1"})
    limiter.acquire("create")
    limiter.observe("create", 201, {"ratelimit-remaining": "500"})
    assert limiter.acquire("create") > 0


def test_limits_from_the_environment_are_checked() -> None:
    limits = rate_limits_from_env({"FLUX_CREATES_PER_MINUTE": "6"})
    assert limits.creates_per_minute == 6 and limits.create_burst == 1
    assert limits.reads_per_minute == 3000
    with pytest.raises(ValueError, match="FLUX_READS_PER_MINUTE"):
        rate_limits_from_env({"FLUX_READS_PER_MINUTE": "lots"})
    with pytest.raises(ValueError, match="FLUX_CREATES_PER_MINUTE"):
        rate_limits_from_env({"FLUX_CREATES_PER_MINUTE": "0"})


def test_the_read_price_comes_from_the_read_budget() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.poll_reads() == 2.5  # half of the 3000 / 600 reads a create allows
    scarce = RateLimiter(RateLimits(creates_per_minute=600, reads_per_minute=1200), clock=clock)
    assert scarce.poll_reads() == 1.0
    limiter.observe("get", 429, {"retry-after": "1"})
    assert limiter.poll_reads() < 2.5  # throttled reads: plan fewer
    # A plan bounded by a read budget spends at most that many reads, and a bigger budget
    # buys a denser plan.
    samples = [3.0 + random.Random(i).uniform(-0.5, 0.5) for i in range(32)]
    stats = DurationStats()
    for s in samples:
        stats.observe("m", s)
    schedule = PollSchedule()
    tight = stats.plan("m", schedule, reads=2.5)
    loose = stats.plan("m", schedule, reads=6.0)
    assert tight is not None and loose is not None
    assert expected_reads(tight, samples, schedule) <= 2.5
    assert len(loose) > len(tight)


def test_a_prior_plans_the_first_generation() -> None:
    schedule = PollSchedule()
    assert DurationStats().plan("m", schedule) is None  # no prior: the quick back-off
    stats = DurationStats(prior=lambda model: 6.0 if model == "m" else None)
    plan = stats.plan("m", schedule, reads=2.5)
    assert plan is not None
    # One early read in case the prior is far off, then none before the model usually ends.
    assert plan[0] == pytest.approx(6.0 * PRIOR_PROBE)
    assert plan[1] >= 0.7 * 6.0
    # Uncertain: more reads than a learned plan gets, within PRIOR_READS_FACTOR times.
    prior_reads = expected_reads(plan[1:], prior_samples(6.0, stats.plan_samples), schedule)
    assert 2.5 < prior_reads <= 2.5 * PRIOR_READS_FACTOR
    # Once one duration is seen, the prior's spread moves to it.
    stats.observe("m", 1.0)
    moved = stats.plan("m", schedule, reads=2.5)
    assert moved is not None and moved[0] < 1.0 < moved[-1] < 2.0
    assert stats.plan("unknown", schedule, reads=2.5) is None
    # Learned samples replace the prior as they come.
    for _ in range(stats.plan_samples):
        stats.observe("m", 1.0)
    learned = stats.plan("m", schedule, reads=2.5)
    assert learned is not None and learned[-1] < 2.0


def test_the_registry_gives_every_model_a_prior() -> None:
    from flux_tools import MODELS
    from flux_tools._domain.polling import registry_typical_seconds

    for name in MODELS:
        typical = registry_typical_seconds(name)
        assert typical is not None and 0 < typical < 120, name
    assert registry_typical_seconds("someone/unknown-model") is None


def test_durations_are_kept_between_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert Settings.from_env().cache_dir == tmp_path / "cache"
    first = durations_for_api("https://gateway.example/replicate/v1")
    for value in (2.9, 3.1, 3.0):
        first.observe("acme/model", value)
    first.flush()
    path = tmp_path / "cache" / "durations.json"
    saved = json.loads(path.read_text())
    assert saved["durations"]["gateway.example acme/model"]["samples"] == [2.9, 3.1, 3.0]
    assert [p.name for p in path.parent.iterdir()] == ["durations.json"]  # no temp file left

    fresh = durations_for_api("https://gateway.example/other/base")
    assert fresh.samples("acme/model") == [2.9, 3.1, 3.0]
    # Another API host's durations are its own.
    assert durations_for_api("https://api.replicate.com/v1").samples("acme/model") == []
    # Two processes saving: each one's models survive the other's write.
    other = durations_for_api("https://gateway.example/v1")
    other.observe("acme/second", 8.0)
    other.flush()
    keys = set(json.loads(path.read_text())["durations"])
    assert keys == {"gateway.example acme/model", "gateway.example acme/second"}


@pytest.mark.parametrize(
    "content", ["{not json", '{"version": 99, "durations": {}}', '["a list"]', ""]
)
def test_a_corrupt_durations_file_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "durations.json"
    path.write_text(content)
    stats = DurationStats(store=DurationStore(path), namespace="h")
    assert stats.samples("m") == []
    stats.observe("m", 4.0)
    stats.flush()  # and replaced by a good one
    assert DurationStats(store=DurationStore(path), namespace="h").samples("m") == [4.0]


def test_odd_entries_in_the_file_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    samples = [1.5, "x", -3, True, 1e9, 2.5]
    path.write_text(json.dumps({"version": 1, "durations": {"h m": {"samples": samples}}}))
    assert DurationStats(store=DurationStore(path), namespace="h").samples("m") == [1.5, 2.5]


def test_duration_stats_serve_many_threads() -> None:
    """Issue 10: one client serving several threads raised 'deque mutated during iteration'."""
    stats = DurationStats()
    schedule = PollSchedule()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                stats.observe("m", 3 + rng.random())
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(300):
                stats.window("m")
                stats.plan("m", schedule)
                stats.samples("m")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stats.samples("m")) == stats.size
