"""The folder where generated images are saved, with a JSON sidecar of provenance for each.

Provider URLs expire (Replicate deletes outputs after about an hour, BFL's URLs last minutes),
so images are downloaded at once and served from here: ``flux://images/<file name>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flux_tools import MEDIA_TYPES, GenerationResult, __version__, abbreviate, safe_stem

logger = logging.getLogger("mcp_server")

URI_PREFIX = "flux://images/"
#: The formats served as resources, one resource template each (so each has its mime type).
SERVED_FORMATS = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
#: Prediction ids are provider-made ([a-z0-9] on Replicate): anything else never names a file.
_SAFE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")


def is_safe_stem(stem: str) -> bool:
    return bool(_SAFE_STEM.match(stem))


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower().lstrip("."), "application/octet-stream")


def resource_uri(path: Path) -> str:
    return URI_PREFIX + path.name


class ImageStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def saved(self, prediction_id: str) -> list[Path]:
        """The images already saved for a prediction: ``<stem>.<ext>`` or ``<stem>_<n>.<ext>``
        (``<stem>-<n>`` from earlier versions), the stem being the core's safe form of the id."""
        if not is_safe_stem(prediction_id) or not self.directory.is_dir():
            return []
        stem = safe_stem(prediction_id)
        pattern = re.compile(rf"^{re.escape(stem)}(?:[-_]\d+)?\.(?:png|jpg|webp|gif)$")
        found = [p for p in self.directory.iterdir() if pattern.match(p.name) and p.is_file()]
        return sorted(found, key=lambda p: _index(p, stem))

    def write_sidecars(
        self,
        result: GenerationResult,
        files: list[Path],
        *,
        sources: dict[str, str] | None = None,
    ) -> None:
        """``<image>.json`` next to each image: what made it, and when.

        ``sources``: the image inputs as the caller gave them (a path, a prediction id...),
        where what was sent is the file's data.
        """
        saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        prediction = result.prediction
        common: dict[str, Any] = {
            "prediction_id": result.prediction_id,
            "model": result.model,
            "prompt": result.input.get("prompt"),
            "seed": result.seed,
            # An inline image (megabytes of base64) is named, not copied into the sidecar.
            "input": {key: abbreviate(value) for key, value in result.input.items()},
            "image_sources": sources or None,
            "status": "succeeded",
            "created_at": _iso(prediction.created_at),
            "started_at": _iso(prediction.started_at),
            "completed_at": _iso(prediction.completed_at),
            "saved_at": saved_at,
            "timings": result.timings.model_dump(),
            "cost": result.cost,
            "urls": result.urls,
            "generator": f"flux-tools {__version__} (MCP server)",
        }
        for index, path in enumerate(files):
            data = {
                **common,
                "file": str(path),
                "url": result.urls[index] if index < len(result.urls) else None,
            }
            _write_atomic(sidecar_of(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def read_sidecar(self, image: Path) -> dict[str, Any]:
        try:
            data = json.loads(sidecar_of(image).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def path_of(self, stem: str, extension: str) -> Path | None:
        """The saved file ``<stem>.<extension>``, or None: never a path outside the folder."""
        if not is_safe_stem(stem) or extension not in SERVED_FORMATS:
            return None
        path = self.directory / f"{stem}.{extension}"
        return path if path.is_file() else None


def sidecar_of(image: Path) -> Path:
    return image.with_name(image.name + ".json")


def _index(path: Path, stem: str) -> int:
    rest = path.stem[len(stem) :]
    return int(rest[1:]) if rest[:1] in ("-", "_") and rest[1:].isdigit() else -1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- the journal: predictions created and not yet saved ------------------------------------------

#: The journal's folder, inside the output folder: one small JSON file per pending prediction.
JOURNAL_DIR = ".flux-journal"
#: Replicate deletes a prediction's outputs about an hour after it was created: past that, an
#: entry can no longer bring its image back.
RETENTION_SECONDS = 3600.0


@dataclass(frozen=True)
class Pending:
    """A prediction this server created and has not saved yet (one journal entry)."""

    prediction_id: str
    model: str
    #: Wall-clock time (epoch seconds) when it was created.
    created: float
    #: The image inputs as the caller gave them (provenance for the sidecars).
    sources: dict[str, str] = field(default_factory=dict)

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.created


class Journal:
    """``<output folder>/.flux-journal/<digest>.json``, one file per pending prediction.

    Written atomically (a temporary file, then a rename) right after the create answered, and
    removed once the image is saved or the prediction ended without one. A server that was
    killed in between finds the entries on its next start and resumes them. File names are a
    digest of the id: an id is the API's text, never a path.
    """

    def __init__(self, output_dir: Path) -> None:
        self.directory = output_dir / JOURNAL_DIR

    def _path(self, prediction_id: str) -> Path:
        digest = hashlib.sha256(prediction_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self.directory / f"{digest[:32]}.json"

    def add(self, entry: Pending) -> None:
        """Record ``entry``. Never raises: a journal that cannot be written only logs."""
        data = {
            "prediction_id": entry.prediction_id,
            "model": entry.model,
            "created": entry.created,
            "sources": entry.sources,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(self._path(entry.prediction_id), json.dumps(data) + "\n")
        except OSError as exc:
            logger.warning(
                "could not record prediction %s in the journal (%s): it will not be resumed "
                "if this server stops before it is saved",
                entry.prediction_id,
                exc.strerror or exc,
            )

    def remove(self, prediction_id: str) -> None:
        try:
            self._path(prediction_id).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not remove journal entry %s: %s", prediction_id, exc)

    def get(self, prediction_id: str) -> Pending | None:
        path = self._path(prediction_id)
        return _read_entry(path) if path.is_file() else None

    def entries(self) -> list[Pending]:
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


def _read_entry(path: Path) -> Pending | None:
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
    return Pending(prediction_id=pid, model=model, created=float(created), sources=clean)


def _write_atomic(target: Path, text: str) -> None:
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
