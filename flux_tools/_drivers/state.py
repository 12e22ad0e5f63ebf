"""Everything a server shares with its replicas, behind one interface, with two backends.

- :class:`LocalState` (the default, no dependency): today's behaviour. The limiter, the
  budget (with its per-person scopes) and each person's fair share of the create rate in
  memory, the journal as files in the output folder, ownership in memory, learned durations in
  the user's cache folder.
- ``RedisState`` (``FLUX_STATE_URL=redis://...``, Valkey or Redis, the ``server`` extra): the
  same things in the state server, shared by every replica of one account: atomic token buckets,
  atomic budgets, the journal with a lease per entry, ownership, learned durations
  (:mod:`flux_tools._drivers.redis_state`, imported only when the variable is set).

:func:`open_state` picks the backend from the URL. The front end (the MCP server) asks the state
for each shared thing and hands the limiter, budget and durations to its client.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import anyio.to_thread

from .._base.errors import ConfigError
from .._base.text import safe_text
from .._base.urls import redact_url
from .._domain.limits import RateLimiter, RateLimits
from .._domain.polling import DurationStats
from .._domain.pricing import Budget
from .._domain.shared import SharedBudget
from .._domain.shares import FairShare, ScopedBudget, ShareSlot
from .durations import durations_for_api
from .journal import Journal, PendingPrediction, ended_without_image
from .redis_state import ADOPT_SECONDS, LEASE_SECONDS, RENEW_SECONDS, RedisState

logger = logging.getLogger("flux_tools")

#: Owners remembered in memory (the in-process backend): the oldest are forgotten first.
MAX_OWNERS = 100_000


class PendingWork(Protocol):
    """The journal of predictions that may be billed and are not saved yet, as a server uses it.

    Each entry is held by the process working on it (a lease, in the shared backend); a
    process that dies leaves its entries, and :meth:`adopt` hands them to another."""

    #: Where the entries are kept, for logs (no secret).
    where: str
    #: Entries are shared by replicas (and adopted while running, not only at start).
    shared: bool

    async def add(self, entry: PendingPrediction, owner: str | None = None) -> None: ...

    async def remove(self, prediction_id: str) -> None: ...

    async def get(self, prediction_id: str) -> PendingPrediction | None: ...

    async def settle(self, prediction_id: str | None, error: BaseException, *, owner: bool) -> bool:
        """Remove the entry when ``error`` means the prediction is over without an image."""
        ...

    async def adopt(self) -> tuple[list[PendingPrediction], list[PendingPrediction]]:
        """Entries nobody works on, now held by this process; and those dropped as too old."""
        ...

    async def renew(self) -> None:
        """Keep holding the entries this process works on."""
        ...

    async def release(self, prediction_ids: Sequence[str] | None = None) -> int:
        """Let go of the entries named (default: every entry held, a graceful shutdown):
        another replica adopts them at once. Returns how many."""
        ...


class Owners(Protocol):
    """Who created each prediction: an opaque person id (the MCP server's hash of the issuer and
    subject of a signed-in person), or None for the server's local user."""

    async def set(self, prediction_id: str, owner: str | None) -> None: ...

    async def get(self, prediction_id: str) -> str | None:
        """The recorded owner, None when none was recorded."""
        ...


class PersonShares(Protocol):
    """Each person's fair share of the account's create rate (see
    :class:`~flux_tools._domain.shares.FairShare`): in this process, or for every replica."""

    async def reserve(self, person: str, *, max_wait: float) -> ShareSlot:
        """Book ``person``'s next create if it may go within ``max_wait`` seconds."""
        ...


class State(Protocol):
    """What replicas share: see the module's docstring."""

    #: Shared with other processes (the state server) or in this process only.
    shared: bool
    #: The backend, for logs: ``in-process`` or the state server's URL without its password.
    description: str

    @property
    def owners(self) -> Owners: ...

    def limiter(self, limits: RateLimits) -> RateLimiter: ...

    def budget(self, limit: float | None, per_call: float | None = None) -> Budget | SharedBudget:
        """The money the account may spend: ``limit`` in all, ``per_call`` a create, plus the
        scopes named around a call (:func:`~flux_tools._domain.shares.charging`)."""
        ...

    def fair_share(self, limits: RateLimits) -> PersonShares: ...

    def journal(self, output_dir: Path, *, api: str | None = None) -> PendingWork:
        """The predictions that may be billed and are not saved yet, of the API at ``api``."""
        ...

    def durations(self, base_url: str, cache_dir: Path | None = None) -> DurationStats: ...

    async def start(self) -> None:
        """Connect and load what is shared (the learned durations) before serving."""
        ...

    async def sync(self) -> None:
        """Push what this process learned, pull what the others did (run now and then)."""
        ...

    async def ping(self) -> None:
        """Raise when the state cannot be reached (readiness)."""
        ...

    async def aclose(self) -> None: ...


