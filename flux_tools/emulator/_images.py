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
from typing import Any

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
    #: For an edit: the encoded input image the output is derived from.
    source: bytes | None = None
    #: Reference images (FLUX.2's ``input_images``), encoded, in the order given.
    references: tuple[bytes, ...] = ()

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


def source_size(data: bytes) -> tuple[int, int]:
    """Width and height of an encoded image (only its header is decoded)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


def size_like(source: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
    """About one megapixel at the source's aspect ratio: what ``match_input_image`` gives."""
    w, h = source
    return image_size(f"{w}:{h}", scale=scale)


@lru_cache(maxsize=32)
def render(spec: ImageSpec) -> bytes:
    """Encode the image for ``spec`` (cached: downloads of one output re-use the bytes)."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(f"{spec.prompt}\0{spec.seed}".encode()).digest()
    w, h = spec.width, spec.height
    if spec.references:
        return _encode(_compose(spec, digest), spec)
    if spec.source is not None:
        # An edit: the input image itself, tinted, with the instruction written on a band, so
        # a test can tell it from a fresh generation and see what was asked.
        with Image.open(io.BytesIO(spec.source)) as source:
            base = source.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        tint = Image.new("RGB", (w, h), (digest[0], digest[1], digest[2]))
        image = Image.blend(base, tint, 0.25)
        draw = ImageDraw.Draw(image)
        band = max(12, h // 10)
        draw.rectangle((0, h - band, w, h), fill=(0, 0, 0))
        _label(draw, f"edit: {spec.prompt}", (band // 4, h - band + band // 4), band // 2)
        return _encode(image, spec)
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
    size = max(8, min(w, h) // 24)
    _label(draw, spec.prompt, (size // 2, size // 2), size)
    _label(draw, f"seed {spec.seed}", (size // 2, size * 2), size)
    return _encode(image, spec)


def reference_tiles(count: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Where each of ``count`` references lands in the output: a near-square grid, row by row.

    Boxes are (left, top, right, bottom) over the area above the caption band; a test can crop
    a box to tell which reference went where.
    """
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    area = height - _band(height)
    boxes = []
    for index in range(count):
        row, column = divmod(index, columns)
        boxes.append(
            (
                column * width // columns,
                row * area // rows,
                (column + 1) * width // columns,
                (row + 1) * area // rows,
            )
        )
    return boxes


def _band(height: int) -> int:
    return max(12, height // 10)


def _compose(spec: ImageSpec, digest: bytes) -> Any:
    """A composition from references: each one, lightly tinted, in its tile; the ask below."""
    from PIL import Image, ImageDraw

    w, h = spec.width, spec.height
    image = Image.new("RGB", (w, h), (digest[0], digest[1], digest[2]))
    tint = (digest[3], digest[4], digest[5])
    for data, box in zip(spec.references, reference_tiles(len(spec.references), w, h), strict=True):
        size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
        with Image.open(io.BytesIO(data)) as source:
            tile = source.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        image.paste(Image.blend(tile, Image.new("RGB", size, tint), 0.15), box[:2])
    draw = ImageDraw.Draw(image)
    band = _band(h)
    draw.rectangle((0, h - band, w, h), fill=(0, 0, 0))
    caption = f"{len(spec.references)} refs: {spec.prompt}"
    _label(draw, caption, (band // 4, h - band + band // 4), band // 2)
    return image


def _label(draw: Any, text: str, at: tuple[int, int], size: int) -> None:
    from PIL import ImageFont

    text = text if len(text) <= 48 else text[:47] + "…"
    try:
        font: Any = ImageFont.load_default(size)
    except (ImportError, OSError):  # Pillow built without FreeType: the small bitmap font
        font = ImageFont.load_default()
    draw.text(at, text, fill="white", font=font, stroke_width=1, stroke_fill="black")


def _encode(image: Any, spec: ImageSpec) -> bytes:
    out = io.BytesIO()
    pil_format = _FORMATS.get(spec.fmt, _FORMATS["webp"])[2]
    if pil_format == "PNG":
        image.save(out, format="PNG")
    else:
        image.save(out, format=pil_format, quality=spec.quality)
    return out.getvalue()
