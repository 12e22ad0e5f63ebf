"""A small preview of a saved image, for front ends that show images inline (MCP, chat UIs).

Chat clients cap what a tool may return (Claude Desktop: 1 MiB for the whole result), so the
preview is downscaled and re-encoded as JPEG until it fits a byte budget. The full-size file stays
on disk. Pillow is imported only here, only when a preview is made (the ``preview`` extra).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Longest side of a preview: enough to judge an image, small in tokens and bytes.
DEFAULT_MAX_SIDE = 768
#: Raw bytes allowed for one preview (base64 adds a third on top).
DEFAULT_MAX_BYTES = 700_000
_QUALITIES = (85, 75, 65, 50, 35)
_MIN_SIDE = 64


class PreviewError(Exception):
    """No preview could be made (Pillow missing, unreadable file, impossible budget)."""


@dataclass(frozen=True)
class Preview:
    data: bytes
    mime_type: str
    width: int
    height: int
    #: Size of the original image.
    source_width: int
    source_height: int


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise PreviewError(
            "Pillow is needed for image previews: pip install 'flux-tools[preview]'"
        ) from None
    return Image


def make_preview(
    path: str | Path,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Preview:
    """A JPEG of the image at ``path``, its longest side at most ``max_side``, under ``max_bytes``.

    Quality is lowered first, then the size, until the encoding fits.
    """
    if max_side < _MIN_SIDE:
        raise PreviewError(f"max_side must be at least {_MIN_SIDE} pixels")
    image_mod = _pillow()
    try:
        with image_mod.open(path) as source:
            source.load()
            width, height = source.size
            image = _flatten(image_mod, source)
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise PreviewError(f"cannot read {Path(path).name} as an image: {exc}") from None

    side = min(max_side, max(width, height))
    while side >= _MIN_SIDE:
        scaled = image.copy()
        scaled.thumbnail((side, side), image_mod.Resampling.LANCZOS)
        for quality in _QUALITIES:
            buffer = io.BytesIO()
            scaled.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= max_bytes:
                return Preview(
                    data=buffer.getvalue(),
                    mime_type="image/jpeg",
                    width=scaled.width,
                    height=scaled.height,
                    source_width=width,
                    source_height=height,
                )
        side = int(side * 0.7)
    raise PreviewError(f"no preview of {Path(path).name} fits in {max_bytes} bytes")


def _flatten(image_mod: Any, image: Any) -> Any:
    """RGB for JPEG: transparency is laid over white, like most viewers show it."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = image_mod.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_SIDE", "Preview", "PreviewError", "make_preview"]
