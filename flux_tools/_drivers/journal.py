"""The journal of predictions created and not saved yet: what a crash must not lose.

A prediction is billed once created. Between the create's answer and the saved image, a process
can be killed (``kill -9``, a closed laptop, an IDE restarting its MCP servers); the provider
keeps the outputs about an hour. Each front end that saves images (the MCP server, the
``flux-tools`` command) records the prediction here the moment its id is known and removes it
once the image is saved or the prediction ended without one; on its next start it resumes what
is left. Batches keep their own ledger (:mod:`flux_tools._drivers.ledger`), which follows the
same rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._base.errors import FluxAPIError, PredictionFailed, PredictionTimeout
from .._base.files import write_text_atomic
from .._base.text import safe_text

logger = logging.getLogger("flux_tools")


#: The journal's folder, inside the output folder: one small JSON file per pending prediction.
JOURNAL_DIR = ".flux-journal"
#: Replicate deletes a prediction's outputs about an hour after it was created: past that, an
#: entry can no longer bring its image back.
RETENTION_SECONDS = 3600.0


@dataclass(frozen=True)
class PendingPrediction:
    """A prediction created and not saved yet (one journal entry)."""

    prediction_id: str
    model: str
    #: Wall-clock time (epoch seconds) when it was created.
    created: float
    #: The image inputs as the caller gave them (provenance for the sidecars).
    sources: dict[str, str] = field(default_factory=dict)

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.created

    def expired_text(self) -> str:
        """Why an entry :meth:`Journal.take_up` dropped is gone, for a log or a terminal."""
        return (
            f"prediction {safe_text(self.prediction_id, 100)} was created "
            f"{self.age() / 60:.0f} minutes ago, past the provider's retention (about an hour): "
            "its image can no longer be fetched; dropped from the journal"
        )


class Journal:
    """``<output folder>/.flux-journal/<digest>.json``, one file per pending prediction.

    Written atomically (a temporary file, then a rename) right after the create answered, and
    removed once the image is saved or the prediction ended without one. A process killed in
    between (the MCP server, ``flux-tools generate``) leaves its entries, which the next start
    (the server) or ``flux-tools resume`` takes up. File names are a digest of the id: an id
    is the API's text, never a path.
    """

    def __init__(self, output_dir: Path) -> None:
        self.directory = output_dir / JOURNAL_DIR

    def _path(self, prediction_id: str) -> Path:
        digest = hashlib.sha256(prediction_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self.directory / f"{digest[:32]}.json"

    def add(self, entry: PendingPrediction) -> None:
        """Record ``entry``. Never raises: a journal that cannot be written only logs."""
        data = {
            "prediction_id": entry.prediction_id,
            "model": entry.model,
            "created": entry.created,
            "sources": entry.sources,
        }
        try:
            for attempt in range(3):  # the folder may be removed with another's last entry
                self.directory.mkdir(parents=True, exist_ok=True)
                try:
                    write_text_atomic(self._path(entry.prediction_id), json.dumps(data) + "\n")
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
        except OSError as exc:
            logger.warning(
                "could not record prediction %s in the journal (%s): it will not be resumed "
                "if this process stops before it is saved",
                safe_text(entry.prediction_id, 100),
                exc.strerror or exc,
            )

    def remove(self, prediction_id: str) -> None:
        """Close the entry; the folder goes with the last one (no clutter in the user's)."""
        try:
            self._path(prediction_id).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning(
                "could not remove journal entry %s: %s", safe_text(prediction_id, 100), exc
            )
            return
        with contextlib.suppress(OSError):  # not empty (another entry, a writer): it stays
            self.directory.rmdir()

    def settle(self, prediction_id: str | None, error: BaseException, *, owner: bool) -> bool:
        """After ``error`` stopped a generation (``owner``) or a watch of ``prediction_id``:
        remove its entry when the prediction is over without an image to save (see
        :func:`ended_without_image`); return whether it was removed."""
        if prediction_id and ended_without_image(error, owner=owner):
            self.remove(prediction_id)
            return True
        return False

    def get(self, prediction_id: str) -> PendingPrediction | None:
        path = self._path(prediction_id)
        return _read_entry(path) if path.is_file() else None

    def entries(self) -> list[PendingPrediction]:
        """Every readable entry, oldest first; unreadable files are removed with a log line."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            entry = _read_entry(path)
            if entry is None:
                path.unlink(missing_ok=True)
                logger.warning("removed an unreadable journal entry: %s", path.name)
                continue
            found.append(entry)
        return sorted(found, key=lambda e: e.created)

    def take_up(
        self, now: float | None = None
    ) -> tuple[list[PendingPrediction], list[PendingPrediction]]:
        """The entries to resume, and those dropped (removed) because they are older than the
        provider keeps outputs (:data:`RETENTION_SECONDS`): their image can no longer be had."""
        live, expired = [], []
        for entry in self.entries():
            if entry.age(now) > RETENTION_SECONDS:
                self.remove(entry.prediction_id)
                expired.append(entry)
            else:
                live.append(entry)
        return live, expired


def _read_entry(path: Path) -> PendingPrediction | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, model, created = data.get("prediction_id"), data.get("model"), data.get("created")
    sources = data.get("sources") or {}
    if not (isinstance(pid, str) and 0 < len(pid) <= 200 and pid.isprintable()):
        return None
    if not isinstance(model, str):
        return None
    if not isinstance(created, int | float) or not isinstance(sources, dict):
        return None
    clean = {k: v for k, v in sources.items() if isinstance(k, str) and isinstance(v, str)}
    return PendingPrediction(prediction_id=pid, model=model, created=float(created), sources=clean)


def ended_without_image(error: BaseException, *, owner: bool) -> bool:
    """Whether ``error``, raised while generating (``owner``) or watching a prediction, means
    it is over with no image to save, so its journal entry can go: it ended failed, canceled or
    aborted; its deadline passed and the cancel was sent; the API does not know its id; or the
    owner was interrupted (the core cancels what it owns). Anything else (a network failure, a
    download that failed, a watcher interrupted) keeps the entry: the next start checks."""
    if not isinstance(error, Exception):  # KeyboardInterrupt, a cancelled task
        return owner
    if isinstance(error, PredictionFailed):
        return True
    if isinstance(error, PredictionTimeout):
        return error.canceled
    return isinstance(error, FluxAPIError) and error.status == 404
