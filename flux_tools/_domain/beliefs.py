"""What a client believes of a model's run time, and the polls that belief pays for: pure.

No I/O, no clock, no environment: the callers pass the samples, their ages and the price of a
read, and get back a plan (poll times, seconds since the prediction was created).

A :class:`Belief` is the durations seen (each spread a little, newer ones weighing more) plus a
*doubt*: the chance that they are all off by an unknown factor, today, on this API (a registry's
usual time measured on another provider; durations learned before the gateway slowed down). The
doubt is a wide log-normal around the same centre: a plan made for the belief keeps a few reads
where a wrong belief would otherwise cost seconds, and spends them only where the doubt puts
enough chance to pay for them. :func:`plan_polls` places the reads by dynamic programming on a
grid that is dense where the samples are and geometric across the doubt; :func:`priced_polls`
finds the least price per read whose plan fits a read allowance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

#: Poll times (seconds since the prediction was created), in increasing order.
Plan = tuple[float, ...]

#: How a usual time is spread when it stands for a distribution (a prior, or few samples).
TYPICAL_SPREAD = (0.8, 1.25)
#: A registry's usual time is a starting guess: the chance that this API runs the model at
#: another pace, and by how much (the log of the factor, one standard deviation: 3×).
PRIOR_DOUBT = 0.2
PRIOR_SCALE = math.log(2.5)
#: Fewer samples than a plan needs: the ones not seen are spread as those seen are, at least
#: this far either side of their median (a handful of samples does not show the whole band).
FILL_REACH = 0.2
#: Learned durations: the chance that they no longer hold (the gateway slowed down, sped up),
#: ``LEARNED_DOUBT`` times ``k / (k + n)`` for ``n`` samples (``k`` = ``LEARNED_DOUBT_SAMPLES``),
#: and by how much (1.5× at one standard deviation).
LEARNED_DOUBT = 0.07
LEARNED_DOUBT_SAMPLES = 1000.0
LEARNED_SCALE = math.log(2.5)
#: Durations learned this long ago (seconds) count as a handful: the API may have changed.
STALE_AFTER = 24 * 3600.0
STALE_SAMPLES = 3.0
#: Newer samples weigh more: a sample this many samples old weighs half as much.
HALF_LIFE_SAMPLES = 16.0
#: A plan ends where the prediction is done with this chance; past it, the poll schedule's
#: back-off takes over.
END_CHANCE = 0.02
#: Past a plan, while the doubt reaches: steps growing by this factor, up to this many seconds
#: (the official client's fixed interval: a wrong belief is never slower than it).
TAIL_GROWTH = 1.5
TAIL_STEP = 0.5
#: An observation this far outside the learned band (in band widths, the band at least this
#: share of its median: two samples of one pace may differ by 20 %) contradicts it: the
#: samples before it are dropped.
CONTRADICTION_WIDTHS = 0.8
CONTRADICTION_MIN_WIDTH = 0.25


@dataclass(frozen=True)
class Belief:
    """Durations (seconds) with their weights, and the doubt around them."""

    samples: tuple[float, ...]
    weights: tuple[float, ...]
    #: The chance that every sample is off by an unknown factor.
    doubt: float = 0.0
    #: How far off: the standard deviation of the log of that factor.
    scale: float = LEARNED_SCALE
    #: Each sample is spread over ±10 % of the samples' range, at least this many seconds.
    least_half: float = 0.01

    @classmethod
    def prior(cls, typical: float, points: int = 11) -> Belief:
        """A registry's usual time: spread over :data:`TYPICAL_SPREAD`, in grave doubt."""
        samples = typical_samples(typical, points)
        return cls(tuple(samples), (1.0,) * len(samples), PRIOR_DOUBT, PRIOR_SCALE)

    @classmethod
    def learned(
        cls,
        samples: Sequence[float],
        *,
        age: float = 0.0,
        fill_to: int = 0,
    ) -> Belief:
        """From ``samples`` seen (oldest first), learned ``age`` seconds ago (0: this process).

        Fewer than ``fill_to`` samples: the usual spread around their median fills in for the
        ones not seen yet (a handful of samples does not show the shape of the distribution).
        """
        xs = [float(s) for s in samples if s > 0]
        if not xs:
            raise ValueError("a learned belief needs at least one duration")
        n = len(xs)
        weights = [0.5 ** ((n - 1 - i) / HALF_LIFE_SAMPLES) for i in range(n)]
        count = float(n)
        if age > STALE_AFTER:
            count = min(count, STALE_SAMPLES)
        if n < fill_to:
            # Spread as the samples seen are (at least +-10 %), around their median.
            middle = statistics.median(xs)
            reach = max(FILL_REACH, (max(xs) - min(xs)) / (2 * middle))
            filler = spread_samples(middle, 1 - reach, 1 + reach, fill_to - n)
            # The filler weighs as the samples it stands for, no more.
            xs += filler
            weights += [sum(weights) / n] * len(filler)
        doubt = LEARNED_DOUBT * LEARNED_DOUBT_SAMPLES / (LEARNED_DOUBT_SAMPLES + count)
        return cls(tuple(xs), tuple(weights), doubt, LEARNED_SCALE)

    @property
    def centre(self) -> float:
        return weighted_median(self.samples, self.weights)

    def _half(self) -> float:
        """How far each sample is spread: 10 % of the range, at least 1 % of the centre."""
        spread = 0.1 * (max(self.samples) - min(self.samples))
        return max(self.least_half, spread, 0.01 * self.centre)

    def cdf(self, t: float) -> float:
        """The chance that a prediction is done ``t`` seconds after it was created."""
        if t <= 0:
            return 0.0
        half = self._half()
        total = sum(self.weights)
        near = sum(
            w * min(1.0, max(0.0, (t - x + half) / (2 * half)))
            for x, w in zip(self.samples, self.weights, strict=True)
        )
        done = near / total
        if self.doubt <= 0:
            return done
        z = (math.log(t) - math.log(self.centre)) / self.scale
        wide = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        return (1 - self.doubt) * done + self.doubt * wide

    def band(self) -> tuple[float, float]:
        """Where the samples (each spread) say predictions finish."""
        half = self._half()
        return max(0.0, min(self.samples) - half), max(self.samples) + half

    def grid(self, resolution: int) -> list[float]:
        """Times a plan is chosen among: ``resolution`` across the band, and as many again,
        geometric, from where the doubt reaches down (two and a half standard deviations) to
        the band. Past the band, :func:`tail` decides."""
        low, high = self.band()
        size = max(2, resolution)
        points = {low + (high - low) * k / (size - 1) for k in range(size)}
        first = self.centre * math.exp(-2.5 * self.scale)
        if self.doubt > 0 and first < low:
            ratio = (low / first) ** (1 / (size - 1))
            points |= {first * ratio**k for k in range(size)}
        return sorted(p for p in points if p > 0)


