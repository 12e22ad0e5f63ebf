"""What replicas share, as the drivers see it: a limiter and a budget whose state lives in a
state server (Valkey or Redis, ``FLUX_STATE_URL``), so that each decision is one round trip that
the async driver awaits instead of a lock it takes.

The in-process :class:`~.limits.RateLimiter` and :class:`~.pricing.Budget` decide in memory, at
once; the shared ones (``flux_tools._drivers.redis_state``) make the same decisions atomically in
the state server for every replica together. These protocols are all the flows and drivers know
of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from .limits import Lane, LimiterStats, RateLimits
from .pricing import Hold


@runtime_checkable
class SharedLimiter(Protocol):
    """The account's request budgets, shared by replicas: a slot is booked with a round trip.

    ``poll_reads``, ``read_interval``, ``utilization`` and ``read_allowance`` answer from what
    the last round trips said (no I/O: the flows ask them between requests)."""

    limits: RateLimits

    async def acquire_async(self, kind: str, *, deadline: float | None = None) -> float:
        """Book a slot for one request of ``kind``: seconds to wait before sending it."""
        ...

    async def observe_async(self, kind: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer (``ratelimit-*`` headers, a 429), for every replica."""
        ...

    def poll_reads(self) -> float: ...

    def read_interval(self) -> float: ...

    def utilization(self, lane: Lane | None = None) -> float:
        """How busy the account's budget is (``lane`` None: the busier), 0 idle to 1."""
        ...

    def read_allowance(self) -> float:
        """The reads one generation's polls may plan to spend, by how busy the account is."""
        ...

    def stats(self) -> LimiterStats: ...


@runtime_checkable
class SharedBudget(Protocol):
    """Money that replicas spend together: each step is atomic in the state server, so N
    replicas reserving at once never pass the ceiling between them."""

    limit: float | None
    per_call: float | None
    name: str

    @property
    def active(self) -> bool: ...

    async def reserve_async(self, model: str, usd: float | None) -> Hold | None:
        """Set the estimate aside in every scope, or raise ``BudgetExceeded`` (nothing sent)."""
        ...

    async def release_async(self, hold: Hold | None) -> None:
        """Give back a hold whose create certainly made no prediction."""
        ...

    async def bind_async(self, prediction_id: str, hold: Hold | None) -> None:
        """Remember which prediction a hold paid for (any replica may settle it)."""
        ...

    async def settle_async(self, prediction_id: str, status: str) -> None:
        """A prediction ended: an ``aborted`` one is not billed, its hold is given back."""
        ...


__all__ = ["SharedBudget", "SharedLimiter"]