class LocalJournal:
    """The file journal (:class:`Journal`) as a :class:`PendingWork`: one process, so nothing
    to lease; what a killed process left is adopted once, at the next start."""

    shared = False

    def __init__(self, output_dir: Path, *, api: str | None = None) -> None:
        # Only this API's entries: processes on other APIs may share the output folder. Every
        # person's: the server works for all of them (each entry names its owner).
        self.files = Journal(output_dir, api=api, every_owner=True)
        self.where = str(self.files.directory)
        self._taken_up = False

    async def add(self, entry: PendingPrediction, owner: str | None = None) -> None:
        self.files.add(replace(entry, owner=owner) if owner is not None else entry)

    async def remove(self, prediction_id: str) -> None:
        self.files.remove(prediction_id)

    async def get(self, prediction_id: str) -> PendingPrediction | None:
        return self.files.get(prediction_id)

    async def settle(self, prediction_id: str | None, error: BaseException, *, owner: bool) -> bool:
        return self.files.settle(prediction_id, error, owner=owner)

    async def adopt(self) -> tuple[list[PendingPrediction], list[PendingPrediction]]:
        if self._taken_up:
            return [], []
        self._taken_up = True
        return await anyio.to_thread.run_sync(self.files.take_up)

    async def renew(self) -> None:
        return None

    async def release(self, prediction_ids: Sequence[str] | None = None) -> int:
        return 0  # the files stay: the next start takes them up


class LocalOwners:
    """Ownership in memory, bounded."""

    def __init__(self) -> None:
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    async def set(self, prediction_id: str, owner: str | None) -> None:
        self._owners[prediction_id] = owner
        self._owners.move_to_end(prediction_id)
        while len(self._owners) > MAX_OWNERS:
            self._owners.popitem(last=False)

    async def get(self, prediction_id: str) -> str | None:
        return self._owners.get(prediction_id)


class LocalFairShare:
    """The fair share in this process: no I/O, answered at once."""

    def __init__(self, limits: RateLimits) -> None:
        self.shares = FairShare(limits)

    async def reserve(self, person: str, *, max_wait: float) -> ShareSlot:
        return self.shares.reserve(person, max_wait=max_wait)


class LocalState:
    """The embedded default: every shared thing in this process (and its files)."""

    shared = False
    description = "in-process"

    def __init__(self) -> None:
        self.owners = LocalOwners()

    def limiter(self, limits: RateLimits) -> RateLimiter:
        return RateLimiter(limits)

    def budget(self, limit: float | None, per_call: float | None = None) -> ScopedBudget:
        return ScopedBudget(limit, per_call=per_call)

    def fair_share(self, limits: RateLimits) -> LocalFairShare:
        return LocalFairShare(limits)

    def journal(self, output_dir: Path, *, api: str | None = None) -> PendingWork:
        return LocalJournal(output_dir, api=api)

    def durations(self, base_url: str, cache_dir: Path | None = None) -> DurationStats:
        return durations_for_api(base_url, cache_dir=cache_dir)

    async def start(self) -> None:
        return None

    async def sync(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def account_namespace(base_url: str, token: str | None) -> str:
    """The key of an account in the state server: a digest of its API and token (the limits
    are per token; the token itself never leaves the process)."""
    material = f"{base_url.rstrip('/')}\n{token or ''}".encode()
    return hashlib.sha256(material).hexdigest()[:16]


def open_state(url: str | None, *, namespace: str, replica: str | None = None) -> State:
    """The state for ``url``: None or empty is the in-process default; ``redis://``,
    ``rediss://`` or ``unix://`` a Valkey or Redis server shared by replicas (needs
    ``pip install 'flux-tools[server]'``). ``namespace`` keeps accounts apart
    (:func:`account_namespace`); ``replica`` names this process in leases and logs."""
    if not url or not url.strip():
        return LocalState()
    url = url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix", "valkey", "valkeys"):
        raise ConfigError(
            f"FLUX_STATE_URL must be a redis:// (or rediss://, unix://) URL of a Valkey or Redis "
            f"server, got {safe_text(redact_url(url), 200)!r}."
        )
    if scheme.startswith("valkey"):
        url = "redis" + url[len("valkey") :]
    try:
        return RedisState(url, namespace=namespace, replica=replica or default_replica_name())
    except ImportError as exc:  # the redis package: the server extra
        raise ConfigError(
            f"FLUX_STATE_URL needs the redis client ({exc.name or exc}): "
            "pip install 'flux-tools[server]'."
        ) from None


def default_replica_name() -> str:
    """``host:pid:start``: unique among the replicas, readable in a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


@contextlib.contextmanager
def logged_failure(what: str) -> Iterator[None]:
    """A background step of the state that failed: logged, never raised."""
    try:
        yield
    except Exception as exc:
        logger.warning("%s failed: %s", what, safe_text(exc, 300))


__all__ = [
    "ADOPT_SECONDS",
    "LEASE_SECONDS",
    "RENEW_SECONDS",
    "LocalFairShare",
    "LocalJournal",
    "LocalOwners",
    "LocalState",
    "Owners",
    "PendingWork",
    "PersonShares",
    "State",
    "account_namespace",
    "ended_without_image",
    "logged_failure",
    "open_state",
    "redact_url",
]