def typical_samples(typical: float, points: int) -> list[float]:
    """Durations spread evenly over :data:`TYPICAL_SPREAD` times ``typical``."""
    return spread_samples(typical, *TYPICAL_SPREAD, points)


def spread_samples(centre: float, low: float, high: float, points: int) -> list[float]:
    """``points`` durations spread evenly from ``low`` to ``high`` times ``centre``."""
    if points <= 1:
        return [centre]
    return [centre * (low + (high - low) * i / (points - 1)) for i in range(points)]


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    half = sum(weights) / 2
    running = 0.0
    for value, weight in pairs:
        running += weight
        if running >= half:
            return value
    return pairs[-1][0]


def contradicts(samples: Sequence[float], value: float) -> bool:
    """Whether ``value`` lies far outside the band of ``samples``: the API's pace changed, and
    what was learned before it should give way at once."""
    if not samples:
        return False
    ordered = sorted(samples)
    if len(ordered) >= 10:
        deciles = statistics.quantiles(ordered, n=10)
        low, high = deciles[0], deciles[-1]
    else:
        low, high = ordered[0], ordered[-1]
    width = max(high - low, CONTRADICTION_MIN_WIDTH * statistics.median(ordered))
    margin = CONTRADICTION_WIDTHS * width
    return value > high + margin or value < low - margin


