"""Replicate's account rate limits: a create bucket and a read bucket per token, with burst.

Replicate allows 600 creates and 3000 other requests a minute per account (6 creates a minute
with a burst of 1 for accounts with little credit), answers ``ratelimit-remaining`` and
``ratelimit-reset`` on each response, and refuses a request over the limit with a 429 whose
body is ``{"detail": "Request was throttled. Your rate limit resets in ~Ns.", "status": 429,
"retry_after": N}`` and a ``Retry-After: N`` header (whole seconds).

Each bucket holds ``burst`` tokens (the whole ``requests`` when not given), refilled at
``requests / period`` per second; a request takes one token, a refused one takes none.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Literal

Bucket = Literal["creates", "reads"]
BUCKETS: tuple[Bucket, ...] = ("creates", "reads")

_LIMIT = re.compile(r"(\d+)/(\d+(?:\.\d*)?)(s|m|h)?(?::burst=(\d+))?")
_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
SYNTAX = (
    "NAME=COUNT/SECONDS[:burst=B] joined by commas, NAME one of creates, reads "
    "(e.g. creates=600/60,reads=3000/60 or creates=6/60:burst=1); or a preset: "
    "replicate (600 creates and 3000 reads a minute), replicate-low-credit (6 creates a "
    "minute with a burst of 1, 3000 reads)"
)


@dataclass(frozen=True)
class RateLimit:
    """``requests`` per ``period`` seconds, at most ``burst`` at once (default: ``requests``)."""

    requests: int
    period: float = 60.0
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.requests < 1 or self.period <= 0 or (self.burst is not None and self.burst < 1):
            raise ValueError("a rate limit needs requests >= 1, period > 0 and burst >= 1")

    @property
    def capacity(self) -> int:
        return self.requests if self.burst is None else self.burst

    @property
    def per_second(self) -> float:
        return self.requests / self.period

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``600/60``, ``600/1m``, ``6/60:burst=1``."""
        match = _LIMIT.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"rate limit {text!r} must look like COUNT/SECONDS[:burst=B]")
        count, period, unit, burst = match.groups()
        return cls(int(count), float(period) * _UNIT[unit], int(burst) if burst else None)

    def __str__(self) -> str:
        burst = f":burst={self.burst}" if self.burst is not None else ""
        return f"{self.requests}/{self.period:g}{burst}"


@dataclass(frozen=True)
class RateLimits:
    """The limits an emulator enforces; a bucket left as None is not limited."""

    creates: RateLimit | None = None
    reads: RateLimit | None = None

    @classmethod
    def replicate(cls) -> RateLimits:
        """Replicate's published limits: 600 creates and 3000 other requests a minute."""
        return cls(RateLimit(600, 60), RateLimit(3000, 60))

    @classmethod
    def replicate_low_credit(cls) -> RateLimits:
        """An account with little credit: 6 creates a minute with a burst of 1."""
        return cls(RateLimit(6, 60, burst=1), RateLimit(3000, 60))

    @classmethod
    def parse(cls, text: str) -> RateLimits:
        """The ``--rate-limit`` syntax (see ``SYNTAX``)."""
        text = text.strip()
        if text == "replicate":
            return cls.replicate()
        if text == "replicate-low-credit":
            return cls.replicate_low_credit()
        found: dict[str, RateLimit] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or name not in BUCKETS:
                raise ValueError(f"rate limits: {part!r} is not valid; use {SYNTAX}")
            if name in found:
                raise ValueError(f"rate limits: {name} is given twice")
            try:
                found[name] = RateLimit.parse(value)
            except ValueError as exc:
                raise ValueError(f"rate limits: {exc}; use {SYNTAX}") from None
        if not found:
            raise ValueError(f"rate limits: nothing given; use {SYNTAX}")
        return cls(**found)

    @classmethod
    def coerce(cls, value: RateLimits | str | None) -> RateLimits | None:
        if value is None or isinstance(value, RateLimits):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise TypeError(f"rate_limits must be a RateLimits, a string or None, not {value!r}")

    def limit(self, bucket: Bucket) -> RateLimit | None:
        return self.creates if bucket == "creates" else self.reads


@dataclass(frozen=True)
class Decision:
    """One request's verdict: allowed or not, and what the response headers say."""

    allowed: bool
    remaining: int
    reset: int  # whole seconds until the bucket is full again
    retry_after: int  # whole seconds until one token is back (0 when allowed)

    def headers(self) -> list[tuple[str, str]]:
        found = [("ratelimit-remaining", str(self.remaining)), ("ratelimit-reset", str(self.reset))]
        if not self.allowed:
            found.append(("retry-after", str(self.retry_after)))
        return found

    def body(self) -> dict[str, object]:
        return {
            "detail": throttled_detail(self.retry_after),
            "status": 429,
            "retry_after": self.retry_after,
        }


def throttled_detail(seconds: float) -> str:
    return f"Request was throttled. Your rate limit resets in ~{max(1, math.ceil(seconds))}s."


class _TokenBucket:
    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.capacity)
        self.updated = now

    def take(self, now: float) -> Decision:
        rate, capacity = self.limit.per_second, self.limit.capacity
        self.tokens = min(capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        # A hair of float error must not turn "full in 0 s" into 1 s.
        reset = max(0, math.ceil((capacity - self.tokens) / rate - 1e-9))
        retry = 0 if allowed else max(1, math.ceil((1.0 - self.tokens) / rate - 1e-9))
        return Decision(allowed, math.floor(self.tokens + 1e-9), reset, retry)


class Limiter:
    """Token buckets per account (bearer token) and bucket kind. Thread-safe."""

    def __init__(self, limits: RateLimits | None) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, Bucket], _TokenBucket] = {}

    def take(self, account: str, bucket: Bucket, now: float) -> Decision | None:
        """The verdict for one request, None when that bucket has no limit."""
        limit = self.limits.limit(bucket) if self.limits is not None else None
        if limit is None:
            return None
        with self._lock:
            state = self._buckets.get((account, bucket))
            if state is None or state.limit != limit:
                state = self._buckets[(account, bucket)] = _TokenBucket(limit, now)
            return state.take(now)

    def set_limits(self, limits: RateLimits | None) -> None:
        """Change the limits; every bucket starts full again."""
        with self._lock:
            self.limits = limits
            self._buckets.clear()
