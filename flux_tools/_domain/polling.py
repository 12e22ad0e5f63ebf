"""Pure decisions about waiting and retrying: no I/O and no sleeping, so they are tested once.

- :class:`RetryPolicy`: whether a failed request may be sent again, and after how long.
- :class:`PollSchedule`: when to poll next, quick at first, then backing off to a cap; once a
  model's usual duration is believed (:class:`DurationStats`: the registry's usual time, then
  the durations seen), it sleeps until the prediction is likely done and polls around that
  time instead, at the times that best trade a request against the latency it saves
  (:mod:`.beliefs`: the belief, its doubt, and the plan it pays for).
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
from dataclasses import dataclass, field
from typing import Protocol

from .beliefs import (
    TYPICAL_SPREAD,
    Belief,
    contradicts,
    plan_polls,
    priced_polls,
    reads_spent,
    typical_samples,
)
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
    #: When the account has reads to spare (a read allowance, see
    #: :meth:`flux_tools._domain.limits.RateLimiter.read_allowance`): seconds of added latency
    #: worth one read per second of the generation's usual time. A read then costs this divided
    #: by that time: the read budget is a rate, and a long generation may spread more reads
    #: over it at the same rate (measured in benchmarks/RESULTS.md, "regimes").
    read_rate_cost: float = 0.12

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
        xs = tuple(sorted(s for s in samples if s > 0))
        if not xs:
            return ()
        belief = Belief(xs, (1.0,) * len(xs), least_half=self.minimum)
        return plan_polls(
            belief, self.request_cost, minimum=self.minimum, resolution=self.plan_resolution
        )


#: How a prior is spread: a model's typical time is a guess, and its runs vary around it.
PRIOR_SPREAD = TYPICAL_SPREAD
#: Until a model's durations are known (``plan_samples`` of them), its plan may spend this many
#: times the reads a generation is allowed, at this fraction of the price: a prior is
#: uncertain, and only the first generations are planned from it (measured in
#: benchmarks/RESULTS.md, "regimes").
PRIOR_READS_FACTOR = 2.5
#: Before any duration of a model is seen, one read at this fraction of its usual time.
PRIOR_PROBE = 0.25
PRIOR_POINTS = 11


def registry_typical_seconds(model: str) -> float | None:
    """The registry's usual run time of ``model`` (``ModelSpec.typical_seconds``), or None."""
    spec = spec_or_none(model)
    return float(spec.typical_seconds) if spec is not None and spec.typical_seconds > 0 else None


def prior_samples(typical: float, points: int = PRIOR_POINTS) -> list[float]:
    """Durations spread evenly over ``PRIOR_SPREAD`` times ``typical``: what a prior stands for."""
    return typical_samples(typical, points)


def expected_reads(plan: Plan, samples: Sequence[float], schedule: PollSchedule) -> float:
    """Reads a prediction distributed like ``samples`` spends following ``plan``: the planned
    reads only. Not the progress reads every ``max_quiet`` seconds before the plan (one per
    15 s of a long generation, whatever the plan) nor the back-off past its end (few get
    there): the allowance prices where the reads go, not how long a model runs."""
    del schedule  # the plan's own reads do not depend on it
    if not samples:
        return 0.0
    n = len(samples)
    return reads_spent(plan, lambda t: sum(1 for s in samples if s <= t) / n)


class SampleStore(Protocol):
    """Where learned durations outlive a process (a file: ``flux_tools._drivers.durations``;
    shared state for replicas). Keys are ``"<api host> <model>"``; samples newest last."""

    def load(self) -> dict[str, list[float]]: ...

    def save(self, updates: Mapping[str, Sequence[float]], size: int) -> None: ...

    def updated(self) -> Mapping[str, float]:
        """When each key :meth:`load` returned was last saved (seconds since the epoch), for
        the keys whose time is known: how old its samples are."""
        ...


