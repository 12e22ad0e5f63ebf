"""Polls priced by how busy the account is, and beliefs that give way fast (issue 22): the
planner's decisions on a fake clock, then the wait loop itself against a scripted server. No
sockets: the benchmarks measure the same against the emulator and the official client."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from flux_tools import DurationStats, PollSchedule, RateLimiter
from flux_tools._domain.beliefs import (
    STALE_AFTER,
    TAIL_STEP,
    Belief,
    contradicts,
    plan_polls,
)
from flux_tools._domain.load import MAX_READ_ALLOWANCE, DecayingRate, read_allowance
from flux_tools._domain.polling import RetryPolicy, expected_reads
from flux_tools._drivers.durations import DurationStore
from flux_tools._protocol.actions import Call, Reply
from flux_tools._protocol.flows import PredictionFlows

from .test_protocol import BASE, FakeClock, drive

MODEL = "black-forest-labs/flux-pro"
SCHEDULE = PollSchedule()


def learned(centre: float, count: int = 32, prior: float | None = None) -> DurationStats:
    rng = random.Random(1)
    stats = DurationStats(prior=None if prior is None else lambda model: prior)
    for _ in range(count):
        stats.observe(MODEL, centre * rng.uniform(0.9, 1.1))
    return stats


def lag_and_reads(plan: tuple[float, ...], duration: float) -> tuple[float, int]:
    """The added latency and the reads of a prediction of ``duration`` seconds on ``plan``."""
    elapsed, previous, reads = 0.0, None, 0
    while True:
        previous = SCHEDULE.next_delay(elapsed, previous, plan=plan)
        elapsed += previous
        reads += 1
        if elapsed >= duration:
            return elapsed - duration, reads


def outcome(plan: tuple[float, ...], centre: float) -> tuple[float, float]:
    """Median added latency and mean reads over durations within ±10 % of ``centre``."""
    rng = random.Random(9)
    runs = [lag_and_reads(plan, centre * rng.uniform(0.9, 1.1)) for _ in range(200)]
    return statistics.median(r[0] for r in runs), statistics.mean(r[1] for r in runs)


def busy(clock: FakeClock, limiter: RateLimiter, share: float, seconds: float = 120) -> None:
    """Creates at ``share`` of the account's create rate for ``seconds``, each polled 2.5 times."""
    interval = 60 / limiter.limits.creates_per_minute / share
    for _ in range(int(seconds / interval)):
        clock.now += interval
        limiter.acquire("create")
        for _ in range(2):
            limiter.acquire("get")
        limiter.observe("create", 201, {})


# -- polls priced by how busy the account is ----------------------------------------------------


def test_an_idle_account_polls_densely_near_the_expected_end() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.acquire("create")  # one person, one image
    assert limiter.utilization() < 0.01
    allowance = limiter.read_allowance()
    assert allowance == MAX_READ_ALLOWANCE > 10 * limiter.poll_reads()
    stats = learned(5.0)
    idle = stats.plan(MODEL, SCHEDULE, reads=allowance)
    thrift = stats.plan(MODEL, SCHEDULE, reads=limiter.poll_reads())
    assert idle is not None and thrift is not None
    # Dense where predictions of this model finish (4.5-5.5 s), denser toward its end.
    band = [t for t in idle if 4.4 <= t <= 5.6]
    gaps = [b - a for a, b in itertools.pairwise(band)]
    assert len(band) >= 6 and max(gaps) <= 0.3 and gaps[-1] < gaps[0]
    idle_lag, idle_reads = outcome(idle, 5.0)
    thrift_lag, thrift_reads = outcome(thrift, 5.0)
    # A fixed 0.5 s poller: ~250 ms and ~11 reads here. Idle: well under half of both.
    assert idle_lag < 0.1 and idle_reads < 5.5
    assert thrift_lag > 1.5 * idle_lag and thrift_reads < idle_reads
    # The read budget is a rate: a model twice as long may spread about twice the reads.
    _, long_reads = outcome(learned(10.0).plan(MODEL, SCHEDULE, reads=allowance) or (), 10.0)
    assert 1.5 * idle_reads < long_reads < 2.5 * idle_reads