def plan_polls(belief: Belief, price: float, *, minimum: float, resolution: int = 48) -> Plan:
    """The poll times that minimise the expected added latency plus ``price`` seconds per read
    for a prediction whose duration follows ``belief``.

    Dynamic programming on :meth:`Belief.grid`: from each grid time at which the prediction was
    still running, the best next poll weighs its price (paid only if still running) against the
    latency of the predictions that finish before it. Polls fall dense where the belief is sure
    and the chance that each one finds the prediction done is high, sparse across its doubt.
    """
    grid = belief.grid(resolution)
    size = len(grid)
    cdf = [belief.cdf(t) for t in grid]
    # area[k]: the integral of the CDF from 0 to grid[k] (the latency of predictions that
    # finish between two polls is an integral of the CDF).
    area = [cdf[0] * grid[0] / 2] + [0.0] * (size - 1)
    for k in range(1, size):
        area[k] = area[k - 1] + (cdf[k - 1] + cdf[k]) * (grid[k] - grid[k - 1]) / 2
    cost = [0.0] * size  # expected cost after a poll at grid[i] found it running
    following = [size] * size
    for i in range(size - 2, -1, -1):
        running = 1.0 - cdf[i]
        if running <= 1e-9:
            continue
        base = price * running - area[i] + cdf[i] * grid[i]
        best, choice = math.inf, size - 1
        for j in range(i + 1, size):
            if grid[j] < grid[i] + minimum - 1e-9:
                continue
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
        polls[-1] = max(polls[-1], polls[-2] + minimum)
    return tuple(polls) + tail(belief, polls, minimum)


def tail(belief: Belief, polls: Sequence[float], minimum: float) -> Plan:
    """Polls after a plan, while the belief's doubt leaves more than :data:`END_CHANCE` that the
    prediction is still running: one running past the plan proves the belief wrong, and a wrong
    belief must not cost more than a few polls' worth of waiting. The steps grow from the
    plan's last by :data:`TAIL_GROWTH`, up to :data:`TAIL_STEP`; they are sent only when the
    belief was wrong."""
    if belief.doubt <= 0 or not polls:
        return ()
    step = max(minimum, polls[-1] - polls[-2]) if len(polls) > 1 else minimum
    at, extra = polls[-1], []
    while 1.0 - belief.cdf(at) > END_CHANCE:
        step = min(TAIL_STEP, step * TAIL_GROWTH)
        at += step
        extra.append(at)
    return tuple(extra)


def expected_reads(plan: Plan, belief: Belief) -> float:
    """Reads a prediction following ``belief`` spends on ``plan``."""
    return reads_spent(plan, belief.cdf)


def reads_spent(plan: Plan, cdf: Callable[[float], float]) -> float:
    """Reads a prediction whose duration has this ``cdf`` spends on ``plan``: each poll is sent
    only if the prediction was still running at the one before (the first, always)."""
    reads, previous = 0.0, None
    for poll in plan:
        reads += 1.0 if previous is None else 1.0 - cdf(previous)
        previous = poll
    return reads


#: Prices tried for a read when an allowance bounds the plan: the floor times these.
PRICE_STEPS = tuple(1.25**k for k in range(0, 28))


def priced_polls(
    belief: Belief,
    floor: float,
    reads: float | None,
    *,
    minimum: float,
    resolution: int = 48,
) -> Plan:
    """The plan at ``floor`` per read when it spends at most ``reads`` reads on average (or
    ``reads`` is None): the account has reads to spare, and the plan insures against the
    belief's doubt. Otherwise the reads are scarce: they go where the prediction most likely
    ends (the belief without its doubt), at the least price whose plan fits ``reads`` (the
    dearest price tried when none does)."""
    plan = plan_polls(belief, floor, minimum=minimum, resolution=resolution)
    if reads is None or expected_reads(plan, belief) <= reads:
        return plan
    sure = replace(belief, doubt=0.0)
    low, high = 0, len(PRICE_STEPS) - 1
    best: Plan | None = None
    while low <= high:  # bisection: the reads spent fall as the price rises
        mid = (low + high) // 2
        plan = plan_polls(sure, floor * PRICE_STEPS[mid], minimum=minimum, resolution=resolution)
        if expected_reads(plan, sure) <= reads:
            best, high = plan, mid - 1
        else:
            low = mid + 1
    if best is None:
        best = plan_polls(sure, floor * PRICE_STEPS[-1], minimum=minimum, resolution=resolution)
    return best
