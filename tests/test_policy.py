"""The pure decisions: terminal statuses, retries, poll schedule. No I/O, no sleeping."""

from __future__ import annotations

import itertools
import random

import pytest

from flux_tools._policy import DurationStats, PollSchedule, RetryPolicy, is_terminal


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
