"""The clients under the emulator's enforced rate limits, and learned durations through a client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flux_tools import DurationStats, RateLimiter, RateLimits
from flux_tools.emulator import Emulator

from ..conftest import Flux, requests_to

MakeEmulator = Callable[..., Emulator]


MakeFlux = Callable[..., Flux]


def _throttled(emulator: Emulator) -> int:
    return sum(1 for r in emulator.stats.requests if r.status == 429)


@pytest.mark.parametrize("configured", ["matching", "replicate-defaults"])
async def test_a_burst_stays_within_the_enforced_limits(
    make_emulator: MakeEmulator, make_flux: MakeFlux, configured: str
) -> None:
    """Generations started together share the account's budgets: none fails. A client that
    knows the limits gets no 429; one that assumes Replicate's (10x higher here) learns them
    from the 429s and the ratelimit headers, with few 429s."""
    emulator = make_emulator(
        rate_limits="creates=120/60:burst=4,reads=240/60:burst=6",
        honor_prefer_wait=False,
        latency=0.4,
    )
    # The emulator answers from a thread of this process on a shared 2-core machine: a request
    # may wait for the interpreter longer than a network would delay it, hence the jitter.
    limits = (
        RateLimits(
            creates_per_minute=120,
            reads_per_minute=240,
            create_burst=4,
            read_burst=6,
            jitter=0.3,
        )
        if configured == "matching"
        else RateLimits()
    )
    flux = make_flux(emulator, limiter=RateLimiter(limits), durations=DurationStats())
    n = 12
    results = await asyncio.gather(
        *(flux("generate", prompt=f"burst {i}") for i in range(n)), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert emulator.stats.predictions_created == n
    assert len(requests_to(emulator, "create")) - n == sum(
        1 for r in requests_to(emulator, "create") if r.status == 429
    )  # every create sent again was a 429: none paid twice
    throttled = _throttled(emulator)
    if configured == "matching":
        assert throttled == 0
    else:
        # Bounded: the limiter learns the 5x lower limits from a few bursts of 429s, instead
        # of every request of every generation hitting the limit (65 requests were sent).
        assert 0 < throttled <= 2 * n
    stats: Any = flux.client.limiter.stats()
    assert stats.throttled["create"] + stats.throttled["read"] == throttled