@dataclass(eq=False)
class DurationStats:
    """Recent run times per model, learned from finished predictions (thread-safe).

    The window it reports, low to high quantile of recent durations, is where a prediction of
    that model usually finishes; with enough samples it hands out a full :meth:`plan`.

    Fast from the first generation: a model never seen is planned from its ``prior`` (the
    registry's usual run time, spread over :data:`PRIOR_SPREAD`, in grave doubt); the first
    samples learned move that spread to where they are, and replace it as they come. A
    duration far outside what was learned (the API's pace changed) drops the samples before it,
    and samples a store saved long ago are doubted more. With a ``store`` the
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
    #: Seconds since the samples loaded from the store were saved (none learned since).
    _ages: dict[str, float] = field(default_factory=dict)
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
        loaded = self.store.load()
        updated = self.store.updated()
        now = time.time()
        for key, samples in loaded.items():
            if prefix and not key.startswith(prefix):
                continue
            model = key[len(prefix) :]
            if " " in model or model in self._samples:
                continue
            self._samples[model] = deque(samples[-self.size :], maxlen=self.size)
            self._observed[model] = len(self._samples[model])
            if key in updated:
                self._ages[model] = max(0.0, now - updated[key])

    def observe(self, model: str, seconds: float) -> None:
        if not 0 < seconds < 3600:
            return
        with self._lock:
            self._load()
            seen = self._samples.setdefault(model, deque(maxlen=self.size))
            if contradicts(seen, seconds):
                seen.clear()  # the API's pace changed: what was learned before gives way at once
            seen.append(seconds)
            self._ages.pop(model, None)
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

        ``reads``: the reads a generation may spend, by how busy the account is (see
        :meth:`~.limits.RateLimiter.read_allowance`). A read is then priced by the account's
        read rate (``schedule.read_rate_cost`` over the believed duration), dearer until the
        plan fits in ``reads``, instead of ``schedule.request_cost`` alone.

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
            observed = self._observed.get(model, 0)
            cached = self._plans.get(model)
            if cached is not None:
                at, planned_by, planned_reads, plan = cached
                fresh = observed - at < max(1, len(learned) // 4) or (
                    typical is not None and observed == at
                )
                if planned_by == schedule and planned_reads == reads and fresh:
                    return plan
            plan = self._priced(model, learned, typical, schedule, reads)
            if not learned and plan and typical is not None:
                # Nothing seen yet: one early read too, in case the registry's usual time is
                # far off this API's (an emulator, a faster gateway). One read, not a back-off;
                # none when the plan already reads that early for its doubt.
                probe = typical * PRIOR_PROBE
                if 2 * probe < plan[0] - schedule.minimum:
                    plan = (probe, *plan)
            self._plans[model] = (observed, schedule, reads, plan)
            return plan

    def _priced(
        self,
        model: str,
        learned: list[float],
        typical: float | None,
        schedule: PollSchedule,
        reads: float | None,
    ) -> Plan:
        """The plan for what is believed of ``model`` (:class:`~.beliefs.Belief`): the
        ``learned`` samples (the prior's spread filling in for those not seen yet), or the
        registry's ``typical`` time alone, each with its doubt. Without ``reads`` a read costs
        ``schedule.request_cost``; with them, ``schedule.read_rate_cost`` over the believed
        duration (no more than ``request_cost``) at least, more when the allowance calls for
        it. A plan made while fewer than ``plan_samples`` are known may spend
        :data:`PRIOR_READS_FACTOR` times as much: it is uncertain, and only the first
        generations are planned from it."""
        if learned:
            fill = self.plan_samples if typical is not None else 0
            belief = Belief.learned(learned, age=self._ages.get(model, 0.0), fill_to=fill)
        else:
            assert typical is not None
            belief = Belief.prior(typical, PRIOR_POINTS)
        floor, allowed = schedule.request_cost, reads
        if reads is not None:
            floor = schedule.read_rate_cost / belief.centre
            if typical is not None:
                floor, allowed = floor / PRIOR_READS_FACTOR, reads * PRIOR_READS_FACTOR
            floor = min(schedule.request_cost, floor)
        return priced_polls(
            belief, floor, allowed, minimum=schedule.minimum, resolution=schedule.plan_resolution
        )
