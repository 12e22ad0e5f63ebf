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
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from .._base.errors import FluxInputError
from .._base.media import MEDIA_TYPES, sniff_extension
from .._base.text import excerpt
from .._domain.images import DEFAULT_MAX_IMAGE_BYTES, PREDICTION_ID, check_path
from .._settings.environment import IMAGE_DIRS_ENV

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "IMAGE_DIRS_ENV", "LocalImages"]


#: Why a local image was refused, as data for front ends (``FluxInputError.errors[i]["code"]``):
#: their advice is chosen from it, never from the message's words.
ImageRefusal = Literal[
    "invalid_path", "no_such_user", "unreadable", "outside_folders", "not_found", "too_large",
    "not_an_image",
]  # fmt: skip


def _error(
    field: str, problem: str, allowed: str | None = None, *, code: ImageRefusal
) -> FluxInputError:
    return FluxInputError.one(field, problem, allowed, code=code)


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

        Raises :class:`FluxInputError` for a path outside the allowed folders (never opened), one
        that does not exist, or one that cannot be a path at all. The path's shape (length, NUL
        bytes, name lengths) is checked before anything touches the file system.
        """
        try:
            check_path(source)
        except ValueError as exc:
            raise _error(field, str(exc), code="invalid_path") from None
        if PREDICTION_ID.match(source):
            # A result saved earlier is named after its prediction: {id}.ext, or {id}_0.ext for
            # the first of several ({id}-0.ext before flux-tools 0.3).
            for folder in self.dirs:
                for pattern in (f"{source}.*", f"{source}_0.*", f"{source}-0.*"):
                    saved = sorted(p for p in folder.glob(pattern) if not p.name.endswith(".json"))
                    if saved:
                        return saved[0]
            return None
        given = Path(source)
        if source.startswith("~"):
            try:
                given = given.expanduser()
            except RuntimeError:  # ~nosuchuser: Python cannot find that home folder
                user = source[1:].split("/", 1)[0]
                raise _error(
                    field,
                    f"{excerpt('~' + user)} names no user on this machine (a path starting with "
                    "~user is that user's home folder)",
                    self._allowed_text(),
                    code="no_such_user",
                ) from None
        candidates = [given] if given.is_absolute() else [d / given for d in self.dirs]
        for candidate in candidates:
            try:
                resolved = candidate.resolve()  # follows links: a link out of the folder is outside
                inside = self._inside(resolved)
                is_file = inside and resolved.is_file()
            except (OSError, ValueError, RuntimeError) as exc:  # a loop of links, too long...
                reason = getattr(exc, "strerror", None) or (
                    "a loop of symbolic links" if isinstance(exc, RuntimeError) else str(exc)
                )
                raise _error(
                    field, f"{excerpt(source, 200)} cannot be read: {reason}", code="unreadable"
                ) from None
            if not inside:
                raise _error(
                    field,
                    f"{excerpt(source, 200)} is outside the allowed folders",
                    self._allowed_text(),
                    code="outside_folders",
                )
            if is_file:
                return resolved
        raise _error(
            field,
            f"no such image file: {excerpt(source, 200)}",
            self._allowed_text(),
            code="not_found",
        )

    def load(self, source: str, field: str) -> str | None:
        """The ``data:`` URI of the local image ``source`` names (None: not a local file)."""
        path = self.find(source, field)
        if path is None:
            return None
        # O_NONBLOCK: if the file was swapped for a FIFO since find(), opening does not hang;
        # fstat then refuses anything that is not a regular file.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise _error(
                field, f"{path.name} cannot be read: {exc.strerror or exc}", code="unreadable"
            ) from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _error(field, f"{path.name} is not a regular file", code="unreadable")
            if info.st_size > self.max_bytes:
                raise _error(
                    field,
                    f"{path.name} is {info.st_size} bytes, over the {self.max_bytes}-byte limit "
                    "for local images; pass a smaller file or an http(s) URL",
                    code="too_large",
                )
            data = file.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _error(
                field,
                f"{path.name} is over the {self.max_bytes}-byte limit for local images; pass a "
                "smaller file or an http(s) URL",
                code="too_large",
            )
        ext = sniff_extension(data[:16])
        if ext not in MEDIA_TYPES:
            raise _error(
                field,
                f"{path.name} is not an image",
                "jpeg, png, gif or webp files",
                code="not_an_image",
            )
        return f"data:{MEDIA_TYPES[ext]};base64,{base64.b64encode(data).decode()}"
