"""Pure decisions about waiting and retrying: no I/O and no sleeping, so they are tested once.

- :class:`RetryPolicy`: whether a failed request may be sent again, and after how long.
- :class:`PollSchedule`: when to poll next, quick at first, then backing off to a cap; once a
  model's usual duration is known (:class:`DurationStats`), it sleeps until the prediction is
  likely done and polls around that time instead, at the times that best trade a request
  against the latency it saves (:meth:`PollSchedule.plan`).
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from .registry import spec_or_none

logger = logging.getLogger("flux_tools")


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
        persistent: bool = False,
    ) -> bool:
        """``attempt`` counts retries already made; ``status`` is None for a transport failure,
        where ``sent`` says whether the request may have reached the server. ``persistent``
        (the polls of a wait, bounded by its deadline instead): no limit on the attempts."""
        if attempt >= self.max_retries and not (persistent and idempotent):
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


#: How a prior is spread: a model's typical time is a guess, and its runs vary around it.
PRIOR_SPREAD = (0.8, 1.25)
#: Until a model's durations are known (``plan_samples`` of them), its plan may spend this many
#: times the reads a generation is allowed: a prior is uncertain, and only the first
#: generations are planned from it (measured in benchmarks/RESULTS.md, "cold start").
PRIOR_READS_FACTOR = 3.0
#: Before any duration of a model is seen, one read at this fraction of its usual time.
PRIOR_PROBE = 0.25
PRIOR_POINTS = 11
#: Prices tried for a request when a read budget bounds the plan: request_cost times these.
_PRICE_STEPS = tuple(1.25**k for k in range(0, 28))


def registry_typical_seconds(model: str) -> float | None:
    """The registry's usual run time of ``model`` (``ModelSpec.typical_seconds``), or None."""
    spec = spec_or_none(model)
    return float(spec.typical_seconds) if spec is not None and spec.typical_seconds > 0 else None


def prior_samples(typical: float, points: int = PRIOR_POINTS) -> list[float]:
    """Durations spread evenly over ``PRIOR_SPREAD`` times ``typical``: what a prior stands for."""
    low, high = PRIOR_SPREAD
    return [typical * (low + (high - low) * i / (points - 1)) for i in range(points)]


def expected_reads(plan: Plan, samples: Sequence[float], schedule: PollSchedule) -> float:
    """Reads a prediction distributed like ``samples`` spends following ``plan``: the planned
    reads only. Not the progress reads every ``max_quiet`` seconds before the plan (one per
    15 s of a long generation, whatever the plan) nor the back-off past its end (few get
    there): the allowance prices where the reads go, not how long a model runs."""
    del schedule  # the plan's own reads do not depend on it
    if not plan or not samples:
        return 0.0
    n = len(samples)
    reads = 0.0
    previous = -math.inf
    for poll in plan:
        reads += sum(1 for s in samples if s > previous) / n
        previous = poll
    return reads


class SampleStore(Protocol):
    """Where learned durations outlive a process (a file: ``flux_tools._drivers.durations``;
    shared state for replicas). Keys are ``"<api host> <model>"``; samples newest last."""

    def load(self) -> dict[str, list[float]]: ...

    def save(self, updates: Mapping[str, Sequence[float]], size: int) -> None: ...


