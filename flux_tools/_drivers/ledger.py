"""The batch ledger on disk: ``DIR/flux-batch.jsonl``, one JSON line per event, each fsynced.

One run at a time per folder (an exclusive lock on the file); what the lines mean is
:class:`flux_tools._domain.batch.LedgerState`.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._base.errors import FluxError
from .._domain.batch import BatchRow, LedgerState

LEDGER_NAME = "flux-batch.jsonl"


class Ledger:
    """The append-only JSONL record of a batch (thread-safe; each line fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.folded = LedgerState()
        self.states = self.folded.states
        self.claimed = self.folded.claimed
        self._load()
        self.spent_before = self.folded.spent
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open: appended to)
        try:  # one run at a time per folder: two would both create the unfinished rows
            import fcntl

            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            self._handle.close()
            raise FluxError(
                f"Another batch is running with the ledger {path}: wait for it to end (or stop "
                "it) before running this one on the same folder."
            ) from None

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise FluxError(f"Cannot read the batch ledger {self.path}: {exc}") from None
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write: the step it began is redone
            if isinstance(event, dict):
                self.folded.fold(event)

    def record(self, event: str, row: BatchRow, **data: Any) -> None:
        line = {
            "event": event,
            "key": row.key,
            "row": row.number,
            "at": datetime.now(timezone.utc).isoformat(),
            **data,
        }
        with self._lock:
            self.folded.fold(line)
            self._handle.write(json.dumps(line, default=str) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        with self._lock:
            self._handle.close()


__all__ = ["LEDGER_NAME", "Ledger"]