def test_a_busy_account_returns_to_todays_thrift() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    busy(clock, limiter, share=0.5)
    half = limiter.read_allowance()
    assert 0.4 < limiter.utilization() < 0.6
    assert limiter.poll_reads() < half < 3 * limiter.poll_reads()
    busy(clock, limiter, share=1.0)
    assert limiter.utilization() > 0.9
    assert limiter.read_allowance() == limiter.poll_reads() == 2.5
    stats = learned(3.0)
    plan = stats.plan(MODEL, SCHEDULE, reads=limiter.read_allowance())
    assert plan is not None
    samples = stats.samples(MODEL)
    assert expected_reads(plan, samples, SCHEDULE) <= 2.5 * 1.05  # 2.5 by the smoothed belief
    # Throttled reads make it busier still: never below the thrift of the read budget.
    limiter.observe("get", 429, {"retry-after": "1"})
    assert limiter.read_allowance() == limiter.poll_reads() < 2.5
    # Quiet again: the recent load fades and reads get cheap.
    clock.now += 600
    assert limiter.utilization() < 0.01 and limiter.read_allowance() == MAX_READ_ALLOWANCE


def test_the_allowance_is_a_pure_function_of_the_budgets_state() -> None:
    """What a limiter shared by several processes (Redis) computes from the same numbers."""
    assert read_allowance(2.5, 0.0) == MAX_READ_ALLOWANCE
    assert read_allowance(2.5, 1.0) == read_allowance(2.5, 3.0) == 2.5
    values = [read_allowance(2.5, busy / 20) for busy in range(1, 21)]
    assert values == sorted(values, reverse=True)
    assert len(set(values)) < len(values)  # in steps, so that plans are kept per step
    rate = DecayingRate(tau=30)
    for k in range(600):
        rate.add(k * 0.1)  # ten a second for a minute
    assert 8 < rate.rate(60) < 10
    assert rate.rate(60 + 90) < 0.6  # three windows later: nearly forgotten


# -- beliefs that give way fast ------------------------------------------------------------------


def test_a_wrong_prior_gives_way_to_the_first_observation() -> None:
    stats = DurationStats(prior=lambda model: 10.0)  # the registry's flux-pro, on a 3 s gateway
    first = stats.plan(MODEL, SCHEDULE, reads=MAX_READ_ALLOWANCE)
    assert first is not None
    assert sum(8 <= t <= 12.5 for t in first) > sum(2.5 <= t <= 4 for t in first)
    stats.observe(MODEL, 3.2)
    after = stats.plan(MODEL, SCHEDULE, reads=MAX_READ_ALLOWANCE)
    assert after is not None
    lag, reads = outcome(after, 3.2)
    assert lag < 0.1 and reads < 7  # planned around what was seen, not around 10 s
    assert not [t for t in after if 6 <= t <= 9.5]


def test_a_stale_learned_duration_gives_way_to_one_observation_far_outside() -> None:
    stats = learned(2.0, prior=2.0)  # learned before the gateway slowed down
    before = stats.plan(MODEL, SCHEDULE, reads=MAX_READ_ALLOWANCE)
    stats.observe(MODEL, 2.15)  # within what was learned: one more sample
    assert len(stats.samples(MODEL)) == 32
    stats.observe(MODEL, 3.2)  # far outside: it takes over at once
    assert stats.samples(MODEL) == [3.2]
    after = stats.plan(MODEL, SCHEDULE, reads=MAX_READ_ALLOWANCE)
    assert before is not None and after is not None
    lag_before, _ = outcome(before, 3.2)
    lag_after, reads_after = outcome(after, 3.2)
    assert lag_after < 0.1 and reads_after < 7 and lag_after < lag_before
    # Faster too: a gateway that sped up is believed at once.
    assert contradicts(stats.samples(MODEL), 1.5) and not contradicts([2.0] * 10, 2.2)


def test_a_wrong_belief_never_sleeps_long() -> None:
    """The first quiet sleep is capped by the belief's doubt, and past the plan the steps stay
    short while the doubt reaches: a wrong belief costs a few polls, not seconds."""
    prior = DurationStats(prior=lambda model: 9.0).plan(MODEL, SCHEDULE, reads=64)
    sure = learned(9.0).plan(MODEL, SCHEDULE, reads=64)
    assert prior is not None and sure is not None
    # A registry's time is a guess: reads before its band (a prior 3× too long), fewer when
    # the durations were learned.
    early = [t for t in prior if t < 0.7 * 9]
    assert len(early) >= 3 and early[0] <= 0.25 * 9 + 1e-9
    assert len([t for t in sure if t < 0.7 * 9]) < len(early)
    # Past the band of a learned belief (9 s ± 10 %): short steps up to where a gateway that
    # slowed by half ends.
    after = [t for t in sure if t > 10.2]
    assert after and max(b - a for a, b in itertools.pairwise(after)) <= TAIL_STEP + 1e-9
    assert after[-1] >= 1.5 * 9
    # A prior 3× too long, and 3× too short: seconds of waiting are now a fraction of one.
    assert outcome(prior, 3.0)[0] < 1.0
    assert outcome(prior, 27.0)[0] < 0.5