@dataclass(eq=False)
class DurationStats:
    """Recent run times per model, learned from finished predictions (thread-safe).

    The window it reports, low to high quantile of recent durations, is where a prediction of
    that model usually finishes; with enough samples it hands out a full :meth:`plan`.

    Thrifty from the first generation: a model never seen is planned from its ``prior`` (the
    registry's usual run time, spread over :data:`PRIOR_SPREAD`); the first samples learned
    move that spread to where they are, and replace it as they come. With a ``store`` the
    samples of earlier processes are loaded first and the new ones saved (every
    ``save_every`` seconds at most, at ``close()`` and at exit). ``namespace`` (the API's host)
    keeps a gateway's durations apart from Replicate's.
    """

    size: int = 32
    minimum_samples: int = 2
    #: Below this many samples the plan is even steps across the window: too few to trust
    #: the shape of the distribution (unless a prior fills the rest).
    plan_samples: int = 10
    #: The usual run time of a model in seconds, None when unknown (no prior: poll quickly
    #: first, as :class:`PollSchedule` does without a plan).
    prior: Callable[[str], float | None] | None = None
    store: SampleStore | None = None
    namespace: str = ""
    save_every: float = 5.0
    _samples: dict[str, deque[float]] = field(default_factory=dict)
    _observed: dict[str, int] = field(default_factory=dict)
    _plans: dict[str, tuple[int, PollSchedule, float | None, Plan]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _loaded: bool = False
    _dirty: set[str] = field(default_factory=set)
    _saved_at: float = 0.0

    def _key(self, model: str) -> str:
        return f"{self.namespace} {model}" if self.namespace else model

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.store is None:
            return
        prefix = f"{self.namespace} " if self.namespace else ""
        for key, samples in self.store.load().items():
            if prefix and not key.startswith(prefix):
                continue
            model = key[len(prefix) :]
            if " " in model or model in self._samples:
                continue
            self._samples[model] = deque(samples[-self.size :], maxlen=self.size)
            self._observed[model] = len(self._samples[model])

    def observe(self, model: str, seconds: float) -> None:
        if not 0 < seconds < 3600:
            return
        with self._lock:
            self._load()
            self._samples.setdefault(model, deque(maxlen=self.size)).append(seconds)
            self._observed[model] = self._observed.get(model, 0) + 1
            self._dirty.add(model)
            if self.store is not None and time.monotonic() - self._saved_at >= self.save_every:
                self.flush()

    def flush(self) -> None:
        """Save the samples learned since the last save (no-op without a store)."""
        with self._lock:
            if self.store is None or not self._dirty:
                return
            updates = {self._key(m): list(self._samples[m]) for m in self._dirty}
            self._dirty.clear()
            self._saved_at = time.monotonic()
            self.store.save(updates, self.size)

    def samples(self, model: str) -> list[float]:
        """The learned durations of ``model`` (loaded from the store first), oldest first."""
        with self._lock:
            self._load()
            return list(self._samples.get(model, ()))

    def window(self, model: str) -> tuple[float, float] | None:
        ordered = sorted(self.samples(model))
        if len(ordered) < self.minimum_samples:
            return None
        if len(ordered) < 10:
            low, high = ordered[0], ordered[-1]
        else:
            deciles = statistics.quantiles(ordered, n=10)
            low, high = deciles[0], deciles[-1]
        # Widen a little: durations vary more than a handful of samples show.
        spread = max(high - low, 0.1 * high, 0.1)
        return max(0.0, low - spread * 0.1), high + spread * 0.1

    def plan(
        self, model: str, schedule: PollSchedule, *, reads: float | None = None
    ) -> Plan | None:
        """When to poll a prediction of ``model``; None while nothing is known about it.

        ``reads``: the reads a generation may spend by the account's read budget (see
        :meth:`flux_tools._limits.RateLimits.reads_per_create`). The price of a request is then
        the least one whose plan fits in it, instead of ``schedule.request_cost`` alone.

        A plan is recomputed once a quarter of the samples are new, not after each one: with
        many predictions finishing together, planning must not cost more than it saves.
        """
        with self._lock:
            self._load()
            learned = list(self._samples.get(model, ()))
            typical = None
            if len(learned) < self.plan_samples and self.prior is not None:
                typical = self.prior(model)
            if typical is None:
                if len(learned) < self.minimum_samples:
                    return None
                if len(learned) < self.plan_samples:
                    window = self.window(model)
                    return None if window is None else schedule.even_plan(window)
                samples = learned
            else:
                # The prior fills in for the samples not seen yet: its spread, around what was
                # seen if anything was (a registry's usual time may be far off a gateway's).
                center = statistics.median(learned) if learned else typical
                filler = prior_samples(center, max(2, self.plan_samples - len(learned)))
                samples = learned + filler
            observed = self._observed.get(model, 0)
            cached = self._plans.get(model)
            if cached is not None:
                at, planned_by, planned_reads, plan = cached
                fresh = observed - at < max(1, len(learned) // 4) or (
                    typical is not None and observed == at
                )
                if planned_by == schedule and planned_reads == reads and fresh:
                    return plan
            allowed = reads
            if reads is not None and typical is not None:  # fewer than plan_samples seen
                allowed = reads * PRIOR_READS_FACTOR
            plan = priced_plan(samples, schedule, allowed)
            if not learned and plan and typical is not None:
                # Nothing seen yet: one early read too, in case the registry's usual time is
                # far off this API's (an emulator, a faster gateway). One read, not a back-off.
                probe = typical * PRIOR_PROBE
                if probe < plan[0] - schedule.minimum:
                    plan = (probe, *plan)
            self._plans[model] = (observed, schedule, reads, plan)
            return plan


def priced_plan(samples: Sequence[float], schedule: PollSchedule, reads: float | None) -> Plan:
    """``schedule.plan(samples)`` at the least request price whose plan spends at most
    ``reads`` reads on average (the dearest price tried when none does); ``reads`` None: at
    ``schedule.request_cost``."""
    if reads is None:
        return schedule.plan(samples)
    low, high = 0, len(_PRICE_STEPS) - 1
    best: Plan | None = None
    while low <= high:  # bisection: the reads spent fall as the price rises
        mid = (low + high) // 2
        candidate = replace(schedule, request_cost=schedule.request_cost * _PRICE_STEPS[mid])
        plan = candidate.plan(samples)
        if expected_reads(plan, samples, schedule) <= reads:
            best, high = plan, mid - 1
        else:
            low = mid + 1
    if best is None:
        dearest = replace(schedule, request_cost=schedule.request_cost * _PRICE_STEPS[-1])
        best = dearest.plan(samples)
    return best
