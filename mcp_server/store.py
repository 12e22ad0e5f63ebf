"""The folder where generated images are saved, with a JSON sidecar of provenance for each.

Provider URLs expire (Replicate deletes outputs after about an hour, BFL's URLs last minutes),
so images are downloaded at once and served from here: ``flux://images/<file name>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flux_tools import GenerationResult, __version__
from flux_tools._downloads import MEDIA_TYPES
from flux_tools._prediction import abbreviate

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
        """The images already saved for a prediction (``<id>.<ext>`` or ``<id>-<n>.<ext>``)."""
        if not is_safe_stem(prediction_id) or not self.directory.is_dir():
            return []
        pattern = re.compile(rf"^{re.escape(prediction_id)}(?:-\d+)?\.(?:png|jpg|webp|gif)$")
        found = [p for p in self.directory.iterdir() if pattern.match(p.name) and p.is_file()]
        return sorted(found, key=lambda p: _index(p, prediction_id))

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


def _index(path: Path, prediction_id: str) -> int:
    rest = path.stem[len(prediction_id) :]
    return int(rest[1:]) if rest.startswith("-") and rest[1:].isdigit() else -1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _write_atomic(target: Path, text: str) -> None:
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
