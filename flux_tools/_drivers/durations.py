"""Learned durations kept on disk between processes, and the durations a client starts from."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._base.files import write_text_atomic
from .._base.urls import is_loopback
from .._domain.polling import DurationStats, registry_typical_seconds
from .._settings.settings import default_cache_dir

logger = logging.getLogger("flux_tools")


class DurationStore:
    """Learned durations on disk (``durations.json`` in the cache folder: ``FLUX_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/flux-tools``, else ``~/.cache/flux-tools``), shared by every
    process of the user: the CLI and a fresh MCP server start from what earlier ones saw.

    Writes are atomic (a temporary file renamed over the old one) and merge with what another
    process wrote meanwhile; a file that cannot be read or parsed is ignored, never fatal.
    """

    VERSION = 1
    MAX_KEYS = 200

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_cache_dir() / "durations.json"
        self._updated: dict[str, float] = {}

    def load(self) -> dict[str, list[float]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != self.VERSION:
            return {}
        entries = data.get("durations")
        if not isinstance(entries, dict):
            return {}
        loaded: dict[str, list[float]] = {}
        # When each key was last saved: how old its samples are (an entry without a time: old).
        self._updated = {k: _updated((k, e)) for k, e in entries.items() if isinstance(k, str)}
        for key, entry in entries.items():
            samples = entry.get("samples") if isinstance(entry, dict) else None
            if isinstance(key, str) and isinstance(samples, list):
                good = [
                    float(s)
                    for s in samples
                    if isinstance(s, int | float) and not isinstance(s, bool) and 0 < s < 3600
                ]
                if good:
                    loaded[key] = good
        return loaded

    def updated(self) -> Mapping[str, float]:
        """When each key of the last :meth:`load` was saved (seconds since the epoch)."""
        return dict(self._updated)

    def save(self, updates: Mapping[str, Sequence[float]], size: int) -> None:
        """Merge ``updates`` (key -> recent samples, newest last) into the file, atomically."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
        entries = raw.get("durations") if isinstance(raw, dict) else None
        if not isinstance(entries, dict) or raw.get("version") != self.VERSION:
            entries = {}
        now = time.time()
        for key, samples in updates.items():
            entries[key] = {"samples": [round(s, 4) for s in list(samples)[-size:]], "updated": now}
        if len(entries) > self.MAX_KEYS:  # keep the most recently updated
            entries = dict(sorted(entries.items(), key=_updated)[-self.MAX_KEYS :])
        text = json.dumps({"version": self.VERSION, "durations": entries}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, text, durable=True)
        except OSError:
            logger.debug("could not save learned durations to %s", self.path, exc_info=True)


def _updated(item: tuple[str, Any]) -> float:
    value = item[1].get("updated", 0) if isinstance(item[1], dict) else 0
    return float(value) if isinstance(value, int | float) else 0.0


def durations_for_api(
    base_url: str,
    *,
    persist: bool = True,
    priors: bool | None = None,
    cache_dir: Path | None = None,
) -> DurationStats:
    """What a client starts from: the registry's priors, and (``persist``) the durations
    earlier processes learned from the same API host, kept in ``cache_dir`` (default: the
    environment's cache folder, see :class:`DurationStore`) and saved again at exit.

    ``priors=None`` uses them unless the API is on this machine: the registry's durations
    are Replicate's, and an API on loopback (the emulator, in a user's tests) runs at its
    own pace, which a fresh process learns from its first predictions instead.
    """
    host = (urlsplit(base_url).hostname or "").lower()
    if priors is None:
        priors = not is_loopback(host)
    store = None
    if persist:
        store = DurationStore(cache_dir / "durations.json" if cache_dir else None)
    stats = DurationStats(
        prior=registry_typical_seconds if priors else None, store=store, namespace=host
    )
    if store is not None:
        _flush_at_exit(stats)
    return stats


_EXIT_FLUSH: weakref.WeakSet[DurationStats] = weakref.WeakSet()


def _flush_at_exit(stats: DurationStats) -> None:
    if not _EXIT_FLUSH:
        atexit.register(_flush_all)
    _EXIT_FLUSH.add(stats)


def _flush_all() -> None:
    for stats in list(_EXIT_FLUSH):
        with contextlib.suppress(Exception):
            stats.flush()


__all__ = ["DurationStore", "durations_for_api"]
