"""Image sources: what a caller may give for an image, and whether it is acceptable.

An image field (and every item of an image list) takes an ``https:`` URL, a ``data:`` URI, a local
path or the id of an earlier prediction (:data:`ImageSource`). This module is the one place that
says which is which (:func:`source_kind`) and checks each form's bounds before any work starts:
URL, path and ``data:`` URI lengths, decoded and sniffed inline images, NUL bytes, lone
surrogates. Errors name the rule and quote at most a short, escaped excerpt of the value. The
protocol resolves sources into what the API takes (:mod:`flux_tools._protocol.payloads`) and the
drivers read local files (:mod:`flux_tools._drivers.local_images`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, ValidationInfo

from .._base.media import MEDIA_TYPES, sniff_extension
from .._base.text import excerpt

#: What the API accepts for an image: a web address or inline bytes.
IMAGE_URI_PREFIXES = ("https://", "http://", "data:")
#: A prediction id as Replicate writes them (lower-case base32, about 26 characters).
PREDICTION_ID = re.compile(r"^[a-z0-9]{16,40}$")

#: Largest image sent inline (a local file, or a ``data:`` URI given as is). Replicate advises
#: data URIs for small files; FLUX outputs and phone photos are a few MB.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Longest http(s) URL taken for an image (signed CDN URLs run to about 2,000 characters).
MAX_URL_CHARS = 8_192
#: Longest local path (Linux's PATH_MAX), and longest single file or folder name (NAME_MAX).
MAX_PATH_CHARS = 4_096
MAX_NAME_BYTES = 255
#: Image types the FLUX models read.
IMAGE_TYPES_TEXT = "jpeg, png, gif or webp"

IMAGE_SOURCE_HELP = (
    "an http(s) URL, a data: URI (data:image/png;base64,...), a path to a local image file in "
    "an allowed folder, or the prediction id of an earlier result"
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")

SourceKind = Literal["url", "data", "local"]


def source_kind(source: str) -> SourceKind:
    """What an (already checked) image source is: a URL or ``data:`` URI the API takes as it
    is, or a local path or prediction id (``local``) that the client resolves first."""
    if source.startswith("data:"):
        return "data"
    return "url" if source.startswith(IMAGE_URI_PREFIXES) else "local"


def data_uri_size(value: str) -> int:
    """The decoded size of a base64 ``data:`` URI, from its length alone (no decoding)."""
    payload = value.partition(",")[2]
    return len(payload) * 3 // 4 - payload[-2:].count("=")


def _max_bytes(info: ValidationInfo | None) -> int:
    context = info.context if info is not None else None
    if isinstance(context, dict) and isinstance(context.get("max_image_bytes"), int):
        return int(context["max_image_bytes"])
    return DEFAULT_MAX_IMAGE_BYTES


def check_data_uri(value: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> str:
    """A ``data:`` URI holding a jpeg, png, gif or webp image of at most ``max_bytes``.

    Its size is checked from its length before anything is decoded; then it is decoded and its
    type sniffed from the bytes (the declared type is not trusted).
    """
    header, comma, payload = value.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ValueError("a data: URI must be base64-encoded (data:image/png;base64,...)")
    declared = header[5:-7].split(";")[0].strip().lower()
    if declared and not declared.startswith("image/"):
        raise ValueError(
            f"a data: URI must hold an image ({IMAGE_TYPES_TEXT}), not {excerpt(declared, 30)}"
        )
    if not payload:
        raise ValueError("the data: URI is empty (no bytes after the comma)")
    if _WHITESPACE.search(payload):  # base64 wrapped at 76 columns, as mail and some tools do
        payload = _WHITESPACE.sub("", payload)
        value = f"{header},{payload}"
    size = data_uri_size(value)
    if size > max_bytes:
        raise ValueError(
            f"the data: URI holds about {size} bytes, over the {max_bytes}-byte limit for inline "
            "images; pass a smaller image or an https URL"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "the data: URI is not valid base64 (only A-Z, a-z, 0-9, +, / and = padding)"
        ) from None
    if not data:
        raise ValueError("the data: URI is empty (no bytes after the comma)")
    if sniff_extension(data[:16]) not in MEDIA_TYPES:
        raise ValueError(f"the data: URI does not hold an image ({IMAGE_TYPES_TEXT})")
    return value


def check_url(value: str) -> str:
    """An http(s) URL with a host, of bounded length and without control characters."""
    if len(value) > MAX_URL_CHARS:
        raise ValueError(
            f"the URL is {len(value)} characters long; at most {MAX_URL_CHARS} are allowed"
        )
    if _CONTROL.search(value) or " " in value:
        raise ValueError(f"the URL {excerpt(value)} contains spaces or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"the URL {excerpt(value)} is malformed ({exc})") from None
    if not host:
        raise ValueError(f"the URL {excerpt(value)} has no host (expected https://host/path)")
    return value


def check_path(value: str) -> str:
    """A local path's shape, before anything is resolved: bounded, no NUL, names <= NAME_MAX."""
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(
            f"the path is {len(value)} characters long; at most {MAX_PATH_CHARS} are allowed"
        )
    if "\x00" in value:
        raise ValueError(f"the path {excerpt(value)} contains a NUL byte (\\x00)")
    try:
        names = [part.encode("utf-8") for part in value.split("/")]
    except UnicodeEncodeError:
        raise ValueError("the path contains an invalid character (a lone surrogate)") from None
    if any(len(name) > MAX_NAME_BYTES for name in names):
        raise ValueError(
            f"the path {excerpt(value)} has a file or folder name longer than {MAX_NAME_BYTES} "
            "bytes"
        )
    return value


