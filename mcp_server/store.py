"""The folder where generated images are saved, with a JSON sidecar of provenance for each.

Provider URLs expire (Replicate deletes outputs after about an hour, BFL's URLs last minutes),
so images are downloaded at once and served from here: ``flux://images/<file name>``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flux_tools import GenerationResult, __version__
from flux_tools.kit import MEDIA_TYPES, abbreviate, safe_stem, write_text_atomic

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
            write_text_atomic(
                sidecar_of(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            )

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