def test_old_durations_are_doubted_more(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    entry = {"samples": [5.0] * 32, "updated": 0.0}  # saved long ago
    path.write_text(json.dumps({"version": 1, "durations": {"h m": entry}}))
    old = DurationStats(store=DurationStore(path), namespace="h")
    assert old.samples("m") == [5.0] * 32
    fresh = Belief.learned([5.0] * 32)
    stale = Belief.learned([5.0] * 32, age=STALE_AFTER + 1)
    assert stale.doubt > fresh.doubt
    plan_old = old.plan("m", SCHEDULE, reads=64)
    plan_new = learned(5.0).plan(MODEL, SCHEDULE, reads=64)
    assert plan_old is not None and plan_new is not None
    assert len([t for t in plan_old if t < 4.5]) >= len([t for t in plan_new if t < 4.5])
    # Once this process sees one, the samples are its own again.
    old.observe("m", 5.1)
    assert old.samples("m")[-1] == 5.1


def test_a_plan_is_dense_where_sure_and_sparse_across_the_doubt() -> None:
    belief = Belief.learned([3.0 + 0.01 * i for i in range(30)])
    plan = plan_polls(belief, 0.01, minimum=0.05)
    inside = [t for t in plan if 2.95 <= t <= 3.35]
    before = [t for t in plan if t < 2.9]
    assert len(inside) > 2 * len(before)


# -- the wait loop: a wrong prior, then the first observation ------------------------------------


def run_one(flows: PredictionFlows, clock: FakeClock, duration: float) -> tuple[float, int]:
    """One prediction of ``duration`` seconds waited for: added latency, and reads sent."""
    created = clock.now
    done_at = created + duration
    reads = 0

    def server(call: Call) -> Reply:
        nonlocal reads
        reads += 1
        stamp = "2026-01-01T00:00:%06.3fZ"
        body: dict[str, Any] = {"id": "p1", "model": MODEL, "created_at": stamp % 0}
        if clock.now >= done_at:
            body.update(status="succeeded", output="https://cdn.example/x.webp")
            body["completed_at"] = stamp % duration
        else:
            body["status"] = "processing"
        return Reply(200, {}, json.dumps(body).encode())

    drive(flows.wait("p1", started=created, timeout=120), clock, server)
    return clock.now - done_at, reads


@pytest.mark.parametrize("prior", [9.0, 1.0])
def test_the_wait_loop_gives_a_wrong_prior_up_after_one_generation(prior: float) -> None:
    clock = FakeClock()
    flows = PredictionFlows(
        base_url=BASE,
        model=MODEL,
        edit_model=MODEL,
        timeout=120,
        sync_wait=0,
        retry=RetryPolicy(),
        schedule=SCHEDULE,
        clock=clock,
        rng=random.Random(0),
        limiter=RateLimiter(clock=clock),
        durations=DurationStats(prior=lambda model: prior),
    )
    first_lag, first_reads = run_one(flows, clock, 3.1)
    # 3× off either way: under a second late (it was 4.4 s with a prior 3× too long). A prior
    # 3× too short spends about twice the reads of a 0.5 s poller on this first generation.
    assert first_lag < 1.0 and first_reads <= 16
    assert flows.durations.samples(MODEL) == [pytest.approx(3.1)]
    lags, reads = zip(*(run_one(flows, clock, d) for d in (3.0, 3.2, 2.9, 3.25)), strict=True)
    # Then planned from what was seen: a fraction of a 0.5 s poller's latency, at no more than
    # its reads (7 by 3.1 s) on average.
    assert max(lags) < 0.2 and statistics.mean(reads) <= 7


def test_other_processes_spending_the_budget_make_reads_dearer() -> None:
    """The server's ``ratelimit-remaining`` counts every client of the account: a bucket half
    spent by others makes this one's reads dearer, though it sent almost nothing itself."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.acquire("get")
    assert limiter.read_allowance() == MAX_READ_ALLOWANCE
    limiter.observe("get", 200, {"ratelimit-remaining": "600"})  # of 3000 a minute
    assert limiter.utilization() > 0.7
    assert limiter.read_allowance() < 4
