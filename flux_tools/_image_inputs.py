"""Image inputs given as local files: where they may be read from, and how they are sent.

An agent chooses the paths it passes, so a path is a request to upload a file to a third party.
Files are read only from allowed folders (the output folder, folders the user configured, and
over MCP the client's roots), only up to a size cap, only if they are images, and a path
outside is refused before anything is opened. What is read is sent as a ``data:`` URI, the form
every Replicate-compatible API accepts.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path

from ._downloads import MEDIA_TYPES, sniff_extension
from ._exceptions import FluxInputError
from ._inputs import PREDICTION_ID

#: Largest local image sent inline. Replicate advises data URIs for small files; FLUX outputs
#: and phone photos are a few MB.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Folders (separated by os.pathsep) from which local images may be read, beside the output one.
IMAGE_DIRS_ENV = "FLUX_IMAGE_DIRS"


def image_dirs_from_env() -> list[Path]:
    raw = os.environ.get(IMAGE_DIRS_ENV, "")
    return [Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip()]


def _error(field: str, problem: str, allowed: str | None = None) -> FluxInputError:
    detail = f" (allowed: {allowed})" if allowed else ""
    return FluxInputError(
        f"Invalid input; nothing was sent:\n- {field}: {problem}{detail}",
        [{"field": field, "problem": problem, "allowed": allowed}],
    )


class LocalImages:
    """Reads local image files for image inputs, within allowed folders and a size cap."""

    def __init__(self, dirs: Iterable[Path | str] = (), max_bytes: int = DEFAULT_MAX_IMAGE_BYTES):
        self.dirs = tuple(dict.fromkeys(Path(d).expanduser().resolve() for d in dirs))
        self.max_bytes = max_bytes

    def with_dirs(self, extra: Iterable[Path | str]) -> LocalImages:
        return LocalImages([*self.dirs, *extra], self.max_bytes)

    def _allowed_text(self) -> str:
        if not self.dirs:
            return (
                f"no folder is allowed yet: configure one with {IMAGE_DIRS_ENV} (or image_dirs=), "
                "or pass an http(s) URL or a data: URI"
            )
        return "files under " + ", ".join(str(d) for d in self.dirs)

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(d) for d in self.dirs)

    def find(self, source: str, field: str) -> Path | None:
        """The allowed local file ``source`` names; None if it is a prediction id with no file.

        Raises :class:`FluxInputError` for a path outside the allowed folders (never opened) or
        one that does not exist.
        """
        if PREDICTION_ID.match(source):
            # A result saved earlier is named after its prediction: {id}.ext or {id}-0.ext.
            for folder in self.dirs:
                for pattern in (f"{source}.*", f"{source}-0.*"):
                    saved = sorted(p for p in folder.glob(pattern) if not p.name.endswith(".json"))
                    if saved:
                        return saved[0]
            return None
        given = Path(source).expanduser()
        candidates = [given] if given.is_absolute() else [d / given for d in self.dirs]
        for candidate in candidates:
            resolved = candidate.resolve()  # follows links: a link out of the folder is outside
            if not self._inside(resolved):
                raise _error(
                    field, f"{source} is outside the allowed folders", self._allowed_text()
                )
            if resolved.is_file():
                return resolved
        raise _error(field, f"no such image file: {source}", self._allowed_text())

    def load(self, source: str, field: str) -> str | None:
        """The ``data:`` URI of the local image ``source`` names (None: not a local file)."""
        path = self.find(source, field)
        if path is None:
            return None
        size = path.stat().st_size
        if size > self.max_bytes:
            raise _error(
                field,
                f"{path.name} is {size} bytes, over the {self.max_bytes}-byte limit for local "
                "images; pass a smaller file or an http(s) URL",
            )
        with path.open("rb") as file:
            data = file.read(self.max_bytes + 1)
        ext = sniff_extension(data[:16])
        if ext not in MEDIA_TYPES:
            raise _error(field, f"{path.name} is not an image", "jpeg, png, gif or webp files")
        return f"data:{MEDIA_TYPES[ext]};base64,{base64.b64encode(data).decode()}"
