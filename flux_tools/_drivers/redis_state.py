"""The state replicas share, in Valkey or Redis (``FLUX_STATE_URL``), through ``redis.asyncio``.

Every decision that several replicas could race on is one Lua script, run atomically by the
server on its own clock (``TIME``):

- **the account's rate limits**: the same virtual schedule (GCRA) as the in-process
  :class:`~flux_tools._domain.limits.RateLimiter`, one hash per budget (``create``, ``read``):
  a slot is booked with one round trip; a 429 and ``ratelimit-remaining`` teach every replica.
  If the state server cannot be reached, each replica goes on with its own in-process schedule
  (logged): the account's 429s then teach it, as they would one process.
- **budgets**: micro-dollars per scope (``server``, ``person:<id>:<day>``), checked and reserved
  in every scope at once, so N replicas together never pass a ceiling; a hold is bound to its
  prediction in the state server, so whichever replica sees it end may settle it.
- **each person's share of the create rate**: the people active in the last minute (a sorted set)
  and a bucket per person, read and booked by one script (:class:`RedisFairShare`).
- **the journal**: one hash of entries, one lease key per entry (``SET NX PX``), renewed by the
  replica working on it; an entry whose lease expired is adopted by the next replica that looks.
- **ownership** and **learned durations**: plain keys, with expiry.

Keys are ``flux:<namespace>:...``, the namespace a digest of the account (API and token). The
``redis`` package is imported when a :class:`RedisState` is made: ``pip install
'flux-tools[server]'``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._base.errors import FluxConnectionError, retry_after_seconds
from .._base.text import safe_text
from .._base.urls import is_loopback, redact_url
from .._domain.limits import (
    DEFAULT_THROTTLE_PAUSE,
    LEARN_MARGIN,
    MAX_LEARNED_BURST,
    MIN_RATE_FRACTION,
    Lane,
    LimiterStats,
    RateLimiter,
    RateLimits,
    budget_of,
)
from .._domain.load import LOAD_WINDOW, utilization
from .._domain.polling import DurationStats, registry_typical_seconds
from .._domain.pricing import Budget, Hold
from .._domain.shares import (
    ACTIVE_WINDOW,
    MIN_SHARE,
    FairShare,
    Scope,
    ShareSlot,
    budget_scopes,
    charging,
    check_scope,
    share_of,
)
from .journal import RETENTION_SECONDS, PendingPrediction, ended_without_image

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("flux_tools")

#: How long a replica's hold on a journal entry lasts unless renewed: a replica killed with
#: SIGKILL leaves its entries to another replica after at most this long.
LEASE_SECONDS = 10.0
#: How often a replica renews its leases, and looks for entries nobody holds.
RENEW_SECONDS = 3.0
ADOPT_SECONDS = 2.0
#: How long ownership and a budget's hold are remembered.
OWNER_SECONDS = 30 * 86400
HOLD_SECONDS = 2 * 86400
#: A bucket untouched this long is forgotten (it would be full again anyway).
IDLE_BUCKET_SECONDS = 120
#: Connections to the state server per replica: a thousand generations share them.
MAX_CONNECTIONS = 64
#: Seconds a round trip may take before the state counts as unreachable.
STATE_TIMEOUT = 5.0
MICRO = 1_000_000

# The GCRA of flux_tools._domain.limits._Bucket, run atomically on the server's clock, with the
# account's recent rate of requests (flux_tools._domain.load.DecayingRate: 'rate' a second at
# 'rate_at', fading over ARGV[#ARGV - 1] seconds). Numbers go back as strings: Redis turns a Lua
# number into an integer.
_LIMIT_SCRIPT = """
local key, op = KEYS[1], ARGV[1]
local base, burst0, jitter = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tau = tonumber(ARGV[#ARGV - 1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', key, 'tat', 'interval', 'burst', 'blocked', 'cut', 'inflight', 'base',
  'rate', 'rate_at')
local tat, interval, burst = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
local blocked, cut, inflight = tonumber(h[4]), tonumber(h[5]), tonumber(h[6])
local rate, rate_at = tonumber(h[8]) or 0, tonumber(h[9]) or now
if tat == nil then
  interval, burst, blocked, cut, inflight = base, burst0, 0, 0, 0
  tat = now + math.min(0, (burst - 1) * interval - jitter)
else
  base = tonumber(h[7])
end
rate = rate * math.exp(-math.max(0, now - rate_at) / tau)
rate_at = math.max(rate_at, now)
local delay = 0
if op == 'reserve' then
  rate = rate + 1 / tau
  local max_wait = tonumber(ARGV[5])
  local at = math.max(now, tat - ((burst - 1) * interval - jitter), blocked)
  if at - now < 1e-9 then at = now end
  if max_wait >= 0 and at > now + max_wait then at = now + max_wait end
  tat = math.max(tat, at) + interval
  inflight = inflight + 1
  delay = at - now
else
  local status, remaining, retry = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local pause, min_fraction = tonumber(ARGV[8]), tonumber(ARGV[9])
  local max_burst, margin = tonumber(ARGV[10]), tonumber(ARGV[11])
  inflight = math.max(0, inflight - 1)
  if status == 429 then
    if retry <= 0 then retry = pause end
    blocked = math.max(blocked, now + retry)
    if now >= cut + interval then
      interval = math.min(base / min_fraction, interval * 2)
      cut = now
    end
    tat = math.max(tat, blocked + interval * (burst - 1))
  else
    if remaining >= 0 then
      -- _Bucket.remaining: the count is the most the server's bucket may hold now, the count
      -- less the requests in flight the least. In flight: sent and not answered; slots booked
      -- for later (a queue of creates waiting for the account's rate) have not reached the
      -- server: they took none of its count.
      local tolerance = (burst - 1) * interval - jitter
      local queued = math.max(0, math.floor((tat - tolerance - now) / interval))
      local least = math.max(0, remaining - math.max(0, inflight - queued))
      if least >= 2 * burst and burst < max_burst then
        if interval <= base then
          burst = math.min(max_burst, math.floor(least * (1 - margin)))
          least = math.min(least, burst)
          tat = math.min(tat, now + (burst - least) * interval)
        end
      elseif remaining < (now - tat) / interval + burst then
        tat = math.max(tat, now + (burst - remaining) * interval)
      end
    end
    if status < 400 and interval > base then
      interval = math.max(base, interval * 0.98)
    end
  end
end
redis.call('HSET', key, 'tat', tostring(tat), 'interval', tostring(interval), 'burst', burst,
  'blocked', tostring(blocked), 'cut', tostring(cut), 'inflight', inflight, 'base', tostring(base),
  'rate', tostring(rate), 'rate_at', tostring(rate_at))
local ttl = math.max(tonumber(ARGV[#ARGV]), tat - now + 60, blocked - now + 60)
redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
-- The share of the burst booked ahead of now, and of the rate used lately (the account's).
local span = burst * interval
local ahead = (tat - now) / span
return {tostring(delay), tostring(interval), tostring(base), tostring(ahead), tostring(rate),
  tostring(span)}
"""

# Budgets: KEYS are the scopes' counters (micro-USD). ARGV: amount, then a limit per scope (-1:
# none), then a lifetime per scope (0: none). Answers 0 and the amounts, or the 1-based index of
# the scope that would be exceeded and what it has spent.
_RESERVE_SCRIPT = """
local amount = tonumber(ARGV[1])
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[1 + i])
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if limit >= 0 and spent + amount > limit then return {i, spent} end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], amount)
  local ttl = tonumber(ARGV[1 + n + i])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return {0, 0}
"""
# Give back ``amount`` in each scope (never below zero).
_REFUND_SCRIPT = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if spent > 0 then redis.call('SET', KEYS[i], math.max(0, spent - amount), 'KEEPTTL') end
end
return 1
"""
# A hold's binding, taken once (GETDEL), refunded when the prediction was aborted.
_SETTLE_SCRIPT = """
local hold = redis.call('GET', KEYS[1])
if not hold then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[1] ~= 'aborted' then return 1 end
local data = cjson.decode(hold)
for _, key in ipairs(data['scopes']) do
  local spent = tonumber(redis.call('GET', key) or '0')
  if spent > 0 then redis.call('SET', key, math.max(0, spent - data['amount']), 'KEEPTTL') end
end
return 2
"""
# A person's fair share of the create rate (flux_tools._domain.shares.FairShare): KEYS are the set
# of people active (scored by when they last asked) and this person's bucket. ARGV: the person,
# the account's create interval, its burst, the most shares counted, the window, the longest
# wait allowed. Answers granted (1 or 0), the delay, the people active.
_SHARE_SCRIPT = """
local person, base, burst0 = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local most, window, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, person)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000))
local active = redis.call('ZCARD', KEYS[1])
local shares = math.max(1, math.min(active, most))
local interval = base * shares
local burst = math.max(1, math.floor(burst0 / shares))
local tat = tonumber(redis.call('GET', KEYS[2]) or '') or now
local at = math.max(now, tat - (burst - 1) * interval)
local delay = at - now
if delay > max_wait + 1e-9 then return {0, tostring(delay), active} end
local next_tat = math.max(tat, at) + interval
redis.call('SET', KEYS[2], tostring(next_tat), 'PX', math.ceil((next_tat - now + window) * 1000))
return {1, tostring(delay), active}
"""
# The journal: entries nobody holds are taken (a lease each), up to ARGV[4] of them.
_ADOPT_SCRIPT = """
local ids = redis.call('HKEYS', KEYS[1])
local got = {}
local most = tonumber(ARGV[4])
for _, id in ipairs(ids) do
  if redis.call('SET', ARGV[1] .. id, ARGV[2], 'NX', 'PX', ARGV[3]) then
    table.insert(got, id)
    table.insert(got, redis.call('HGET', KEYS[1], id))
    if #got >= 2 * most then break end
  end
end
return got
"""
# Renew this replica's leases; a lease another replica took is lost (the ids are answered).
_RENEW_SCRIPT = """
local lost = {}
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local holder = redis.call('GET', key)
  if holder == ARGV[2] then
    redis.call('PEXPIRE', key, ARGV[3])
  elseif not holder then
    redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
# Let go of this replica's leases (only those it still holds).
_RELEASE_SCRIPT = """
local n = 0
for i = 3, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('GET', key) == ARGV[2] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"""


def _unreachable(what: str, exc: BaseException) -> FluxConnectionError:
    return FluxConnectionError(
        f"The state server (FLUX_STATE_URL) could not be reached to {what} "
        f"({type(exc).__name__}): nothing was sent. Try again in a moment; if it persists, "
        "the server's operator must check the state server.",
        maybe_created=False,
    )


class _FallbackWarning:
    """One warning line while a replica works on its own because the state server is unreachable:
    at once, then at most every ``every`` seconds (an outage must not flood the log)."""

    def __init__(self, what: str, every: float = 30.0) -> None:
        self._what = what
        self._every = every
        self._last = -math.inf

    def __call__(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last > self._every:
            self._last = now
            logger.warning(
                "the state server is unreachable (%s): this replica keeps %s on its own until "
                "it is back",
                safe_text(exc, 200),
                self._what,
            )


class RedisState:
    """Valkey or Redis behind :class:`flux_tools._drivers.state.State` (see the module)."""

    shared = True

    def __init__(self, url: str, *, namespace: str, replica: str) -> None:
        import redis.asyncio as aioredis  # the server extra

        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=STATE_TIMEOUT,
            socket_timeout=STATE_TIMEOUT,
            socket_connect_timeout=STATE_TIMEOUT,
            decode_responses=True,
        )
        self.redis: Redis = aioredis.Redis(connection_pool=pool)
        self.prefix = f"flux:{namespace}:"
        self.replica = replica
        self.description = redact_url(url)
        self.owners = RedisOwners(self)
        self._samples = RedisSampleStore(self)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def limiter(self, limits: RateLimits) -> RedisRateLimiter:
        return RedisRateLimiter(self, limits)

    def budget(self, limit: float | None, per_call: float | None = None) -> RedisBudget:
        return RedisBudget(self, limit, per_call=per_call)

    def fair_share(self, limits: RateLimits) -> RedisFairShare:
        return RedisFairShare(self, limits)

    def journal(self, output_dir: Path, *, api: str | None = None) -> RedisJournal:
        # The entries are in the state server, under this account's namespace (which the API's
        # URL is part of): replicas on another API never see them.
        del output_dir, api
        return RedisJournal(self)

    def durations(self, base_url: str, cache_dir: Path | None = None) -> DurationStats:
        """Learned durations shared by the replicas (the registry's priors unless the API is on
        this machine, as :func:`~flux_tools._drivers.durations.durations_for_api` decides)."""
        del cache_dir
        host = (urlsplit(base_url).hostname or "").lower()
        prior = None if is_loopback(host) else registry_typical_seconds
        return DurationStats(prior=prior, store=self._samples, namespace=host)

    async def start(self) -> None:
        await self.ping()
        await self.sync()

    async def sync(self) -> None:
        await self._samples.sync()

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        try:
            await self.sync()
        except Exception as exc:
            logger.warning("could not save learned durations: %s", safe_text(exc, 200))
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()


class RedisRateLimiter(RateLimiter):
    """The account's budgets shared by every replica (see the module). Its in-process schedule
    (the parent class) is what a replica falls back on while the state server is unreachable,
    and what the blocking client would use (it refuses: see ``Requests.slot``)."""

    def __init__(self, state: RedisState, limits: RateLimits) -> None:
        super().__init__(limits)
        self._state = state
        self._script = state.redis.register_script(_LIMIT_SCRIPT)
        # What the shared bucket said last, per budget: (the share of its burst booked ahead,
        # its recent requests a second, the seconds its burst spans, when it was said here).
        self._shared: dict[Lane, tuple[float, float, float, float]] = {}
        self._warn = _FallbackWarning("the account's rate limits")

    def _args(self, lane: Lane) -> list[Any]:
        bucket = self._buckets[lane]
        return [repr(bucket.base_interval), bucket.burst, repr(bucket.jitter)]

    async def acquire_async(self, kind: str, *, deadline: float | None = None) -> float:
        lane = budget_of(kind)
        max_wait = -1.0 if deadline is None else max(0.0, deadline - self._clock())
        try:
            answer = await self._script(
                keys=[self._state.key("limit", lane)],
                args=[
                    "reserve",
                    *self._args(lane),
                    repr(max_wait),
                    repr(LOAD_WINDOW),
                    IDLE_BUCKET_SECONDS,
                ],
            )
        except Exception as exc:
            self._fell_back(exc)
            return self.acquire(kind, deadline=deadline)
        delay = max(0.0, float(answer[0]))
        with self._lock:
            self._learned(lane, answer)
            self._acquired[lane] += 1
            self._waited[lane] += delay
        return delay

    async def observe_async(self, kind: str, status: int, headers: Mapping[str, str]) -> None:
        lane = budget_of(kind)
        remaining = headers.get("ratelimit-remaining")
        try:
            left = int(float(remaining)) if remaining is not None else -1
        except ValueError:
            left = -1
        retry = _retry_after(headers)
        if status == 429:
            with self._lock:
                self._throttled[lane] += 1
        try:
            answer = await self._script(
                keys=[self._state.key("limit", lane)],
                args=[
                    "observe",
                    *self._args(lane),
                    status,
                    max(-1, left),
                    repr(retry if retry is not None else -1.0),
                    repr(DEFAULT_THROTTLE_PAUSE),
                    repr(MIN_RATE_FRACTION),
                    MAX_LEARNED_BURST,
                    repr(LEARN_MARGIN),
                    repr(LOAD_WINDOW),
                    IDLE_BUCKET_SECONDS,
                ],
            )
        except Exception as exc:
            self._fell_back(exc)
            self.observe(kind, status, headers)
            return
        with self._lock:
            self._learned(lane, answer)

    def _learned(self, lane: Lane, answer: Sequence[str]) -> None:
        """What the shared bucket said: its current rate (so ``poll_reads`` and
        ``read_interval`` answer for the account) and how busy the account keeps it."""
        bucket = self._buckets[lane]
        bucket.interval = max(bucket.base_interval, float(answer[1]))
        ahead, rate, span = (float(a) for a in answer[3:6])
        self._shared[lane] = (ahead, rate, span, self._clock())

    def utilization(self, lane: Lane | None = None) -> float:
        """How busy the account's budget is, for every replica (see the parent): what the last
        round trip said, aged since (the booked slots pass, the recent requests fade) so that a
        replica idle for a while does not price its reads by a rush long over."""
        with self._lock:
            now = self._clock()
            lanes: tuple[Lane, ...] = ("create", "read") if lane is None else (lane,)
            return max(self._shared_busy(one, now) for one in lanes)

    def _shared_busy(self, lane: Lane, now: float) -> float:
        said = self._shared.get(lane)
        if said is None:  # nothing heard yet from the state server: this replica's own view
            return self._busy(lane, now)
        ahead, rate, span, at = said
        age = max(0.0, now - at)
        faded = rate * math.exp(-age / LOAD_WINDOW)
        return utilization(faded, self._buckets[lane].interval, ahead - age / span)

    def _fell_back(self, exc: BaseException) -> None:
        with self._lock:  # until the state server answers again: this replica's own view
            self._shared.clear()
        self._warn(exc)

    def stats(self) -> LimiterStats:
        return super().stats()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return retry_after_seconds(headers.get("retry-after"))


class RedisBudget:
    """Money every replica spends together (a :class:`~flux_tools._domain.shared.SharedBudget`).

    The server-wide ceiling (``FLUX_BUDGET_USD``) is the ``server`` scope; a person's daily
    ceiling is added around their calls with :meth:`charging` (``person:<id>:<day>``). A
    reservation is checked and made in every scope at once, atomically."""

    def __init__(self, state: RedisState, limit: float | None, *, per_call: float | None) -> None:
        # The checks that need no state (per call, an unknown price) and the refusals' words are
        # the in-process Budget's own.
        self._local = Budget(limit, per_call=per_call)
        self.limit, self.per_call, self.name = limit, per_call, self._local.name
        self._state = state
        self._reserve = state.redis.register_script(_RESERVE_SCRIPT)
        self._refund = state.redis.register_script(_REFUND_SCRIPT)
        self._settle = state.redis.register_script(_SETTLE_SCRIPT)

    #: Within the block, creates also spend from a scope (a person's day): see
    #: :func:`~flux_tools._domain.shares.charging`.
    charging = staticmethod(charging)

    @property
    def active(self) -> bool:
        return self._local.active or bool(budget_scopes())

    def scopes(self) -> tuple[Scope, ...]:
        """The scopes of the call (a person's day) first, then the server's: when both would be
        passed, the person hears about their own day (what they can act on)."""
        server = Scope("server", self.limit, self.name)
        return (*budget_scopes(), server)

    async def reserve_async(self, model: str, usd: float | None) -> Hold | None:
        scopes = self.scopes()
        for scope in scopes[:-1]:  # an unknown price, or more than a whole scope: refused here
            check_scope(scope, model, usd, 0.0)
        self._local.check(model, usd)  # per call, an unknown price; the ceiling with 0 spent
        if usd is None:
            return None
        amount = round(usd * MICRO)
        keys = [self._state.key("budget", s.key) for s in scopes]
        limits = [-1 if s.limit is None else round(s.limit * MICRO) for s in scopes]
        try:
            index, spent = await self._reserve(
                keys=keys, args=[amount, *limits, *(s.lifetime for s in scopes)]
            )
        except Exception as exc:
            raise _unreachable("keep the budget", exc) from None
        if int(index):
            check_scope(scopes[int(index) - 1], model, usd, int(spent) / MICRO)
        return SharedHold(usd, model, tuple(keys))

    async def release_async(self, hold: Hold | None) -> None:
        if not isinstance(hold, SharedHold):
            return
        try:
            await self._refund(keys=list(hold.scopes), args=[round(hold.usd * MICRO)])
        except Exception as exc:
            logger.warning("could not give back $%.4f to the budget: %s", hold.usd, exc)

    async def bind_async(self, prediction_id: str, hold: Hold | None) -> None:
        if not isinstance(hold, SharedHold):
            return
        data = json.dumps({"amount": round(hold.usd * MICRO), "scopes": list(hold.scopes)})
        try:
            await self._state.redis.set(
                self._state.key("hold", prediction_id), data, ex=HOLD_SECONDS
            )
        except Exception as exc:
            logger.warning("could not record the hold of %s: %s", prediction_id, exc)

    async def settle_async(self, prediction_id: str, status: str) -> None:
        try:
            await self._settle(keys=[self._state.key("hold", prediction_id)], args=[status])
        except Exception as exc:
            logger.warning("could not settle the hold of %s: %s", prediction_id, exc)

    async def spent(self, scope: str = "server") -> float:
        """USD spent (or held for creates in flight) in ``scope``, by every replica."""
        value = await self._state.redis.get(self._state.key("budget", scope))
        return int(value or 0) / MICRO

    def __repr__(self) -> str:
        return f"RedisBudget(limit={self.limit!r}, per_call={self.per_call!r})"


class RedisFairShare:
    """Each person's share of the account's create rate, for every replica together (see
    :class:`~flux_tools._domain.shares.FairShare`, which it falls back on, per replica, while
    the state server is unreachable)."""

    def __init__(self, state: RedisState, limits: RateLimits) -> None:
        self.limits = limits
        self._state = state
        self._script = state.redis.register_script(_SHARE_SCRIPT)
        self._local = FairShare(limits)
        self._warn = _FallbackWarning("each person's share of the create rate")

    async def reserve(self, person: str, *, max_wait: float) -> ShareSlot:
        interval, burst = share_of(self.limits, 1)
        most = round(1 / MIN_SHARE)
        try:
            granted, delay, active = await self._script(
                keys=[self._state.key("share", "active"), self._state.key("share", person)],
                args=[person, repr(interval), burst, most, repr(ACTIVE_WINDOW), repr(max_wait)],
            )
        except Exception as exc:
            self._warn(exc)
            return self._local.reserve(person, max_wait=max_wait)
        return ShareSlot(bool(int(granted)), max(0.0, float(delay)), int(active))


@dataclass(frozen=True)
class SharedHold(Hold):
    """A hold in the state server: the scopes' counters it was taken from."""

    scopes: tuple[str, ...] = ()


class RedisJournal:
    """The journal in the state server: entries, each held under a lease (see the module)."""

    shared = True

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._entries = state.key("journal")
        self._lease_prefix = state.key("lease", "")
        self.where = f"{state.description} ({self._entries})"
        self._held: set[str] = set()
        redis = state.redis
        self._adopt = redis.register_script(_ADOPT_SCRIPT)
        self._renew = redis.register_script(_RENEW_SCRIPT)
        self._release = redis.register_script(_RELEASE_SCRIPT)

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def _lease_ms(self) -> int:
        return int(LEASE_SECONDS * 1000)

    async def add(self, entry: PendingPrediction, owner: str | None = None) -> None:
        data = replace(entry, owner=owner).to_json()
        self._held.add(entry.prediction_id)
        try:
            async with self._state.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._entries, entry.prediction_id, data)
                pipe.set(
                    self._lease_prefix + entry.prediction_id,
                    self._state.replica,
                    px=self._lease_ms(),
                )
                await pipe.execute()
        except Exception as exc:
            logger.warning(
                "could not record prediction %s in the shared journal (%s): another replica "
                "will not take it up if this one stops before it is saved",
                safe_text(entry.prediction_id, 100),
                safe_text(exc, 200),
            )

    async def remove(self, prediction_id: str) -> None:
        self._held.discard(prediction_id)
        try:
            async with self._state.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._entries, prediction_id)
                pipe.delete(self._lease_prefix + prediction_id)
                await pipe.execute()
        except Exception as exc:
            logger.warning(
                "could not remove journal entry %s: %s", safe_text(prediction_id, 100), exc
            )

    async def get(self, prediction_id: str) -> PendingPrediction | None:
        try:
            raw = await self._state.redis.hget(self._entries, prediction_id)
        except Exception as exc:  # provenance only: the call goes on without it
            logger.warning("could not read journal entry %s: %s", prediction_id, exc)
            return None
        return PendingPrediction.from_json(str(raw)) if raw else None

    async def settle(self, prediction_id: str | None, error: BaseException, *, owner: bool) -> bool:
        if prediction_id and ended_without_image(error, owner=owner):
            await self.remove(prediction_id)
            return True
        return False

    async def adopt(self) -> tuple[list[PendingPrediction], list[PendingPrediction]]:
        answer = await self._adopt(
            keys=[self._entries],
            args=[self._lease_prefix, self._state.replica, self._lease_ms(), 100],
        )
        live: list[PendingPrediction] = []
        expired: list[PendingPrediction] = []
        for pid, raw in zip(answer[::2], answer[1::2], strict=True):
            entry = PendingPrediction.from_json(raw)
            if entry is None:  # unreadable: nobody can resume it
                await self.remove(pid)
                logger.warning("removed an unreadable journal entry: %s", safe_text(pid, 100))
            elif entry.age() > RETENTION_SECONDS:
                await self.remove(pid)
                expired.append(entry)
            else:
                self._held.add(pid)
                live.append(entry)
        return live, expired

    async def renew(self) -> None:
        held = sorted(self._held)
        if not held:
            return
        lost = await self._renew(
            keys=[], args=[self._lease_prefix, self._state.replica, self._lease_ms(), *held]
        )
        for pid in lost:
            self._held.discard(pid)
            logger.warning(
                "prediction %s is now held by another replica (this one was too slow to "
                "renew its lease)",
                safe_text(pid, 100),
            )

    async def release(self, prediction_ids: Sequence[str] | None = None) -> int:
        held = sorted(self._held if prediction_ids is None else set(prediction_ids) & self._held)
        self._held.difference_update(held)
        if not held:
            return 0
        released = await self._release(
            keys=[], args=[self._lease_prefix, self._state.replica, *held]
        )
        return int(released)

    async def owner_of(self, prediction_id: str) -> str | None:
        raw = await self._state.redis.hget(self._entries, prediction_id)
        entry = PendingPrediction.from_json(str(raw)) if raw else None
        return entry.owner if entry is not None else None


class RedisOwners:
    """Who created each prediction, for every replica."""

    def __init__(self, state: RedisState) -> None:
        self._state = state

    async def set(self, prediction_id: str, owner: str | None) -> None:
        try:
            await self._state.redis.set(
                self._state.key("owner", prediction_id), owner or "", ex=OWNER_SECONDS
            )
        except Exception as exc:
            logger.warning("could not record the owner of %s: %s", prediction_id, exc)

    async def get(self, prediction_id: str) -> str | None:
        try:
            value = await self._state.redis.get(self._state.key("owner", prediction_id))
        except Exception as exc:  # unknown: the server's own prefix, every caller matches
            logger.warning("could not read the owner of %s: %s", prediction_id, exc)
            return None
        return str(value) if value else None


class RedisSampleStore:
    """Learned durations in the state server, as the
    :class:`~flux_tools._domain.polling.SampleStore` of a :class:`DurationStats`.

    ``load`` and ``save`` are called from the event loop and must not block: they read and
    write a copy in memory, which :meth:`sync` (awaited at start, now and then, and at the end)
    exchanges with the state server."""

    MAX_KEYS = 200

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._key = state.key("durations")
        self._cache: dict[str, list[float]] = {}
        self._pending: dict[str, list[float]] = {}

    def load(self) -> dict[str, list[float]]:
        return {key: list(samples) for key, samples in self._cache.items()}

    def updated(self) -> Mapping[str, float]:
        """None known: the replicas keep these durations current together."""
        return {}

    def save(self, updates: Mapping[str, Sequence[float]], size: int) -> None:
        for key, samples in updates.items():
            recent = [round(float(s), 4) for s in list(samples)[-size:]]
            self._pending[key] = recent
            self._cache[key] = recent

    async def sync(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            await self._state.redis.hset(
                self._key, mapping={k: json.dumps(v) for k, v in pending.items()}
            )
        raw = await self._state.redis.hgetall(self._key)
        loaded: dict[str, list[float]] = {}
        for key, text in [(str(k), str(v)) for k, v in raw.items()][: self.MAX_KEYS]:
            try:
                values = json.loads(text)
            except ValueError:
                continue
            if isinstance(values, list):
                good = [
                    float(v)
                    for v in values
                    if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 3600
                ]
                if good:
                    loaded[key] = good
        self._cache = {**loaded, **self._pending}


__all__ = [
    "ADOPT_SECONDS",
    "LEASE_SECONDS",
    "RENEW_SECONDS",
    "RedisBudget",
    "RedisFairShare",
    "RedisJournal",
    "RedisOwners",
    "RedisRateLimiter",
    "RedisSampleStore",
    "RedisState",
    "Scope",
    "SharedHold",
]
