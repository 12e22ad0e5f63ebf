"""The batch ledger on disk: ``DIR/flux-batch.jsonl``, one JSON line per event, each fsynced.

One run at a time per folder (an exclusive lock on the file); what the lines mean is
:class:`flux_tools._domain.batch.LedgerState`. Each event is one ``write`` of one whole line
(appended: ``O_APPEND``), then synced: a crash at any byte leaves the ledger as it was (a torn
last line, which the next run reads around) or with the new event. A run first ends a torn last
line with a newline, so that its own events never glue onto the fragment; a damaged line never
hides a prediction id that can be read in it. The file is never followed through a symbolic
link, never truncated, never rewritten.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._base.errors import FluxError
from .._domain.batch import BatchRow, LedgerState

LEDGER_NAME = "flux-batch.jsonl"


class LedgerError(FluxError):
    """The batch ledger cannot be opened, read or written (a full disk, a read-only folder):
    nothing more is sent; what was sent is in the ledger, and a rerun resumes it."""


class Ledger:
    """The append-only JSONL record of a batch (thread-safe; each line fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.folded = LedgerState()
        self.states = self.folded.states
        self.claimed = self.folded.claimed
        #: Whether the file may end in the middle of a line (a write that failed partway).
        self._torn = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise self._error("open", exc) from None
        try:
            self._lock_file()
            data = self._read_all()
            self.folded.load(data)
            if data and not data.endswith(b"\n"):
                self._torn = True  # ended before appending anything (see record)
        except BaseException:
            os.close(self._fd)
            raise
        self.spent_before = self.folded.spent

    def _lock_file(self) -> None:
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode):
            raise LedgerError(f"The batch ledger {self.path} is not a regular file.")
        try:  # one run at a time per folder: two would both create the unfinished rows
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            raise LedgerError(
                f"Another batch is running with the ledger {self.path}: wait for it to end (or "
                "stop it) before running this one on the same folder."
            ) from None

    def _read_all(self) -> bytes:
        chunks = []
        offset = 0
        try:
            while chunk := os.pread(self._fd, 1 << 20, offset):
                chunks.append(chunk)
                offset += len(chunk)
        except OSError as exc:
            raise self._error("read", exc) from None
        return b"".join(chunks)

    def _error(self, verb: str, exc: OSError) -> LedgerError:
        if getattr(exc, "errno", None) == getattr(os, "ELOOP", -1):
            return LedgerError(
                f"The batch ledger {self.path} is a symbolic link: flux-tools does not write "
                "through one. Remove it, or choose another --out."
            )
        return LedgerError(f"Cannot {verb} the batch ledger {self.path}: {exc.strerror or exc}")

    def record(self, event: str, row: BatchRow, **data: Any) -> None:
        """Fold and append one event; raises :class:`LedgerError` if it cannot be written
        (the run then sends nothing more)."""
        line = {
            "event": event,
            "key": row.key,
            "row": row.number,
            "at": datetime.now(timezone.utc).isoformat(),
            **data,
        }
        encoded = (json.dumps(line, default=str) + "\n").encode("utf-8")
        with self._lock:
            self.folded.fold(line)
            # After a torn line, a newline first: this event is a line of its own, whole.
            payload = (b"\n" if self._torn else b"") + encoded
            try:
                written = os.write(self._fd, payload)
                if written != len(payload):
                    self._torn = True
                    raise OSError(f"only {written} of {len(payload)} bytes written")
                os.fsync(self._fd)
            except OSError as exc:
                self._torn = True
                raise self._error("write", exc) from None
            self._torn = False

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


__all__ = ["LEDGER_NAME", "Ledger", "LedgerError"]