def check_image_uri(value: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> str:
    """Accept an http(s) URL or a ``data:`` URI: the forms the API itself takes."""
    value = value.strip()
    if value.startswith("data:"):
        return check_data_uri(value, max_bytes)
    if value.startswith(("https://", "http://")):
        return check_url(value)
    raise ValueError(
        "must be an http(s) URL or a data: URI (for example data:image/png;base64,...)"
    )


def check_image_source(value: str, info: ValidationInfo | None = None) -> str:
    """Accept what a caller may give for an image; the client turns it into an API form.

    URLs and data URIs are checked as the API would take them; a local path or a prediction id
    is only checked for shape here (nothing is opened) and resolved by the client before sending
    (see :mod:`flux_tools._drivers.local_images`). Other schemes are refused.
    """
    value = value.strip()
    if not value:
        raise ValueError(f"is empty; must be {IMAGE_SOURCE_HELP}")
    scheme, colon, rest = value.partition(":")
    if colon and scheme.lower() in ("http", "https", "data") and scheme != scheme.lower():
        value = f"{scheme.lower()}:{rest}"  # HTTPS://... is a URL too: sent as https://...
    if value.startswith(IMAGE_URI_PREFIXES):
        return check_image_uri(value, _max_bytes(info))
    if _SCHEME.match(value) and not re.match(r"^[a-zA-Z]:[\\/]", value):
        scheme = excerpt(value.partition(":")[0], 20)
        raise ValueError(f"unsupported URL scheme {scheme}; must be {IMAGE_SOURCE_HELP}")
    return check_path(value)


ImageSource = Annotated[str, AfterValidator(check_image_source)]


@dataclass(frozen=True)
class ImageField:
    """An input field that takes images: one (``multiple`` False) or a list of ``max_items``."""

    name: str
    multiple: bool
    max_items: int
    required: bool = False


__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "IMAGE_SOURCE_HELP",
    "IMAGE_TYPES_TEXT",
    "IMAGE_URI_PREFIXES",
    "PREDICTION_ID",
    "ImageField",
    "ImageSource",
    "check_image_source",
    "check_image_uri",
    "check_path",
    "data_uri_size",
    "source_kind",
]
