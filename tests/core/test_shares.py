"""What each person may take of a shared account, decided in this process: budget scopes (a
person's day beside the server's total) and a fair share of the create rate (fake clocks)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from flux_tools import BudgetExceeded, RateLimits
from flux_tools._domain.shares import (
    FairShare,
    ScopedBudget,
    ScopedHold,
    budget_scopes,
    charging,
    day_key,
    next_reset,
)

PERSON = "FLUX_MCP_USER_BUDGET_USD"


def test_without_scopes_a_scoped_budget_is_a_budget() -> None:
    budget = ScopedBudget(0.10)
    assert budget.active
    budget.reserve("m", 0.06)
    with pytest.raises(BudgetExceeded) as refused:
        budget.reserve("m", 0.06)
    assert refused.value.budget == "FLUX_BUDGET_USD"
    assert not ScopedBudget().active


def test_each_persons_day_is_kept_apart_and_beside_the_total() -> None:
    budget = ScopedBudget(0.15)
    assert budget_scopes() == ()
    with charging("person:alice", 0.10, PERSON):
        assert budget.active and len(budget_scopes()) == 1
        hold = budget.reserve("m", 0.055)
        assert isinstance(hold, ScopedHold) and hold.scopes == (day_key("person:alice"),)
        with pytest.raises(BudgetExceeded) as refused:  # alice's day: 0.11 > 0.10
            budget.reserve("m", 0.055)
    assert refused.value.budget == PERSON
    assert refused.value.spent == pytest.approx(0.055) and refused.value.limit == 0.10
    with charging("person:bob", 0.10, PERSON):
        budget.reserve("m", 0.055)  # bob's own day
        with pytest.raises(BudgetExceeded) as both:  # his day and the total: his day is named
            budget.reserve("m", 0.055)
    assert both.value.budget == PERSON
    # Carol's day is fresh: the server's 0.15 refuses.
    with charging("person:carol", 0.10, PERSON), pytest.raises(BudgetExceeded) as total:
        budget.reserve("m", 0.055)
    assert total.value.budget == "FLUX_BUDGET_USD"
    assert budget.spent == pytest.approx(0.11)
    assert budget.spent_in(day_key("person:alice")) == pytest.approx(0.055)
    # A create that certainly made nothing, or an aborted prediction: given back everywhere.
    budget.release(hold)
    assert budget.spent_in(day_key("person:alice")) == 0.0
    with charging("person:bob", 0.10, PERSON):
        again = budget.reserve("m", 0.03)
    budget.bind("p1", again)
    budget.settle("p1", "aborted")
    assert budget.spent_in(day_key("person:bob")) == pytest.approx(0.055)
    assert budget.spent == pytest.approx(0.055)


def test_an_unknown_price_or_a_call_above_a_whole_day_is_refused() -> None:
    budget = ScopedBudget()  # no server ceiling at all
    with charging("person:alice", 0.10, PERSON):
        with pytest.raises(BudgetExceeded, match="No price is known") as unknown:
            budget.reserve("m", None)
        with pytest.raises(BudgetExceeded) as too_big:
            budget.reserve("m", 0.5)
    assert unknown.value.budget == too_big.value.budget == PERSON
    assert budget.reserve("m", None) is None  # outside a person's call: nothing to keep


def test_scopes_follow_the_call_not_the_thread() -> None:
    seen: list[int] = []
    with charging("person:alice", 1.0, PERSON):
        thread = threading.Thread(target=lambda: seen.append(len(budget_scopes())))
        thread.start()
        thread.join()
    assert seen == [0]  # a thread started meanwhile is not the call's (no context copied)


def test_a_day_ends_at_midnight_utc() -> None:
    noon = datetime(2026, 5, 1, 12, 30, tzinfo=timezone.utc)
    assert day_key("person:x", noon) == "person:x:2026-05-01"
    assert next_reset(noon) == datetime(2026, 5, 2, tzinfo=timezone.utc)


def test_a_day_scope_is_forgotten_after_two_days() -> None:
    now = [1_000_000.0]
    budget = ScopedBudget(clock=lambda: now[0])
    with charging("person:alice", 1.0, PERSON):
        budget.reserve("m", 0.5)
    key = day_key("person:alice")
    assert budget.spent_in(key) == 0.5
    now[0] += 3 * 86400
    with charging("person:bob", 1.0, PERSON):
        budget.reserve("m", 0.1)  # any reservation tidies up
    assert budget.spent_in(key) == 0.0


# -- fair share -----------------------------------------------------------------------------------


def _share(per_minute: float = 60, burst: int = 1) -> tuple[FairShare, Callable[[float], None]]:
    now = [0.0]
    limits = RateLimits(creates_per_minute=per_minute, create_burst=burst, safety=0, jitter=0)

    def advance(seconds: float) -> None:
        now[0] += seconds

    return FairShare(limits, clock=lambda: now[0]), advance


def test_alone_a_person_has_the_whole_rate() -> None:
    shares, _ = _share()
    slots = [shares.reserve("alice", max_wait=10) for _ in range(4)]
    assert [s.delay for s in slots] == [0, 1, 2, 3] and all(s.granted for s in slots)
    assert slots[-1].active == 1


def test_two_people_each_get_half_and_the_newcomer_goes_at_once() -> None:
    shares, advance = _share()
    for _ in range(3):
        shares.reserve("alice", max_wait=10)  # alice alone: 0, 1, 2
    advance(0.5)
    bob = shares.reserve("bob", max_wait=10)
    assert bob.granted and bob.delay == 0 and bob.active == 2
    # Two are active: each creates every 2 s. Alice's next goes at 3 s (her booked schedule),
    # then 5 s; bob's second at 2.5 s, 2 s after his first.
    assert shares.reserve("alice", max_wait=10).delay == pytest.approx(2.5)
    assert shares.reserve("bob", max_wait=10).delay == pytest.approx(2.0)
    assert shares.reserve("alice", max_wait=10).delay == pytest.approx(4.5)


def test_past_the_wait_allowed_nothing_is_booked() -> None:
    shares, advance = _share()
    assert shares.reserve("alice", max_wait=1).granted
    assert shares.reserve("alice", max_wait=1).granted  # at 1 s
    refused = shares.reserve("alice", max_wait=1)  # at 2 s: too far
    assert not refused.granted and refused.delay == pytest.approx(2)
    advance(1)
    assert shares.reserve("alice", max_wait=1).delay == pytest.approx(1)  # nothing was booked


def test_people_quiet_for_a_minute_no_longer_count() -> None:
    shares, advance = _share()
    shares.reserve("alice", max_wait=10)
    shares.reserve("bob", max_wait=10)
    advance(61)
    slot = shares.reserve("alice", max_wait=10)
    assert slot.active == 1 and slot.delay == 0
    assert shares.reserve("alice", max_wait=10).delay == pytest.approx(1)  # the whole rate again


def test_a_crowd_leaves_each_at_least_a_twentieth() -> None:
    shares, _ = _share(per_minute=600, burst=1)
    for index in range(200):
        shares.reserve(f"p{index}", max_wait=10)
    first = shares.reserve("p0", max_wait=100)
    second = shares.reserve("p0", max_wait=100)
    # 600 a minute is 0.1 s apart; a twentieth of it, 2 s apart (not 200 × 0.1 = 20 s).
    assert first.active == 200
    assert second.delay - first.delay == pytest.approx(2.0)
