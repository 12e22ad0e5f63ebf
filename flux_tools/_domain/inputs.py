"""What every model's input is made of: the base class and the bounds of text values.

The input models themselves are built from the models' published schemas (``flux_tools/schemas``,
compiled by :mod:`flux_tools._domain.schemas`); this module holds what they share:

- :class:`FluxInput`, the base: unknown fields are errors, unset fields are not sent;
- :data:`Prompt` and :data:`Text`: bounded, encodable text (image fields are
  :data:`~flux_tools._domain.images.ImageSource`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict

from .images import ImageField

#: Longest prompt taken (FLUX reads a few hundred tokens; this bounds hostile input, not style).
MAX_PROMPT_CHARS = 10_000
#: Longest value of any other text field.
MAX_TEXT_CHARS = 10_000


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


Prompt = Annotated[str, AfterValidator(check_prompt)]
Text = Annotated[str, AfterValidator(check_text)]


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
