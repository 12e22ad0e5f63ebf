"""The pure decisions: terminal statuses, retries, poll schedule. No I/O, no sleeping."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from flux_tools._domain.polling import DurationStats, PollSchedule, RetryPolicy
from flux_tools._domain.prediction import is_terminal


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled", "aborted"])
def test_terminal_statuses(status: str) -> None:
    assert is_terminal(status)


@pytest.mark.parametrize("status", ["starting", "processing", "queued", "booting", ""])
def test_other_statuses_keep_waiting(status: str) -> None:
    assert not is_terminal(status)


def test_create_is_retried_only_when_surely_not_accepted() -> None:
    policy = RetryPolicy()
    assert policy.should_retry(attempt=0, idempotent=False, status=429)
    assert policy.should_retry(attempt=0, idempotent=False, sent=False)
    for status in (500, 502, 503, 504):
        assert not policy.should_retry(attempt=0, idempotent=False, status=status)
    assert not policy.should_retry(attempt=0, idempotent=False, sent=True)


def test_reads_are_retried_on_transient_failures_only() -> None:
    policy = RetryPolicy()
    for status in (429, 502, 503, 504):
        assert policy.should_retry(attempt=0, idempotent=True, status=status)
    for status in (400, 401, 404, 422, 500):
        assert not policy.should_retry(attempt=0, idempotent=True, status=status)
    assert policy.should_retry(attempt=0, idempotent=True, sent=True)
    assert not policy.should_retry(attempt=policy.max_retries, idempotent=True, status=503)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    delays = [policy.delay(n, None, rng) for n in range(6)]
    assert all(d is not None for d in delays)
    ceilings = [min(4.0, 0.5 * 2**n) for n in range(6)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))  # type: ignore[operator]
    assert len({round(d or 0, 6) for d in delays}) == 6  # jittered, not a fixed ladder
    retry_after = policy.delay(0, 3.0, rng)
    assert retry_after is not None and 3.0 <= retry_after <= 3.35
    assert policy.delay(0, policy.max_retry_after + 1, rng) is None


def test_schedule_without_knowledge_starts_quick_and_backs_off_to_a_cap() -> None:
    schedule = PollSchedule(initial=0.25, factor=1.5, cap=3.0)
    delays, previous, elapsed = [], None, 0.0
    for _ in range(12):
        previous = schedule.next_delay(elapsed, previous)
        delays.append(previous)
        elapsed += previous
    assert delays[0] == 0.25
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == 3.0
    # Fewer polls than a fixed 0.5 s poller over a 10 s generation.
    assert sum(1 for d in range(len(delays)) if sum(delays[: d + 1]) <= 10) < 10 / 0.5


def test_schedule_with_a_learned_window_sleeps_then_polls_densely() -> None:
    schedule = PollSchedule()
    window = (4.6, 5.4)
    first = schedule.next_delay(0.0, None, window)
    assert first == pytest.approx(4.6)
    inside = schedule.next_delay(4.7, first, window)
    assert inside == pytest.approx(0.1)
    after = schedule.next_delay(5.5, inside, window)
    assert inside < after <= schedule.cap
    # A very long usual duration still gets a poll every max_quiet seconds.
    assert schedule.next_delay(0.0, None, (100.0, 110.0)) == schedule.max_quiet


def test_duration_stats_learn_a_window_per_model() -> None:
    stats = DurationStats(minimum_samples=2)
    assert stats.window("m") is None
    stats.observe("m", 5.0)
    assert stats.window("m") is None
    for value in (4.6, 5.4, 5.1, 4.9):
        stats.observe("m", value)
    window = stats.window("m")
    assert window is not None
    low, high = window
    assert low <= 4.6 and 5.4 <= high < 6.0
    assert stats.window("other") is None
    stats.observe("m", -1)  # nonsense is ignored
    stats.observe("m", 99999)
    assert stats.window("m") == window


def test_even_plan_spans_the_window_at_the_window_step() -> None:
    schedule = PollSchedule()
    plan = schedule.even_plan((4.6, 5.4))
    assert plan[0] == pytest.approx(4.6) and plan[-1] == pytest.approx(5.4)
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(plan))
    # A window given as a plan is polled exactly as the window itself.
    for elapsed, previous in ((0.0, None), (4.7, 4.6), (5.5, 0.1)):
        assert schedule.next_delay(elapsed, previous, plan=plan) == pytest.approx(
            schedule.next_delay(elapsed, previous, (4.6, 5.4))
        )


def _simulate(schedule: PollSchedule, plan: tuple[float, ...], duration: float) -> list[float]:
    """The poll times a prediction of ``duration`` seconds gets under ``plan``."""
    polls: list[float] = []
    elapsed, previous = 0.0, None
    while not polls or polls[-1] < duration:
        previous = schedule.next_delay(elapsed, previous, plan=plan)
        elapsed += previous
        polls.append(elapsed)
    return polls


def test_planned_polls_cluster_where_predictions_finish() -> None:
    schedule = PollSchedule(request_cost=0.025)
    rng = random.Random(7)
    samples = [5.0 + rng.uniform(-0.5, 0.5) for _ in range(32)]
    plan = schedule.plan(samples)
    assert plan == tuple(sorted(plan))
    assert min(samples) - 0.2 <= plan[0] <= min(samples) + 0.4  # not before the band
    assert plan[-1] >= max(samples)  # the whole band is covered
    gaps = [b - a for a, b in itertools.pairwise(plan)]
    assert min(gaps) >= schedule.minimum - 1e-9
    assert gaps[-1] < gaps[0]  # denser as the chance each poll finds it done rises
    # Over fresh durations of the same kind: far fewer polls than a fixed 0.5 s poller, and
    # a smaller expected wait after the prediction ends.
    durations = [5.0 + rng.uniform(-0.5, 0.5) for _ in range(200)]
    runs = [_simulate(schedule, plan, d) for d in durations]
    mean_polls = sum(len(r) for r in runs) / len(runs)
    mean_lag = sum(r[-1] - d for r, d in zip(runs, durations, strict=True)) / len(runs)
    assert mean_polls < 0.5 * sum(math.ceil(d / 0.5) for d in durations) / len(durations)
    assert mean_lag < 0.4 * 0.25


def test_request_cost_trades_polls_for_latency() -> None:
    samples = [2.0 + i * 0.05 for i in range(21)]  # 2.0 .. 3.0
    dense = PollSchedule(request_cost=0.005).plan(samples)
    sparse = PollSchedule(request_cost=0.1).plan(samples)
    assert len(dense) > len(sparse) >= 1
    # The spread decides the density: a band ten times as narrow gets much closer polls.
    narrow = PollSchedule().plan([2.0 + i * 0.005 for i in range(21)])
    wide = PollSchedule().plan(samples)
    narrow_gap = (narrow[-1] - narrow[0]) / max(1, len(narrow) - 1)
    wide_gap = (wide[-1] - wide[0]) / max(1, len(wide) - 1)
    assert narrow_gap < wide_gap


def test_past_the_plan_it_backs_off_from_the_last_step() -> None:
    schedule = PollSchedule()
    plan = (5.0, 5.2, 5.3)
    assert schedule.next_delay(0.0, None, plan=plan) == pytest.approx(5.0)
    assert schedule.next_delay(5.01, 5.0, plan=plan) == pytest.approx(0.19)
    after = schedule.next_delay(5.35, 0.1, plan=plan)
    assert after == pytest.approx(0.15)  # growing from the plan's last step (0.1)
    assert schedule.next_delay(9.0, 3.0, plan=plan) == schedule.cap
    # A plan far ahead still gets a poll every max_quiet seconds, for progress.
    assert schedule.next_delay(0.0, None, plan=(40.0, 41.0)) == schedule.max_quiet


def test_duration_stats_plan_evenly_at_first_then_from_the_distribution() -> None:
    stats, schedule = DurationStats(), PollSchedule()
    assert stats.plan("m", schedule) is None
    for value in (4.6, 5.4, 5.1):
        stats.observe("m", value)
    window = stats.window("m")
    assert window is not None
    assert stats.plan("m", schedule) == schedule.even_plan(window)
    rng = random.Random(3)
    for _ in range(stats.plan_samples):
        stats.observe("m", 5.0 + rng.uniform(-0.5, 0.5))
    learned = stats.plan("m", schedule)
    assert learned is not None and learned != schedule.even_plan(stats.window("m") or (0, 0))
    assert stats.plan("other", schedule) is None
    # Kept while few samples are new, recomputed once a quarter of them are. (A duration far
    # outside the band, 9 s, would take over at once instead: tests/core/test_beliefs.py.)
    stats.observe("m", 6.0)
    assert stats.plan("m", schedule) == learned
    for _ in range(4):
        stats.observe("m", 6.0)
    replanned = stats.plan("m", schedule)
    assert replanned is not None and replanned[-1] > learned[-1]
    # Another schedule gets its own plan.
    other = stats.plan("m", PollSchedule(request_cost=0.2))
    assert other is not None and len(other) < len(replanned)
