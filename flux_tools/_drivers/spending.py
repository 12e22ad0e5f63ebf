"""What a client spends from, resolved from its settings: limiter, budget, prices, durations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._domain.limits import RateLimiter, RateLimits
from .._domain.polling import DurationStats
from .._domain.pricing import Budget, PriceTable
from .._domain.shared import SharedBudget, SharedLimiter
from .._settings.settings import Settings
from .durations import durations_for_api


@dataclass(frozen=True)
class Spending:
    """What a client spends from, shared by all its generations: the account's request
    budgets, the money it may spend, the prices, and the durations it learns.

    Each left None is built from the client's :class:`Settings` (which read
    ``FLUX_CREATES_PER_MINUTE``, ``FLUX_READS_PER_MINUTE``, ``FLUX_BUDGET_USD``,
    ``FLUX_MAX_CALL_USD``, ``FLUX_PRICES`` and ``FLUX_CACHE_DIR``), and
    :func:`~flux_tools._drivers.durations.durations_for_api` (the registry's priors and the
    durations kept in the cache).
    """

    limiter: RateLimiter | SharedLimiter | RateLimits | None = None
    budget: Budget | SharedBudget | float | None = None
    prices: PriceTable | None = None
    durations: DurationStats | None = None

    def resolve(self, settings: Settings) -> dict[str, Any]:
        """What each left None is built from: the client's ``settings`` (the environment's,
        read once by :meth:`Settings.from_env`)."""
        limiter = self.limiter
        if not isinstance(limiter, RateLimiter | SharedLimiter):
            limiter = RateLimiter(limiter or settings.rate_limits or RateLimits())
        budget = self.budget
        if not isinstance(budget, Budget | SharedBudget):
            budget = (
                Budget(settings.budget_usd, per_call=settings.max_call_usd)
                if budget is None
                else Budget(float(budget))
            )
        durations = self.durations
        if durations is None:
            durations = durations_for_api(settings.base_url, cache_dir=settings.cache_dir)
        return {
            "limiter": limiter,
            "budget": budget,
            "prices": self.prices or settings.prices or PriceTable(),
            "durations": durations,
        }


__all__ = ["Spending"]
