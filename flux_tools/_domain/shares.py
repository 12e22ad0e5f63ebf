"""What each person may take of one account that many share (a team's server): money and rate.

- **Budget scopes**: beside the ceiling of the whole process or server (``FLUX_BUDGET_USD``), a
  create may also spend from scopes named around a call with :func:`charging`, such as one
  person's day (``person:<id>:2026-05-01``, ``FLUX_MCP_USER_BUDGET_USD``). A reservation is
  checked and made in every scope at once. :class:`ScopedBudget` keeps them in this process;
  the shared budget of replicas (``flux_tools._drivers.redis_state``) keeps the same scopes in
  the state server. The scopes are a context variable: they follow the call (its task and the
  tasks it starts), whatever budget object the client holds.
- **A fair share of the create rate**: :class:`FairShare` gives each person a bucket whose rate
  is the account's create rate divided by the number of people who created in the last minute
  (never less than :data:`MIN_SHARE` of it), so that one person's loop of creates cannot fill the
  account's schedule ahead of everyone else: their creates go in at their share, and the others'
  slot in between. A person over their share waits (up to what the caller allows) or is told
  when to retry. Alone, a person's share is the whole account.

Pure bookkeeping on a clock it is given: no I/O, no environment.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .limits import RateLimits
from .pricing import Budget, Hold

#: A per-day scope is kept this long (today's, and yesterday's for a call that spans midnight).
DAY_SCOPE_SECONDS = 2 * 86400
#: People counted as active: those who created within this many seconds.
ACTIVE_WINDOW = 60.0
#: The smallest share of the account's create rate a person is given, however many are active
#: (here 1/20): a crowd of 200 does not leave each person a create every 20 seconds. Past 20
#: people, shares add up to more than the account; its own schedule then holds the total.
MIN_SHARE = 1 / 20
#: People remembered by the in-process fair share (the least recently active are forgotten).
MAX_PEOPLE = 100_000


@dataclass(frozen=True)
class Scope:
    """One budget a create spends from: its counter's key, its ceiling, the name errors use."""

    key: str
    limit: float | None
    name: str
    #: Seconds the counter is kept (0: for ever); a day's scope is kept two days.
    lifetime: int = 0


_SCOPES: contextvars.ContextVar[tuple[Scope, ...]] = contextvars.ContextVar(
    "flux_budget_scopes", default=()
)


def budget_scopes() -> tuple[Scope, ...]:
    """The scopes a create made now also spends from (see :func:`charging`)."""
    return _SCOPES.get()


def day_key(key: str, now: datetime | None = None) -> str:
    """``key`` with today's UTC date: ``person:abc:2026-05-01``."""
    moment = now or datetime.now(timezone.utc)
    return f"{key}:{moment.astimezone(timezone.utc):%Y-%m-%d}"


def next_reset(now: datetime | None = None) -> datetime:
    """When a daily scope starts again: the next midnight, UTC."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


@contextmanager
def charging(key: str, limit: float | None, name: str, *, daily: bool = True) -> Iterator[None]:
    """Within the block (this task and those it starts), creates also spend from the scope
    ``key`` (e.g. ``person:<id>``), whose ceiling is ``limit`` USD and which errors call
    ``name``. ``daily``: the scope is today's (UTC), the key carrying the date."""
    if limit is not None and (not math.isfinite(limit) or limit < 0):
        raise ValueError(f"{name} must be an amount in USD >= 0, got {limit!r}")
    scope = Scope(day_key(key) if daily else key, limit, name, DAY_SCOPE_SECONDS if daily else 0)
    token = _SCOPES.set((*_SCOPES.get(), scope))
    try:
        yield
    finally:
        _SCOPES.reset(token)


def check_scope(scope: Scope, model: str, usd: float | None, spent: float) -> None:
    """Raise :class:`BudgetExceeded` (naming the scope) if ``usd`` does not fit in it."""
    Budget(scope.limit, spent=spent, name=scope.name).check(model, usd)


@dataclass(frozen=True)
class ScopedHold(Hold):
    """A hold taken from the ceiling and from scopes: their counters' keys."""

    scopes: tuple[str, ...] = ()


