"""Deterministic stand-in images: same (prompt, seed, size, format, quality), same bytes.

Pillow is imported inside ``render`` only: it is the ``[emulator]`` extra, and importing the
emulator package (for example to read its API) must not need it.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from functools import lru_cache

#: output_format -> (content type, file extension, Pillow format name)
_FORMATS: dict[str, tuple[str, str, str]] = {
    "webp": ("image/webp", "webp", "WEBP"),
    "jpg": ("image/jpeg", "jpg", "JPEG"),
    "jpeg": ("image/jpeg", "jpg", "JPEG"),
    "png": ("image/png", "png", "PNG"),
}
_MEGAPIXEL = 1024 * 1024
_MIN_SIDE = 16


@dataclass(frozen=True)
class ImageSpec:
    prompt: str
    seed: int
    width: int
    height: int
    fmt: str
    quality: int

    @property
    def content_type(self) -> str:
        return _FORMATS.get(self.fmt, _FORMATS["webp"])[0]

    @property
    def extension(self) -> str:
        return _FORMATS.get(self.fmt, _FORMATS["webp"])[1]


def round32(value: float) -> int:
    return max(32, round(value / 32) * 32)


def _ratio(aspect_ratio: str) -> tuple[float, float]:
    a, sep, b = aspect_ratio.partition(":")
    try:
        width, height = float(a), float(b)
    except ValueError:
        return 1.0, 1.0  # e.g. "match_input_image": no input image to match, so square
    if not sep or width <= 0 or height <= 0:
        return 1.0, 1.0
    return width, height


def image_size(
    aspect_ratio: str,
    width: int | None = None,
    height: int | None = None,
    *,
    megapixels: float = 1.0,
    scale: float = 1.0,
) -> tuple[int, int]:
    """Pixel size the model would produce: about one megapixel at the ratio, multiples of 32."""
    if aspect_ratio == "custom" and width and height:
        w, h = round32(width), round32(height)
    else:
        a, b = _ratio(aspect_ratio)
        w = round32(math.sqrt(_MEGAPIXEL * megapixels * a / b))
        h = round32(w * b / a)
    if scale != 1.0:
        # Benchmarks shrink images to keep rendering cheap; never below a visible size.
        w, h = max(_MIN_SIDE, round(w * scale)), max(_MIN_SIDE, round(h * scale))
    return w, h


@lru_cache(maxsize=32)
def render(spec: ImageSpec) -> bytes:
    """Encode the image for ``spec`` (cached: downloads of one output re-use the bytes)."""
    from PIL import Image, ImageDraw, ImageFont

    digest = hashlib.sha256(f"{spec.prompt}\0{spec.seed}".encode()).digest()
    w, h = spec.width, spec.height
    corners = Image.new("RGB", (2, 2))
    corners.putdata([(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 12, 3)])
    image = corners.resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for k in range(3):
        b = digest[12 + 6 * k : 18 + 6 * k]
        x0, y0 = b[0] * w // 256, b[1] * h // 256
        x1, y1 = x0 + (b[2] % 96 + 32) * w // 256, y0 + (b[3] % 96 + 32) * h // 256
        colour = (b[4], b[5], (b[4] + b[5]) % 256)
        if k % 2:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=max(1, w // 128))
    label = spec.prompt if len(spec.prompt) <= 48 else spec.prompt[:47] + "…"
    size = max(8, min(w, h) // 24)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size)
    except (ImportError, OSError):  # Pillow built without FreeType: the small bitmap font
        font = ImageFont.load_default()
    for line, y in ((label, size // 2), (f"seed {spec.seed}", size * 2)):
        draw.text(
            (size // 2, y), line, fill="white", font=font, stroke_width=1, stroke_fill="black"
        )
    out = io.BytesIO()
    pil_format = _FORMATS.get(spec.fmt, _FORMATS["webp"])[2]
    if pil_format == "PNG":
        image.save(out, format="PNG")
    else:
        image.save(out, format=pil_format, quality=spec.quality)
    return out.getvalue()
