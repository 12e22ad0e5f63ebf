"""Image files as bytes and names: what a file is (from its first bytes, never its name), the
media types flux-tools reads and writes, ``data:`` URIs, and safe file names for prediction ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from .errors import DownloadError

_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),  # RIFF....WEBP
]
_CONTENT_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}

_KEEP = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(10)}
)


def safe_stem(raw: str) -> str:
    """The file-name stem for a prediction id, whatever the id holds.

    An id that is a short run of ``[a-z0-9-]`` (Replicate's ids are) is kept as it is; any other
    (``/``, ``..``, NUL, escapes, capitals, 300 characters) becomes a slug of it, a dot and 12
    hex digits of its SHA-256. A kept id has no dot, so the two forms never meet, and two
    distinct ids never share a stem (short of a hash collision). Case-insensitive file systems
    are safe too: kept ids are lower-case.
    """
    if _KEEP.fullmatch(raw) and raw not in _WINDOWS_RESERVED:
        return raw
    slug = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")[:40].strip("-") or "output"
    if slug in _WINDOWS_RESERVED:
        slug = f"id-{slug}"
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}.{digest}"


#: The longest stem :func:`safe_name` gives, in characters and in UTF-8 bytes (file systems
#: allow 255 bytes a name; room is left for ``-2``, ``_0`` and the extension).
MAX_NAME_CHARS = 80
MAX_NAME_BYTES = 160
_NAME_UNSAFE = re.compile(r"[^\w.-]+")


def safe_name(raw: str) -> str | None:
    """A file stem from a name a person gave (a batch row's ``name``): letters (any script),
    digits, ``.``, ``_`` and ``-``; anything else (separators, spaces, controls) becomes ``-``.
    Never hidden (no leading dot) nor an option (no leading dash), never ``..``, bounded
    (:data:`MAX_NAME_CHARS`), never a Windows device name. None when nothing is left."""
    text = unicodedata.normalize("NFC", str(raw))
    text = _NAME_UNSAFE.sub("-", text)
    text = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", text)).strip(".-_")
    text = text[:MAX_NAME_CHARS]
    while len(text.encode("utf-8")) > MAX_NAME_BYTES:
        text = text[:-1]
    text = text.rstrip(".-_")
    if not text:
        return None
    if text.split(".")[0].lower() in _WINDOWS_RESERVED:
        text = f"{text}-image"
    return text


def output_names(stem: str, count: int) -> list[str]:
    """One stem per output: ``stem`` alone, or ``stem_0``, ``stem_1``... (``_`` is never part of
    a kept id, so these cannot meet another prediction's names)."""
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def image_type(head: bytes) -> str | None:
    """The image format named by a file's first bytes, or None when it is none we know."""
    for magic, offset, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (ext != "webp" or head[:4] == b"RIFF"):
            return ext
    return None


def sniff_extension(head: bytes, content_type: str | None = None, url: str | None = None) -> str:
    """The file extension of an image: from its first bytes, else its type, else its URL."""
    ext = image_type(head)
    if ext:
        return ext
    if content_type:
        typed = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
        if typed:
            return typed
    if url and not url.startswith("data:"):
        suffix = Path(urlsplit(url).path).suffix.lower().lstrip(".")
        if suffix in ("png", "jpg", "jpeg", "webp", "gif"):
            return "jpg" if suffix == "jpeg" else suffix
    return "bin"


def decode_data_uri(uri: str, max_bytes: int | None = None) -> tuple[bytes, str | None]:
    """The bytes and media type of a ``data:`` URI (decoded locally: no request is made).

    With ``max_bytes``, a payload that would decode to more is refused before decoding.
    """
    header, sep, payload = uri.partition(",")
    if not header.startswith("data:") or not sep:
        raise DownloadError("malformed data: URI (expected data:<type>;base64,<data>)")
    media_type = header[5:].split(";")[0] or None
    base64_encoded = header.endswith(";base64")
    estimate = len(payload) * 3 // 4 if base64_encoded else len(payload) // 3
    if max_bytes is not None and estimate > max_bytes:
        raise DownloadError(
            f"a data: URI output holds about {estimate} bytes, more than the {max_bytes} "
            "allowed; not saved."
        )
    try:
        if base64_encoded:
            return base64.b64decode(payload, validate=False), media_type
        return unquote_to_bytes(payload), media_type
    except (binascii.Error, ValueError) as exc:
        raise DownloadError(f"undecodable data: URI ({exc})") from None


__all__ = [
    "MAX_NAME_BYTES",
    "MAX_NAME_CHARS",
    "MEDIA_TYPES",
    "decode_data_uri",
    "image_type",
    "output_names",
    "safe_name",
    "safe_stem",
    "sniff_extension",
]
