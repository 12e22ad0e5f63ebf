"""The shared state on a real Valkey: the same decisions as in-process, atomic across replicas.

Each "replica" here is a RedisState of its own (its own connections) on one account's keys.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import anyio
import pytest

from flux_tools import BudgetExceeded, RateLimits
from flux_tools._domain.limits import RateLimiter
from flux_tools._domain.load import MAX_READ_ALLOWANCE
from flux_tools._domain.shares import FairShare
from flux_tools._drivers.redis_state import RedisBudget, RedisState
from flux_tools._drivers.state import LocalState, account_namespace, open_state
from flux_tools.kit import PendingPrediction

from ..engines import Valkey, free_ports


def replica(server: Valkey, namespace: str, name: str) -> RedisState:
    state = open_state(server.url, namespace=namespace, replica=name)
    assert isinstance(state, RedisState)
    return state


async def test_the_shared_limiter_books_slots_as_the_in_process_one(
    valkey_server: Valkey, namespace: str
) -> None:
    limits = RateLimits(creates_per_minute=60, create_burst=3, safety=0, jitter=0)
    local = RateLimiter(limits, clock=lambda: 0.0)
    expected = [local.acquire("create") for _ in range(6)]
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        la, lb = a.limiter(limits), b.limiter(limits)
        # Two replicas alternating: one schedule for the account.
        got = [await (la if i % 2 else lb).acquire_async("create") for i in range(6)]
    finally:
        await a.aclose()
        await b.aclose()
    assert expected == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]
    # The server's clock moved a little between the calls: each slot is at most that early.
    assert all(abs(g - e) < 0.2 for g, e in zip(got, expected, strict=True)), got


async def test_counts_read_out_of_order_do_not_drain_the_shared_bucket(
    valkey_server: Valkey, namespace: str
) -> None:
    """Two replicas send half the account's burst; the server's counts come back in another
    order than the slots were booked: the other half still goes at once. A count lower than
    any order explains (another client spends the account) drains it for both."""
    limits = RateLimits(creates_per_minute=60, create_burst=100, safety=0, jitter=0)
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        la, lb = a.limiter(limits), b.limiter(limits)
        assert [await (la, lb)[i % 2].acquire_async("create") for i in range(50)] == [0.0] * 50
        order = [(i * 37) % 50 for i in range(50)]  # the order the server took them
        for i in reversed(range(50)):  # answers read in another order
            left = 100 - 1 - order.index(i)
            await (la, lb)[i % 2].observe_async("create", 201, {"ratelimit-remaining": str(left)})
        assert [await (la, lb)[i % 2].acquire_async("create") for i in range(40)] == [0.0] * 40
        # 10 of ours in flight, and the server says 3 left: another client took the rest.
        await la.observe_async("create", 201, {"ratelimit-remaining": "3"})
        delays = [await (lb, la)[i % 2].acquire_async("create") for i in range(4)]
        assert delays[:3] == [0.0] * 3 and 0.8 < delays[3] <= 1.0
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_429_seen_by_one_replica_slows_every_replica(
    valkey_server: Valkey, namespace: str
) -> None:
    limits = RateLimits(safety=0, jitter=0)  # 3000 reads a minute: one each 0.02 s
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        la, lb = a.limiter(limits), b.limiter(limits)
        await la.acquire_async("get")
        before = lb.poll_reads()
        await la.observe_async("get", 429, {"retry-after": "2"})
        delay = await lb.acquire_async("get")  # the other replica waits out the Retry-After
        assert 1.5 < delay <= 2.1
        assert lb.read_interval() == pytest.approx(0.04, rel=0.05)  # the rate halved, for both
        assert lb.poll_reads() < before
        assert la.stats().throttled["read"] == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_utilization_is_the_account_s(valkey_server: Valkey, namespace: str) -> None:
    limits = RateLimits(reads_per_minute=60, read_burst=10, safety=0, jitter=0)
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        la, lb = a.limiter(limits), b.limiter(limits)
        for _ in range(5):
            await la.acquire_async("get")
        await lb.acquire_async("get")
        assert lb.utilization("read") == pytest.approx(0.6, abs=0.05)
        local = RateLimiter(limits)
        for _ in range(6):
            local.acquire("get")
        assert local.utilization("read") == pytest.approx(0.6, abs=0.05)
    finally:
        await a.aclose()
        await b.aclose()


async def test_reads_are_priced_by_the_account_s_load_seen_by_every_replica(
    valkey_server: Valkey, namespace: str
) -> None:
    """Issue 22 with replicas: a replica that sent nothing itself prices its polls by what the
    others spend of the account (the shared utilization), not by its own idle view."""
    limits = RateLimits(creates_per_minute=60, reads_per_minute=300, safety=0, jitter=0)
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        la, lb = a.limiter(limits), b.limiter(limits)
        await lb.acquire_async("get")  # one read: b hears the account's state
        idle = lb.read_allowance()
        assert idle == MAX_READ_ALLOWANCE  # one person, one image: reads are cheap
        for _ in range(150):  # half a minute's reads at once, all by the other replica
            await la.acquire_async("get")
        await lb.acquire_async("get")
        assert lb.utilization("read") > 0.4 and lb.utilization() >= lb.utilization("read")
        assert lb.read_allowance() < 3 * lb.poll_reads() < idle
        # The in-process view of b alone (two reads) would have stayed idle.
        alone = RateLimiter(limits)
        alone.acquire("get")
        alone.acquire("get")
        assert alone.read_allowance() == MAX_READ_ALLOWANCE
    finally:
        await a.aclose()
        await b.aclose()


async def test_fifty_reservations_across_replicas_never_pass_the_budget(
    valkey_server: Valkey, namespace: str
) -> None:
    states = [replica(valkey_server, namespace, f"r{i}") for i in range(3)]
    budgets = [s.budget(0.40) for s in states]  # ten creates at $0.04
    granted: list[object] = []
    refused: list[BudgetExceeded] = []

    async def one(i: int) -> None:
        try:
            granted.append(
                await budgets[i % 3].reserve_async("black-forest-labs/flux-1.1-pro", 0.04)
            )
        except BudgetExceeded as exc:
            refused.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        budget = budgets[0]
        assert isinstance(budget, RedisBudget)
        assert len(granted) == 10 and len(refused) == 40
        assert await budget.spent() == pytest.approx(0.40)
        assert "FLUX_BUDGET_USD" in str(refused[0]) and "Nothing was sent" in str(refused[0])
        # A hold given back (the create certainly made nothing), one settled aborted (not billed),
        # one settled failed (may be billed): any replica may settle what another reserved.
        await budgets[1].release_async(granted[0])  # type: ignore[arg-type]
        await budgets[0].bind_async("p-aborted", granted[1])  # type: ignore[arg-type]
        await budgets[2].settle_async("p-aborted", "aborted")
        await budgets[0].bind_async("p-failed", granted[2])  # type: ignore[arg-type]
        await budgets[2].settle_async("p-failed", "failed")
        assert await budget.spent() == pytest.approx(0.32)
    finally:
        for state in states:
            await state.aclose()


async def test_a_person_scope_is_kept_beside_the_server_s(
    valkey_server: Valkey, namespace: str
) -> None:
    state = replica(valkey_server, namespace, "a")
    budget = state.budget(1.0)
    try:
        with RedisBudget.charging("person:alice", 0.10, "FLUX_MCP_USER_BUDGET_USD"):
            await budget.reserve_async("m", 0.06)
            with pytest.raises(BudgetExceeded) as info:
                await budget.reserve_async("m", 0.06)
        assert info.value.budget == "FLUX_MCP_USER_BUDGET_USD"
        await budget.reserve_async("m", 0.06)  # outside Alice's calls: the server's only
        assert await budget.spent() == pytest.approx(0.12)
        # No price known: a person's budget cannot be kept, so it is refused (before, only the
        # server's ceiling was asked, and a server without one let it through).
        free = state.budget(None)
        with (
            RedisBudget.charging("person:alice", 0.10, "FLUX_MCP_USER_BUDGET_USD"),
            pytest.raises(BudgetExceeded, match="No price is known"),
        ):
            await free.reserve_async("m", None)
        assert await free.reserve_async("m", None) is None
    finally:
        await state.aclose()


async def test_each_persons_share_of_the_create_rate_is_kept_for_every_replica(
    valkey_server: Valkey, namespace: str
) -> None:
    limits = RateLimits(creates_per_minute=60, create_burst=1, safety=0, jitter=0)
    local = FairShare(limits, clock=lambda: 0.0)
    expected = [local.reserve(p, max_wait=10) for p in ("alice", "alice", "bob", "alice")]
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        sa, sb = a.fair_share(limits), b.fair_share(limits)
        got = [
            await sa.reserve("alice", max_wait=10),
            await sb.reserve("alice", max_wait=10),
            await sa.reserve("bob", max_wait=10),
            await sb.reserve("alice", max_wait=10),
        ]
        refused = await sa.reserve("alice", max_wait=0.5)  # 4 s away: not booked
        after = await sb.reserve("alice", max_wait=10)
    finally:
        await a.aclose()
        await b.aclose()
    assert [s.delay for s in expected] == [0, 1, 0, 2]  # two active: alice every 2 s
    assert [s.active for s in got] == [1, 1, 2, 2]
    for g, e in zip(got, expected, strict=True):
        assert g.granted and abs(g.delay - e.delay) < 0.2, got
    assert not refused.granted and 3.7 < refused.delay <= 4.0
    assert after.granted and abs(after.delay - 4) < 0.3  # the refused one took no slot


async def test_a_killed_replica_s_entries_are_adopted_once_its_leases_expire(
    valkey_server: Valkey, namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flux_tools._drivers import redis_state

    monkeypatch.setattr(redis_state, "LEASE_SECONDS", 0.5)
    a, b, c = (replica(valkey_server, namespace, n) for n in "abc")
    try:
        ja, jb, jc = a.journal(tmp_path), b.journal(tmp_path), c.journal(tmp_path)
        given = PendingPrediction("p1", "black-forest-labs/flux-pro", time.time(), {"k": "v"})
        await ja.add(given, owner="alice")
        entry = dataclasses.replace(given, owner="alice")  # as recorded: with its owner
        assert await jb.adopt() == ([], [])  # held by a
        await ja.renew()
        assert (await jb.get("p1")) == entry
        await anyio.sleep(0.8)  # a died: nobody renews
        claims = await jb.adopt(), await jc.adopt()
        assert [c[0] for c in claims] == [[entry], []]  # exactly one replica adopts
        await jb.remove("p1")
        assert await jc.adopt() == ([], []) and await jc.get("p1") is None
        # A graceful stop lets go at once: no lease to wait out.
        await jb.add(PendingPrediction("p2", "m", time.time()))
        assert await jb.release() == 1
        live, _ = await jc.adopt()
        assert [e.prediction_id for e in live] == ["p2"]
        await jc.remove("p2")
        # Too old to fetch (past the provider's hour): dropped, not adopted.
        await jc.add(PendingPrediction("p3", "m", time.time() - 4000))
        await jc.release()
        live, expired = await jb.adopt()
        assert live == [] and [e.prediction_id for e in expired] == ["p3"]
    finally:
        for state in (a, b, c):
            await state.aclose()


async def test_owners_and_durations_are_shared(valkey_server: Valkey, namespace: str) -> None:
    a, b = (replica(valkey_server, namespace, n) for n in "ab")
    try:
        await a.owners.set("p1", "issuer sub-1")
        assert await b.owners.get("p1") == "issuer sub-1"
        assert await b.owners.get("nope") is None
        learned = a.durations("http://127.0.0.1:9/v1")
        for seconds in (2.0, 2.1, 2.2):
            learned.observe("black-forest-labs/flux-pro", seconds)
        learned.flush()
        await a.sync()
        await b.start()
        fresh = b.durations("http://127.0.0.1:9/v1")
        assert fresh.samples("black-forest-labs/flux-pro") == [2.0, 2.1, 2.2]
    finally:
        await a.aclose()
        await b.aclose()


def test_the_default_is_in_process_and_the_url_is_checked() -> None:
    assert isinstance(open_state(None, namespace="x"), LocalState)
    assert isinstance(open_state("  ", namespace="x"), LocalState)
    with pytest.raises(Exception, match="FLUX_STATE_URL must be a redis://") as info:
        open_state("http://user:hunter2@host/", namespace="x")
    assert "hunter2" not in str(info.value)
    assert account_namespace("https://a/v1", "t1") != account_namespace("https://a/v1", "t2")


async def test_an_unreachable_state_server_is_worked_around_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The state server down: each replica keeps the account's rate limits and each person's
    share on its own, and says so once per outage, not once per request."""
    (port,) = free_ports(1)  # nothing listens there
    state = open_state(f"redis://127.0.0.1:{port}/0", namespace="down", replica="a")
    assert isinstance(state, RedisState)
    limits = RateLimits(safety=0, jitter=0)
    limiter, shares = state.limiter(limits), state.fair_share(limits)
    try:
        with caplog.at_level(logging.WARNING, logger="flux_tools"):
            for _ in range(3):
                assert await limiter.acquire_async("create") == 0.0
                assert (await shares.reserve("alice", max_wait=1.0)).granted
    finally:
        await state.aclose()
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 2, said
    assert any("rate limits on its own" in m for m in said)
    assert any("share of the create rate on its own" in m for m in said)
