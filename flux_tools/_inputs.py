"""The FLUX input objects: the one schema every front end (client, LangChain, MCP, CLI) uses.

Descriptions are written for a language model that must choose each value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer, model_validator

AspectRatio = Literal["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]
OutputFormat = Literal["webp", "jpg", "png"]

#: Where an image input may come from: a web address or inline bytes.
IMAGE_URI_PREFIXES = ("https://", "http://", "data:")


def check_image_uri(value: str) -> str:
    """Accept an http(s) URL or a ``data:`` URI; anything else would be refused by the API."""
    value = value.strip()
    if not value.startswith(IMAGE_URI_PREFIXES):
        raise ValueError(
            "must be an http(s) URL or a data: URI (for example data:image/png;base64,...)"
        )
    if value.startswith("data:") and ";base64," not in value[:100]:
        raise ValueError("a data: URI must be base64-encoded (data:image/png;base64,...)")
    return value


ImageURI = Annotated[str, AfterValidator(check_image_uri)]


class FluxInput(BaseModel):
    """Shared configuration of every model's input: unknown fields are errors, not silently sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=True)

    def to_api(self) -> dict[str, Any]:
        """The JSON object sent as ``input``: only fields the caller set, and never ``null``.

        Unset fields are left to the server, whose defaults are the ones declared here.
        """
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


class FluxProInput(FluxInput):
    """Input of ``black-forest-labs/flux-pro``: text-to-image, optionally guided by an image."""

    model_config = ConfigDict(title="FluxProInput")

    prompt: str = Field(
        min_length=1,
        description="What the image should show. Be concrete: subject, setting, style, lighting.",
    )
    aspect_ratio: AspectRatio = Field(
        default="1:1",
        description="Shape of the image, width:height. Use 'custom' to set width and height.",
    )
    width: int | None = Field(
        default=None,
        ge=256,
        le=1440,
        description="Width in pixels (256-1440, rounded to a multiple of 32). "
        "Used only when aspect_ratio is 'custom'.",
    )
    height: int | None = Field(
        default=None,
        ge=256,
        le=1440,
        description="Height in pixels (256-1440, rounded to a multiple of 32). "
        "Used only when aspect_ratio is 'custom'.",
    )
    steps: int = Field(
        default=25,
        ge=1,
        le=50,
        description="Diffusion steps: more gives finer detail but takes longer.",
    )
    guidance: float = Field(
        default=3,
        ge=2,
        le=5,
        description="How closely to follow the prompt (2-5). Higher is more literal, "
        "lower is more natural and varied.",
    )
    interval: float = Field(
        default=2,
        ge=1,
        le=4,
        description="Variance of possible outputs (1-4). Higher gives more varied "
        "compositions but lower prompt adherence.",
    )
    safety_tolerance: int = Field(
        default=2,
        ge=1,
        le=6,
        description="Content filter strength: 1 is the strictest, 6 the most permissive.",
    )
    output_format: OutputFormat = Field(
        default="webp",
        description="File format of the image: webp (small), jpg, or png (lossless).",
    )
    output_quality: int = Field(
        default=80,
        ge=0,
        le=100,
        description="Compression quality 0-100 for webp and jpg (ignored for png).",
    )
    prompt_upsampling: bool = Field(
        default=False,
        description="Let the model rewrite the prompt with more detail before generating.",
    )
    seed: int | None = Field(
        default=None,
        description="Random seed. Reuse a previous image's seed with the same prompt to "
        "reproduce or slightly vary it; leave empty for a new random image.",
    )
    image_prompt: ImageURI | None = Field(
        default=None,
        description="Optional image (http(s) URL or data: URI) whose composition and style "
        "guide the generation. jpeg, png, gif or webp.",
    )

    @field_serializer("guidance", "interval")
    def _whole_numbers_as_int(self, value: float) -> float | int:
        # The API documents these as numbers with integer defaults: send 3, not 3.0.
        return int(value) if float(value).is_integer() else value

    @model_validator(mode="after")
    def _custom_needs_size(self) -> FluxProInput:
        if self.aspect_ratio == "custom" and (self.width is None or self.height is None):
            raise ValueError("aspect_ratio 'custom' needs both width and height (256-1440 pixels)")
        return self
