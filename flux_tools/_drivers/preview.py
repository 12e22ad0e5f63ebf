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

from .._base.errors import PreviewError

#: Longest side of a preview: enough to judge an image, small in tokens and bytes.
DEFAULT_MAX_SIDE = 768
#: Raw bytes allowed for one preview (base64 adds a third on top).
DEFAULT_MAX_BYTES = 700_000
_QUALITIES = (85, 75, 65, 50, 35)
_MIN_SIDE = 64
#: Largest image a preview decodes (50 megapixels: FLUX makes at most about 4). Bigger ones are
#: refused from their header, before a pixel is decoded: a decompression bomb costs nothing.
MAX_PIXELS = 50_000_000
_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


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
    max_pixels: int = MAX_PIXELS,
) -> Preview:
    """A JPEG of the image at ``path``, its longest side at most ``max_side``, under ``max_bytes``.

    Decoding is bounded: only PNG, JPEG, WebP and GIF are opened; the dimensions are read from
    the header before a pixel is decoded and an image over ``max_pixels`` is refused; a JPEG is
    decoded straight at a reduced scale (``draft``), and any image is shrunk before it is
    converted. Quality is lowered first, then the size, until the encoding fits. Every failure
    is a :class:`PreviewError`; the file itself is never touched.
    """
    if max_side < _MIN_SIDE:
        raise PreviewError(f"max_side must be at least {_MIN_SIDE} pixels")
    image_mod = _pillow()
    name = Path(path).name
    try:
        with image_mod.open(path, formats=_FORMATS) as source:
            width, height = source.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise PreviewError(
                    f"{name} is {width}x{height} pixels, more than the {max_pixels:,} a preview "
                    "decodes; no preview made (the file itself is kept)."
                )
            if source.format == "JPEG":
                source.draft("RGB", (max_side, max_side))
            source.load()
            image = _shrinkable(source)
            image.thumbnail((max_side, max_side), image_mod.Resampling.LANCZOS, reducing_gap=2.0)
            image = _flatten(image_mod, image)
    except PreviewError:
        raise
    except MemoryError:
        raise PreviewError(f"not enough memory to decode {name} for a preview") from None
    except Exception as exc:  # Pillow's errors are of many kinds (OSError, ValueError, bombs...)
        raise PreviewError(f"cannot read {name} as an image: {exc}") from None

    side = min(max_side, max(image.width, image.height))
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
    raise PreviewError(f"no preview of {name} fits in {max_bytes} bytes")


def _shrinkable(image: Any) -> Any:
    """The image in a mode Pillow resizes smoothly (palette and bit images are converted)."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    transparent = image.mode == "PA" or (image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if transparent else "RGB")


def _flatten(image_mod: Any, image: Any) -> Any:
    """RGB for JPEG: transparency is laid over white, like most viewers show it."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = image_mod.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SIDE",
    "MAX_PIXELS",
    "Preview",
    "PreviewError",
    "make_preview",
]
