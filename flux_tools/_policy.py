"""Pure decisions about waiting and retrying: no I/O and no sleeping, so they are tested once.

- :func:`is_terminal`: when a prediction is over.
- :class:`RetryPolicy`: whether a failed request may be sent again, and after how long.
- :class:`PollSchedule`: when to poll next, quick at first, then backing off to a cap; once a
  model's usual duration is known (:class:`DurationStats`), it sleeps until the prediction is
  likely done and polls around that time instead, at the times that best trade a request
  against the latency it saves (:meth:`PollSchedule.plan`).
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

#: ``aborted`` (a deadline passed before the prediction started) is final too: a client that
#: misses it polls forever, as both official Python clients did.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again.

    Reads (get) and cancels are idempotent: retried on connection errors, 429, 502, 503 and 504.
    A create is not: a second one is a second paid prediction. It is retried only when the server
    certainly did not accept it: a 429, or a connection that failed before the request was sent.
    """

    max_retries: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    #: A server asking for a longer pause than this is not waited for.
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def should_retry(
        self,
        *,
        attempt: int,
        idempotent: bool,
        status: int | None = None,
        sent: bool = True,
    ) -> bool:
        """``attempt`` counts retries already made; ``status`` is None for a transport failure,
        where ``sent`` says whether the request may have reached the server."""
        if attempt >= self.max_retries:
            return False
        if status is not None:
            return status == 429 if not idempotent else status in self.retry_statuses
        return idempotent or not sent

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``; None when the server's
        ``Retry-After`` is longer than we are willing to wait."""
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # A little jitter on top, so many clients released together do not collide again.
            return retry_after + rng.uniform(0, min(0.25, retry_after * 0.1 + 0.05))
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return rng.uniform(ceiling / 2, ceiling)  # "equal jitter": never zero, never in lockstep


#: Poll times (seconds since the prediction was created), in increasing order.
Plan = tuple[float, ...]


@dataclass(frozen=True)
class PollSchedule:
    """How long to sleep before the next poll.

    Without knowledge of the model: ``initial``, growing by ``factor`` up to ``cap``. With a
    learned window: sleep until it opens (never more than ``max_quiet`` at once, so progress
    keeps flowing), poll at even steps inside it, and back off past it. With many
    samples, a :meth:`plan` replaces the even steps: polls placed where they pay off most.
    """

    initial: float = 0.25
    factor: float = 1.5
    cap: float = 3.0
    minimum: float = 0.05
    max_quiet: float = 15.0
    polls_per_window: int = 8
    #: Seconds of added latency one request is worth when planning polls around a learned
    #: duration. Lower polls more densely. Replicate allows 3000 reads a minute per account:
    #: requests are not free, and past ~25 ms a poll buys little (see benchmarks/README.md).
    request_cost: float = 0.025
    #: Points of the grid the plan is chosen on: its cost grows with the square of this.
    plan_resolution: int = 48

    def next_delay(
        self,
        elapsed: float,
        previous: float | None,
        window: tuple[float, float] | None = None,
        *,
        plan: Plan | None = None,
    ) -> float:
        """``elapsed``: seconds since the prediction was created; ``previous``: the last delay.

        ``plan``: the poll times to follow (see :meth:`plan`); a ``window`` alone is polled at
        even steps (``polls_per_window`` of them) from its start to its end.
        """
        backoff = self.initial if previous is None else min(self.cap, previous * self.factor)
        if plan is None and window is not None:
            plan = self.even_plan(window)
        if plan:
            if elapsed < plan[0] - self.minimum:
                return max(self.minimum, min(self.max_quiet, plan[0] - elapsed))
            index = bisect.bisect_left(plan, elapsed + self.minimum)
            if index < len(plan):
                return min(self.max_quiet, plan[index] - elapsed)
            step = max(self.minimum, plan[-1] - plan[-2]) if len(plan) > 1 else self.minimum
            # Past the plan: back off from its last step, not from a long sleep before it.
            if previous is None or elapsed - previous < plan[0]:
                backoff = step
        return max(self.minimum, backoff)

    def even_plan(self, window: tuple[float, float]) -> Plan:
        """Polls every ``(high - low) / polls_per_window`` seconds from ``low`` to ``high``."""
        low, high = window
        step = min(self.cap, max(self.minimum, (high - low) / self.polls_per_window))
        count = max(0, math.ceil((high - low) / step - 1e-9))
        return tuple(low + i * step for i in range(count + 1))

    def plan(self, samples: Sequence[float]) -> Plan:
        """The poll times that minimise the expected added latency plus ``request_cost`` per
        request, for a prediction whose duration is distributed like ``samples``.

        The samples are smoothed (each spread over ±10 % of their range, at least 1 % of the
        median): a handful of observations must not leave gaps where no poll is planned.
        Dynamic programming on a grid: from each grid time at which the prediction was still
        running, the best next poll weighs its cost (paid only if still running) against the
        latency of the predictions that finish before it. Where the duration is sure to fall
        in a narrow band it polls densely; polls grow closer as the end of the band nears and
        the chance that each one finds the prediction done rises.
        """
        xs = sorted(s for s in samples if s > 0)
        if not xs:
            return ()
        n, size = len(xs), max(2, self.plan_resolution)
        half = max(self.minimum, 0.1 * (xs[-1] - xs[0]), 0.01 * xs[n // 2])
        low, high = max(0.0, xs[0] - half), xs[-1] + half
        step = (high - low) / (size - 1)
        grid = [low + k * step for k in range(size)]
        # Smoothed CDF on the grid, and its running integral: the latency of the predictions
        # that finish between two polls is an integral of the CDF.
        cdf = [sum(min(1.0, max(0.0, (t - x + half) / (2 * half))) for x in xs) / n for t in grid]
        area = [0.0] * size
        for k in range(1, size):
            area[k] = area[k - 1] + (cdf[k - 1] + cdf[k]) * step / 2
        gap = max(1, math.ceil(self.minimum / step - 1e-9))  # polls at least `minimum` apart
        cost = [0.0] * size  # expected cost after a poll at grid[i] found it running
        following = [size] * size
        for i in range(size - 2, -1, -1):
            running = 1.0 - cdf[i]
            if running <= 1e-9:
                continue
            base = self.request_cost * running - area[i] + cdf[i] * grid[i]
            best, choice = math.inf, size - 1
            for j in range(min(i + gap, size - 1), size):
                value = base + area[j] - cdf[i] * grid[j] + cost[j]
                if value < best:
                    best, choice = value, j
            cost[i], following[i] = best, choice
        first = min(range(size), key=lambda j: area[j] + cost[j])
        polls: list[float] = []
        j = first
        while j < size:
            polls.append(grid[j])
            if 1.0 - cdf[j] <= 1e-9:
                break
            j = following[j]
        if len(polls) > 1:  # the grid's end may leave the last two closer than `minimum`
            polls[-1] = max(polls[-1], polls[-2] + self.minimum)
        return tuple(polls)


@dataclass
class DurationStats:
    """Recent run times per model, learned from finished predictions.

    The window it reports, low to high quantile of recent durations, is where a prediction of
    that model usually finishes; with enough samples it hands out a full :meth:`plan`.
    """

    size: int = 32
    minimum_samples: int = 2
    #: Below this many samples the plan is even steps across the window: too few to trust
    #: the shape of the distribution.
    plan_samples: int = 10
    _samples: dict[str, deque[float]] = field(default_factory=dict)
    _observed: dict[str, int] = field(default_factory=dict)
    _plans: dict[str, tuple[int, PollSchedule, Plan]] = field(default_factory=dict)

    def observe(self, model: str, seconds: float) -> None:
        if 0 < seconds < 3600:
            self._samples.setdefault(model, deque(maxlen=self.size)).append(seconds)
            self._observed[model] = self._observed.get(model, 0) + 1

    def window(self, model: str) -> tuple[float, float] | None:
        samples = self._samples.get(model)
        if not samples or len(samples) < self.minimum_samples:
            return None
        ordered = sorted(samples)
        if len(ordered) < 10:
            low, high = ordered[0], ordered[-1]
        else:
            deciles = statistics.quantiles(ordered, n=10)
            low, high = deciles[0], deciles[-1]
        # Widen a little: durations vary more than a handful of samples show.
        spread = max(high - low, 0.1 * high, 0.1)
        return max(0.0, low - spread * 0.1), high + spread * 0.1

    def plan(self, model: str, schedule: PollSchedule) -> Plan | None:
        """When to poll a prediction of ``model``; None while nothing is known about it.

        A plan is recomputed once a quarter of the samples are new, not after each one: with
        many predictions finishing together, planning must not cost more than it saves.
        """
        samples = self._samples.get(model)
        if not samples or len(samples) < self.minimum_samples:
            return None
        if len(samples) < self.plan_samples:
            window = self.window(model)
            return None if window is None else schedule.even_plan(window)
        observed = self._observed.get(model, 0)
        cached = self._plans.get(model)
        if cached is not None:
            at, planned_by, plan = cached
            if planned_by == schedule and observed - at < max(1, len(samples) // 4):
                return plan
        plan = schedule.plan(samples)
        self._plans[model] = (observed, schedule, plan)
        return plan