class ScopedBudget(Budget):
    """A :class:`Budget` that also keeps the scopes of :func:`charging` (in this process).

    Without scopes it is exactly a Budget. With them, a reservation is refused when it would
    pass any scope's ceiling (checked first), the ceiling or the per-call limit; it is then made
    in all.
    Released and aborted holds are given back to every scope they were taken from."""

    def __init__(
        self,
        limit: float | None = None,
        *,
        per_call: float | None = None,
        spent: float = 0.0,
        name: str = "FLUX_BUDGET_USD",
        per_call_name: str = "FLUX_MAX_CALL_USD",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            limit, per_call=per_call, spent=spent, name=name, per_call_name=per_call_name
        )
        self._clock = clock
        #: scope key -> [USD spent (or held), when it may be forgotten (0: never)]
        self._scoped: dict[str, list[float]] = {}

    @property
    def active(self) -> bool:
        return super().active or bool(budget_scopes())

    def spent_in(self, key: str) -> float:
        """USD spent (or held for creates in flight) in the scope ``key``."""
        with self._lock:
            entry = self._scoped.get(key)
            return round(entry[0], 6) if entry else 0.0

    def reserve(self, model: str, usd: float | None) -> Hold | None:
        scopes = budget_scopes()
        if not scopes:
            return super().reserve(model, usd)
        with self._lock:
            self._forget_old()
            # The scopes first: when a person's day and the total are both passed, the person
            # hears about their own day (what they can act on).
            for scope in scopes:
                check_scope(scope, model, usd, self._spent_here(scope.key))
            if self.limit is not None or self.per_call is not None:
                self._check(model, usd)  # the ceiling and the per-call limit, named as theirs
            if usd is None:  # cannot happen: an unknown price is refused by the scopes above
                return None
            self._spent += usd
            now = self._clock()
            for scope in scopes:
                entry = self._scoped.setdefault(scope.key, [0.0, 0.0])
                entry[0] += usd
                entry[1] = now + scope.lifetime if scope.lifetime else 0.0
            return ScopedHold(usd, model, tuple(scope.key for scope in scopes))

    def release(self, hold: Hold | None) -> None:
        if hold is None:
            return
        with self._lock:
            self._spent = max(0.0, self._spent - hold.usd)
            self._give_back(hold)

    def settle(self, prediction_id: str, status: str) -> None:
        with self._lock:
            hold = self._holds.pop(prediction_id, None)
            if hold is not None and status == "aborted":
                self._spent = max(0.0, self._spent - hold.usd)
                self._give_back(hold)

    def _spent_here(self, key: str) -> float:
        entry = self._scoped.get(key)
        return entry[0] if entry else 0.0

    def _give_back(self, hold: Hold) -> None:
        for key in hold.scopes if isinstance(hold, ScopedHold) else ():
            entry = self._scoped.get(key)
            if entry is not None:
                entry[0] = max(0.0, entry[0] - hold.usd)

    def _forget_old(self) -> None:
        now = self._clock()
        for key in [k for k, (_, until) in self._scoped.items() if until and until < now]:
            del self._scoped[key]


# -- a fair share of the create rate ---------------------------------------------------------------


@dataclass(frozen=True)
class ShareSlot:
    """A person's turn to create: ``granted`` with ``delay`` seconds to wait first (the slot is
    booked); or not granted, the turn being ``delay`` seconds away, past what the caller allowed
    (nothing is booked: retry then)."""

    granted: bool
    delay: float
    #: People active in the last minute, the caller included.
    active: int


def share_of(limits: RateLimits, active: int) -> tuple[float, int]:
    """A person's bucket when ``active`` people create: (seconds between creates, burst)."""
    shares = max(1, min(active, round(1 / MIN_SHARE)))
    base = 60.0 / (limits.creates_per_minute * (1 - limits.safety))
    return base * shares, max(1, limits.create_burst // shares)


class FairShare:
    """Each person's share of the account's create rate, in this process (thread-safe).

    A virtual schedule (GCRA) per person, like the account's own buckets
    (:class:`~flux_tools._domain.limits.RateLimiter`), whose interval is the account's times
    the number of people active (see the module)."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        window: float = ACTIVE_WINDOW,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, person: str, *, max_wait: float) -> ShareSlot:
        """Book ``person``'s next create if it may go within ``max_wait`` seconds."""
        with self._lock:
            now = self._clock()
            self._seen[person] = now
            self._seen.move_to_end(person)
            while self._seen:
                oldest, when = next(iter(self._seen.items()))
                if when >= now - self._window and len(self._seen) <= MAX_PEOPLE:
                    break
                self._seen.popitem(last=False)
                if self._tat.get(oldest, now) <= now:  # nothing booked ahead: forget the bucket
                    self._tat.pop(oldest, None)
            active = len(self._seen)
            interval, burst = share_of(self.limits, active)
            tat = self._tat.get(person, now)
            at = max(now, tat - (burst - 1) * interval)
            delay = at - now
            if delay > max_wait + 1e-9:
                return ShareSlot(False, delay, active)
            self._tat[person] = max(tat, at) + interval
            return ShareSlot(True, delay, active)


__all__ = [
    "ACTIVE_WINDOW",
    "DAY_SCOPE_SECONDS",
    "MIN_SHARE",
    "FairShare",
    "Scope",
    "ScopedBudget",
    "ScopedHold",
    "ShareSlot",
    "budget_scopes",
    "charging",
    "check_scope",
    "day_key",
    "next_reset",
    "share_of",
]
