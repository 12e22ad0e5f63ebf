"""The account's request budgets, shared by every generation of one client: pure decisions.

Replicate limits an *account*, not a connection: 600 creates a minute and 3000 other requests a
minute (accounts with little credit: 6 creates a minute, burst 1), and says how much is left on
each answer (``ratelimit-remaining``, ``ratelimit-reset``) and, past the limit, how long to wait
(429 with ``Retry-After``). A client that lets each generation retry its own 429s sends a whole
burst into the limit together; this one reserves a *slot* for each request before sending it.

:class:`RateLimiter` holds one bucket per budget (``create`` for creates, ``read`` for everything
else). Each bucket is a virtual scheduler (GCRA, the token bucket written as "theoretical
arrival times"): :meth:`RateLimiter.acquire` returns how long to wait before sending, and books
the slot at once, so a thousand predictions asking together are handed slots spread over the
minute instead of colliding. It never sleeps and reads the time only from the clock it is
given: the drivers sleep (blocking or awaiting) for what it answers, and the tests drive it with
a fake clock.

- Requests reach the server a little off the moment they were sent: the schedule aims 5 %
  below the rates and leaves a jitter's room (0.1 s) after each burst.
- A request with a deadline is never made late by the limiter: when its slot would fall after
  the deadline it is sent at the deadline instead (the slot is still booked, so the budget is
  paid back by the requests behind it).
- ``ratelimit-remaining`` lower than what the bucket believes it has: the bucket is drained to
  match (at ``0`` the next request waits one interval). Requests in flight are not taken off
  the count for that: the server may have counted them already (see ``_Bucket.remaining``).
  ``ratelimit-reset`` is not waited for: it says when the server's bucket is *full* again, not
  when the next request may go.
- A 429: nothing of that budget is sent before its ``Retry-After`` (or a short pause when it
  gives none), and the bucket's rate is halved (the account's real limit may be lower than the
  configured one: a low-credit account gets 6 a minute); each success wins back 2 % of it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from .._base.errors import retry_after_seconds
from . import load

Lane = Literal["create", "read"]

#: Replicate's published limits (requests a minute).
DEFAULT_CREATES_PER_MINUTE = 600.0
DEFAULT_READS_PER_MINUTE = 3000.0
#: Seconds a request may arrive off its slot (see :attr:`RateLimits.jitter`).
DEFAULT_JITTER = 0.1
#: Pause after a 429 that gave no ``Retry-After``.
DEFAULT_THROTTLE_PAUSE = 1.0
#: Slowest a bucket may fall after repeated 429s, as a fraction of its configured rate.
MIN_RATE_FRACTION = 0.005
#: Largest burst learned from ``ratelimit-remaining`` (Replicate's own buckets may allow a
#: minute's worth at once), and the share of the count left unused.
MAX_LEARNED_BURST = 1000
LEARN_MARGIN = 0.1


def budget_of(kind: str) -> Lane:
    """Creates spend the create budget; gets, cancels and lists the other one."""
    return "create" if kind == "create" else "read"


@dataclass(frozen=True)
class RateLimits:
    """The account's budgets. Defaults: Replicate's published limits.

    ``*_burst``: how many requests may go at once after a quiet spell. Replicate publishes a
    burst of 1 for accounts with little credit (6 creates a minute) and none for the others:
    a minute's worth is assumed, as "600 a minute" reads; a smaller bucket on the account is
    learned from its ``ratelimit-remaining`` answers and its 429s.
    """

    creates_per_minute: float = DEFAULT_CREATES_PER_MINUTE
    reads_per_minute: float = DEFAULT_READS_PER_MINUTE
    create_burst: int = int(DEFAULT_CREATES_PER_MINUTE)
    read_burst: int = int(DEFAULT_READS_PER_MINUTE)
    #: Aim this much below the limits: requests sent at the edge of a slot may arrive a little
    #: early or out of order, and a 429 costs more than the slack.
    safety: float = 0.05
    #: Seconds by which a request may reach the server later or earlier than it was sent
    #: (network, scheduling). A rate margin alone does not cover it: the first request after a
    #: burst may overtake a delayed one of the burst. The burst leaves this much room instead
    #: (a burst of 1: each request waits this much more than the interval).
    jitter: float = DEFAULT_JITTER
    #: The share of the reads the account allows per create (3000 / 600 = 5 by default) that
    #: one generation's polls may plan to spend; the rest is headroom (retries, progress,
    #: lists, downloads of other tools on the same account).
    poll_share: float = 0.5

    def __post_init__(self) -> None:
        if self.creates_per_minute <= 0 or self.reads_per_minute <= 0:
            raise ValueError("rate limits must be positive (requests a minute)")
        if self.create_burst < 1 or self.read_burst < 1:
            raise ValueError("a burst is at least 1 request")
        if not 0 < self.poll_share <= 1:
            raise ValueError("poll_share is a fraction in (0, 1]")
        if not 0 <= self.safety < 1:
            raise ValueError("safety is a fraction in [0, 1)")
        if not 0 <= self.jitter < 60:
            raise ValueError("jitter is a number of seconds in [0, 60)")

    @classmethod
    def for_rates(cls, creates_per_minute: float, reads_per_minute: float) -> RateLimits:
        """The account's limits as requests a minute (e.g. ``6`` creates for an account with
        little credit). The burst is a minute's worth, or 1 below 60 a minute (as Replicate's
        low-credit accounts have)."""
        return cls(
            creates_per_minute=creates_per_minute,
            reads_per_minute=reads_per_minute,
            create_burst=_burst(creates_per_minute),
            read_burst=_burst(reads_per_minute),
        )

    @property
    def reads_per_create(self) -> float:
        """Reads the account allows per generation when creates run at their full rate."""
        return self.reads_per_minute / self.creates_per_minute


class _Bucket:
    """One budget as a virtual schedule: ``tat`` is when the bucket is next empty-handed."""

    def __init__(self, per_minute: float, burst: int, now: float, jitter: float = 0.0) -> None:
        self.base_interval = 60.0 / per_minute
        self.interval = self.base_interval
        self.burst = burst
        self.jitter = jitter
        # "Theoretical arrival time": the bucket is full at any time >= tat. A tolerance below
        # zero (a burst of 1 less the jitter) must not delay the very first request.
        self.tat = now + min(0.0, self.tolerance())
        self.blocked_until = -math.inf
        self.cut_at = -math.inf

    def tolerance(self) -> float:
        """How far ahead of its schedule a request may go: the burst, less the jitter."""
        return (self.burst - 1) * self.interval - self.jitter

    def reserve(self, now: float, deadline: float | None) -> float:
        """Book the next slot; return the time to send at."""
        at = max(now, self.tat - self.tolerance(), self.blocked_until)
        if at - now < 1e-9:
            at = now
        if deadline is not None and at > deadline:
            at = max(now, deadline)  # never late because of the limiter: borrow the slot
        self.tat = max(self.tat, at) + self.interval
        return at

    def available(self, now: float) -> float:
        return (now - self.tat) / self.interval + self.burst

    def remaining(self, remaining: int, in_flight: int, now: float) -> None:
        """The server says ``remaining`` requests were left in its bucket when it took this
        request; of the ``in_flight`` ones (booked, not answered yet) it may or may not have
        counted some: the requests of a burst reach it in another order than they were booked.
        So the count is the *most* the server's bucket may hold now, and the count less every
        request in flight the *least*.

        The most fewer than ours believes (another client spends the account, or its bucket is
        smaller than assumed): ours is drained to it (at 0 the next request waits one interval;
        a 429 teaches the rest). Not to the least: during a burst of hundreds that would take
        back each request the server had already counted, and hold back the account's own rate
        for seconds. The least twice ours or more: the account allows a bigger burst than
        assumed, and ours grows to it, less a margin (up to :data:`MAX_LEARNED_BURST`).
        """
        # Not "blocked until ratelimit-reset": that is when the server's bucket is full again,
        # which may be a minute away while one request is allowed a tenth of a second from now.
        least = max(0, remaining - in_flight)
        if least >= 2 * self.burst and self.burst < MAX_LEARNED_BURST:
            # A bucket clearly bigger than ours (a count merely above ours may be stale: the
            # answers of concurrent requests come back in any order).
            if self.interval > self.base_interval:
                return  # throttled lately: do not trust a count over a lower real limit
            self.burst = min(MAX_LEARNED_BURST, int(least * (1 - LEARN_MARGIN)))
            least = min(least, self.burst)
            self.tat = min(self.tat, now + (self.burst - least) * self.interval)
        elif remaining < self.available(now):
            self.tat = max(self.tat, now + (self.burst - remaining) * self.interval)

    def throttled(self, retry_after: float | None, now: float) -> None:
        self.blocked_until = max(self.blocked_until, now + (retry_after or DEFAULT_THROTTLE_PAUSE))
        # The 429s of one burst arrive together: they halve the rate once, not once each.
        if now >= self.cut_at + self.interval:
            self.interval = min(self.base_interval / MIN_RATE_FRACTION, self.interval * 2)
            self.cut_at = now
        self.tat = max(self.tat, self.blocked_until + self.interval * (self.burst - 1))

    def succeeded(self) -> None:
        if self.interval > self.base_interval:
            self.interval = max(self.base_interval, self.interval * 0.98)


@dataclass(frozen=True)
class LimiterStats:
    """What the limiter has seen: for logs, tests and benchmarks."""

    acquired: dict[Lane, int]
    throttled: dict[Lane, int]
    waited: dict[Lane, float]


class RateLimiter:
    """The account's budgets, shared by every request of one client (thread-safe).

    >>> limits = RateLimits(creates_per_minute=60, create_burst=1, safety=0, jitter=0)
    >>> limiter = RateLimiter(limits, clock=lambda: 0)
    >>> limiter.acquire("create"), limiter.acquire("create")
    (0.0, 1.0)
    """

    def __init__(
        self, limits: RateLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or RateLimits()
        self._clock = clock
        now = clock()
        self._buckets: dict[Lane, _Bucket] = {
            "create": _Bucket(
                self.limits.creates_per_minute * (1 - self.limits.safety),
                self.limits.create_burst,
                now,
                self.limits.jitter,
            ),
            "read": _Bucket(
                self.limits.reads_per_minute * (1 - self.limits.safety),
                self.limits.read_burst,
                now,
                self.limits.jitter,
            ),
        }
        self._lock = threading.Lock()
        self._acquired: dict[Lane, int] = {"create": 0, "read": 0}
        self._throttled: dict[Lane, int] = {"create": 0, "read": 0}
        self._waited: dict[Lane, float] = {"create": 0.0, "read": 0.0}
        # Booked but not answered yet (a request that failed in transit is never answered:
        # the count errs high, which only makes the burst learned smaller).
        self._in_flight: dict[Lane, int] = {"create": 0, "read": 0}
        # Requests booked lately (a second, fading over half a minute): how busy the account is.
        self._recent: dict[Lane, load.DecayingRate] = {
            "create": load.DecayingRate(),
            "read": load.DecayingRate(),
        }

    def acquire(self, kind: str, *, deadline: float | None = None) -> float:
        """Book a slot for one request of ``kind`` (``create``, ``get``, ``cancel``, ...);
        return the seconds to wait before sending it (0 to send now). ``deadline`` (on the
        limiter's clock): the slot is never later than it."""
        budget = budget_of(kind)
        with self._lock:
            now = self._clock()
            at = self._buckets[budget].reserve(now, deadline)
            delay = max(0.0, at - now)
            self._acquired[budget] += 1
            self._in_flight[budget] += 1
            self._recent[budget].add(now)
            self._waited[budget] += delay
        return delay

    def observe(self, kind: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer: its ``ratelimit-*`` headers, and whether it was a 429."""
        budget = budget_of(kind)
        remaining = _number(headers.get("ratelimit-remaining"))
        with self._lock:
            now = self._clock()
            bucket = self._buckets[budget]
            if status == 429:
                self._in_flight[budget] = max(0, self._in_flight[budget] - 1)
                self._throttled[budget] += 1
                bucket.throttled(_retry_after(headers), now)
                return
            self._in_flight[budget] = max(0, self._in_flight[budget] - 1)
            if remaining is not None:
                bucket.remaining(int(remaining), self._in_flight[budget], now)
            if status < 400:
                bucket.succeeded()

    def poll_reads(self) -> float:
        """The reads one generation's polls may plan to spend: its share (``poll_share``) of
        what the account allows per create, less while the read budget is being throttled.

        This is the thrift of an account at its limits: :meth:`read_allowance` (what prices a
        read in the polling plan, :meth:`DurationStats.plan`) never goes below it, so a
        thousand generations in flight stay inside the read budget instead of each spending as
        if it were alone.
        """
        with self._lock:
            bucket = self._buckets["read"]
            share = self.limits.reads_per_create * self.limits.poll_share
            share *= bucket.base_interval / bucket.interval
        return max(1.0, round(share * 4) / 4)  # quarter steps: plans are cached per value

    def read_interval(self) -> float:
        """Seconds between two reads at the read budget's current rate."""
        with self._lock:
            return self._buckets["read"].interval

    def utilization(self, lane: Lane | None = None) -> float:
        """How busy a budget is, 0 (idle) to 1 (at its limit): the requests booked lately as a
        share of its rate (lower while throttled), or the share of its burst booked ahead of now
        (which the server's ``ratelimit-remaining`` drains when other clients of the account
        spend it), whichever is higher (:func:`~.load.utilization`). ``lane`` None: the busier
        of the two budgets. The shared limiter (replicas) answers the same numbers for the
        account as a whole."""
        with self._lock:
            now = self._clock()
            lanes: tuple[Lane, ...] = ("create", "read") if lane is None else (lane,)
            return max(self._busy(one, now) for one in lanes)

    def _busy(self, lane: Lane, now: float) -> float:
        bucket = self._buckets[lane]
        ahead = (bucket.tat - now) / (bucket.burst * bucket.interval)
        return load.utilization(self._recent[lane].rate(now), bucket.interval, ahead)

    def read_allowance(self) -> float:
        """The reads one generation's polls may plan to spend now: :meth:`poll_reads` (the
        thrift of an account at its limits) divided by :meth:`utilization`, so that an idle
        account polls densely where the prediction is likely to finish and a busy one returns
        to thrift as its generations approach the budgets (:func:`~.load.read_allowance`)."""
        return load.read_allowance(self.poll_reads(), self.utilization())

    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(dict(self._acquired), dict(self._throttled), dict(self._waited))

    def __repr__(self) -> str:
        limits = self.limits
        return (
            f"RateLimiter(creates_per_minute={limits.creates_per_minute:g}, "
            f"reads_per_minute={limits.reads_per_minute:g})"
        )


def _burst(per_minute: float) -> int:
    return 1 if per_minute < 60 else int(min(per_minute, MAX_LEARNED_BURST * 10))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return retry_after_seconds(headers.get("retry-after"))
