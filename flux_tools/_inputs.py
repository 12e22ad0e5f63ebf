"""What every model's input is made of: the base class, image sources and the bounds of values.

The input models themselves are built from the models' published schemas (``flux_tools/schemas``,
compiled by :mod:`flux_tools._schemas`); this module holds what they share:

- :class:`FluxInput`, the base: unknown fields are errors, unset fields are not sent;
- :data:`ImageSource`, the type of every image field and of every item of an image list: an
  ``https:`` URL, a ``data:`` URI, a local path or the id of an earlier prediction;
- the bounds every argument is held to before any work starts (issue 16): prompt, URL, path and
  ``data:`` URI lengths, decoded and sniffed inline images, NUL bytes, lone surrogates. Errors
  name the rule and quote at most a short, escaped excerpt of the value.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from ._downloads import MEDIA_TYPES, sniff_extension

#: What the API accepts for an image: a web address or inline bytes.
IMAGE_URI_PREFIXES = ("https://", "http://", "data:")
#: A prediction id as Replicate writes them (lower-case base32, about 26 characters).
PREDICTION_ID = re.compile(r"^[a-z0-9]{16,40}$")

#: Largest image sent inline (a local file, or a ``data:`` URI given as is). Replicate advises
#: data URIs for small files; FLUX outputs and phone photos are a few MB.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Longest prompt taken (FLUX reads a few hundred tokens; this bounds hostile input, not style).
MAX_PROMPT_CHARS = 10_000
#: Longest value of any other text field.
MAX_TEXT_CHARS = 10_000
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


def excerpt(value: str, limit: int = 40) -> str:
    """A short, printable quote of a (possibly huge or hostile) value for an error message."""
    head = value[:limit]
    shown = "".join(
        c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else repr(c)[1:-1] for c in head
    )
    more = f"... ({len(value)} characters)" if len(value) > limit else ""
    return f"'{shown}'{more}"


def check_text(value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Any text sent to the API: bounded, and encodable (no lone surrogates)."""
    if len(value) > limit:
        raise ValueError(f"is {len(value)} characters long; at most {limit} are allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "contains an invalid character (a lone surrogate such as \\ud800)"
        ) from None
    return value


def check_prompt(value: str) -> str:
    check_text(value, MAX_PROMPT_CHARS)
    if "\x00" in value:
        raise ValueError("contains a NUL byte (\\x00)")
    return value


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
    (see ``flux_tools._image_inputs``). Other schemes are refused.
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
Prompt = Annotated[str, AfterValidator(check_prompt)]
Text = Annotated[str, AfterValidator(check_text)]


@dataclass(frozen=True)
class ImageField:
    """An input field that takes images: one (``multiple`` False) or a list of ``max_items``."""

    name: str
    multiple: bool
    max_items: int
    required: bool = False


class FluxInput(BaseModel):
    """Shared configuration of every model's input: unknown fields are errors, not silently sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=True)

    #: Names of the fields that take images, single ones and lists (resolved by the client from
    #: paths or prediction ids).
    image_fields: ClassVar[tuple[str, ...]] = ()
    #: The same fields with their shape: single or a list, and how many images a list takes.
    image_inputs: ClassVar[tuple[ImageField, ...]] = ()
    #: ``owner/name`` of the model whose schema this is, and where the schema came from.
    model_name: ClassVar[str] = ""
    schema_version: ClassVar[str | None] = None
    schema_date: ClassVar[str | None] = None
    #: ``snapshot`` (built into the package) or ``live`` (the API's model endpoint).
    schema_source: ClassVar[str] = "snapshot"

    def to_api(self) -> dict[str, Any]:
        """The JSON object sent as ``input``: only fields the caller set, and never ``null``.

        Unset fields are left to the server, whose defaults are the ones declared here.
        """
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)

    def image_sources(self) -> list[tuple[str, str]]:
        """Every image given, as ``(label, source)``: ``("input_image", ...)`` for a single
        field, ``("input_images[2]", ...)`` for the third item of a list."""
        sources: list[tuple[str, str]] = []
        for name in type(self).image_fields:
            value = getattr(self, name, None)
            if isinstance(value, str):
                sources.append((name, value))
            elif isinstance(value, list):
                sources += [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str)]
        return sources


def __getattr__(name: str) -> Any:
    # The per-model input classes (FluxProInput...) are compiled from the schema snapshots in
    # flux_tools._registry; they stay importable from here, where they used to live.
    if name.startswith("Flux") and name.endswith("Input"):
        from . import _registry

        if hasattr(_registry, name):
            return getattr(_registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
