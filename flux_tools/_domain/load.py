"""How busy an account is, and what a read costs for it: pure.

Replicate's read budget (3000 a minute) is shared by every generation in flight on the account.
When the account runs creates at its full rate (600 a minute), each generation may spend about
2.5 reads polling (half of the five reads a create is allowed; the rest is headroom): that is
the *thrift* allowance. When one person is making one image, almost all of that budget sits
unused, and a read costs almost nothing: the allowance grows as the account's recent use falls.

:class:`DecayingRate` measures the recent use (events a second, fading over ``tau`` seconds);
:func:`utilization` turns it and the share of a budget's burst already booked into how busy
that budget is; :func:`read_allowance` turns the utilization (the busier of the create and
read budgets) into the reads a generation may plan to spend. All are plain numbers from plain
state, so that the limiter replicas share (its state in Valkey or Redis) computes the same
utilization on the state server and the same allowance from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Seconds over which the recent rate of requests fades (to 1/e).
LOAD_WINDOW = 30.0
#: Most reads a generation is allowed when the account is idle: the plan's own price
#: (``PollSchedule.read_rate_cost``) decides below it.
MAX_READ_ALLOWANCE = 64.0


@dataclass
class DecayingRate:
    """Events a second over the recent past: each event adds ``1 / tau``, and the sum fades as
    ``exp(-age / tau)``. Steady events at ``r`` a second read ``r`` after a few ``tau``."""

    tau: float = LOAD_WINDOW
    value: float = 0.0
    at: float = 0.0

    def rate(self, now: float) -> float:
        return self.value * math.exp(-max(0.0, now - self.at) / self.tau)

    def add(self, now: float, count: float = 1.0) -> None:
        self.value = self.rate(now) + count / self.tau
        self.at = max(self.at, now)


def utilization(rate: float, interval: float, booked_ahead: float) -> float:
    """How busy a budget is, 0 (idle) to 1 (at its limit): the recent requests (``rate`` a
    second) as a share of its rate (one each ``interval`` seconds: lower while throttled), or
    ``booked_ahead``, the share of its burst already booked (which ``ratelimit-remaining``
    drains when other clients of the account spend it), whichever is higher."""
    used = rate * interval if interval > 0 else math.inf
    return min(1.0, max(0.0, used, booked_ahead))


def read_allowance(thrift: float, busy: float, cap: float = MAX_READ_ALLOWANCE) -> float:
    """Reads one generation's polls may plan to spend on an account whose busier budget is at
    ``busy`` (0: idle, 1: at its limit).

    ``thrift`` is the allowance at the limit (its share of the reads a create is allowed); a
    generation on an account at half its create rate may spend twice that, and so on, up to
    ``cap``; never less than ``thrift``. Rounded to half powers of two, so that the plans made
    for it can be kept.
    """
    if busy <= 0 or thrift / busy >= cap:
        return max(thrift, cap)
    allowed = thrift / busy
    stepped = 2 ** (math.floor(math.log2(allowed) * 2) / 2)
    return max(thrift, min(cap, stepped))


__all__ = ["LOAD_WINDOW", "MAX_READ_ALLOWANCE", "DecayingRate", "read_allowance", "utilization"]
