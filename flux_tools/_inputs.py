"""The FLUX input objects: the one schema every front end (client, LangChain, MCP, CLI) uses.

One pydantic model per model's input, each field declared once with its default, range and a
description written for a language model that must choose its value. Fields several models
share (prompt, seed, image inputs...) are declared once below as annotated types.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    model_validator,
)

#: What the API accepts for an image: a web address or inline bytes.
IMAGE_URI_PREFIXES = ("https://", "http://", "data:")
#: A prediction id as Replicate writes them (lower-case base32, about 26 characters).
PREDICTION_ID = re.compile(r"^[a-z0-9]{16,40}$")

IMAGE_SOURCE_HELP = (
    "an http(s) URL, a data: URI (data:image/png;base64,...), a path to a local image file in "
    "an allowed folder, or the prediction id of an earlier result"
)


def check_image_uri(value: str) -> str:
    """Accept an http(s) URL or a ``data:`` URI: the forms the API itself takes."""
    value = value.strip()
    if not value.startswith(IMAGE_URI_PREFIXES):
        raise ValueError(
            "must be an http(s) URL or a data: URI (for example data:image/png;base64,...)"
        )
    if value.startswith("data:") and ";base64," not in value[:100]:
        raise ValueError("a data: URI must be base64-encoded (data:image/png;base64,...)")
    return value


def check_image_source(value: str) -> str:
    """Accept what a caller may give for an image; the client turns it into an API form.

    URLs and data URIs pass through; a local path or a prediction id is resolved by the client
    before sending (see ``flux_tools._image_inputs``). Other schemes are refused here.
    """
    value = value.strip()
    if not value:
        raise ValueError(f"must be {IMAGE_SOURCE_HELP}")
    if value.startswith(IMAGE_URI_PREFIXES):
        return check_image_uri(value)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value):
        raise ValueError(f"unsupported URL scheme; must be {IMAGE_SOURCE_HELP}")
    return value


ImageSource = Annotated[str, AfterValidator(check_image_source)]

# -- fields shared by several models ---------------------------------------------------------------

Prompt = Annotated[
    str,
    Field(
        min_length=1,
        description="What the image should show. Be concrete: subject, setting, style, lighting.",
    ),
]
Seed = Annotated[
    int | None,
    Field(
        description="Random seed. Reuse a previous image's seed with the same prompt to "
        "reproduce or slightly vary it; leave empty for a new random image.",
    ),
]
PromptUpsampling = Annotated[
    bool,
    Field(description="Let the model rewrite the prompt with more detail before generating."),
]
OutputQuality = Annotated[
    int,
    Field(
        ge=0, le=100, description="Compression quality 0-100 for webp and jpg (ignored for png)."
    ),
]
ImagePrompt = Annotated[
    ImageSource | None,
    Field(
        description="Optional image whose composition and style guide the generation (jpeg, png, "
        f"gif or webp): {IMAGE_SOURCE_HELP}.",
    ),
]
SafetyTolerance = Annotated[
    int,
    Field(
        ge=1,
        le=6,
        description="Content filter strength: 1 is the strictest, 6 the most permissive.",
    ),
]
WebpJpgPng = Annotated[
    Literal["webp", "jpg", "png"],
    Field(description="File format of the image: webp (small), jpg, or png (lossless)."),
]
JpgPng = Annotated[
    Literal["jpg", "png"],
    Field(description="File format of the image: jpg (small) or png (lossless)."),
]


def _size(axis: str) -> Any:
    return Field(
        default=None,
        ge=256,
        le=1440,
        description=f"{axis} in pixels (256-1440, rounded to a multiple of 32). "
        "Used only when aspect_ratio is 'custom'.",
    )


def _aspect_ratio(default: str, note: str = "") -> Any:
    return Field(default=default, description=f"Shape of the image, width:height.{note}")


class FluxInput(BaseModel):
    """Shared configuration of every model's input: unknown fields are errors, not silently sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=True)

    #: Fields that take an image (resolved by the client from paths or prediction ids).
    image_fields: ClassVar[tuple[str, ...]] = ()

    def to_api(self) -> dict[str, Any]:
        """The JSON object sent as ``input``: only fields the caller set, and never ``null``.

        Unset fields are left to the server, whose defaults are the ones declared here.
        """
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


class _CustomSize(FluxInput):
    """``aspect_ratio="custom"`` takes its size from ``width`` and ``height``."""

    @model_validator(mode="after")
    def _custom_needs_size(self) -> Any:
        if getattr(self, "aspect_ratio", None) == "custom" and (
            getattr(self, "width", None) is None or getattr(self, "height", None) is None
        ):
            raise ValueError("aspect_ratio 'custom' needs both width and height (256-1440 pixels)")
        return self


ProAspectRatio = Literal["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]


class FluxProInput(_CustomSize):
    """Input of ``black-forest-labs/flux-pro``: text-to-image, optionally guided by an image."""

    model_config = ConfigDict(title="FluxProInput")
    image_fields = ("image_prompt",)

    prompt: Prompt
    aspect_ratio: ProAspectRatio = _aspect_ratio("1:1", " Use 'custom' to set width and height.")
    width: int | None = _size("Width")
    height: int | None = _size("Height")
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
    safety_tolerance: SafetyTolerance = 2
    output_format: WebpJpgPng = "webp"
    output_quality: OutputQuality = 80
    prompt_upsampling: PromptUpsampling = False
    seed: Seed = None
    image_prompt: ImagePrompt = None

    @field_serializer("guidance", "interval")
    def _whole_numbers_as_int(self, value: float) -> float | int:
        # The API documents these as numbers with integer defaults: send 3, not 3.0.
        return int(value) if float(value).is_integer() else value


class Flux11ProInput(_CustomSize):
    """Input of ``black-forest-labs/flux-1.1-pro``: faster, sharper text-to-image."""

    model_config = ConfigDict(title="Flux11ProInput")
    image_fields = ("image_prompt",)

    prompt: Prompt
    aspect_ratio: ProAspectRatio = _aspect_ratio("1:1", " Use 'custom' to set width and height.")
    width: int | None = _size("Width")
    height: int | None = _size("Height")
    safety_tolerance: SafetyTolerance = 2
    seed: Seed = None
    prompt_upsampling: PromptUpsampling = False
    output_format: WebpJpgPng = "webp"
    output_quality: OutputQuality = 80
    image_prompt: ImagePrompt = None


class Flux11ProUltraInput(FluxInput):
    """Input of ``black-forest-labs/flux-1.1-pro-ultra``: up to 4 megapixels, optional raw look."""

    model_config = ConfigDict(title="Flux11ProUltraInput")
    image_fields = ("image_prompt",)

    prompt: Prompt
    aspect_ratio: Literal[
        "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21"
    ] = _aspect_ratio("1:1")
    raw: bool = Field(
        default=False, description="Less processed, more natural-looking images (photography)."
    )
    image_prompt: ImagePrompt = None
    image_prompt_strength: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="How much the image_prompt shapes the result (0-1); higher follows it more.",
    )
    safety_tolerance: SafetyTolerance = 2
    seed: Seed = None
    output_format: JpgPng = "jpg"


ListAspectRatio = Literal[
    "1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"
]
NumOutputs = Annotated[
    int, Field(ge=1, le=4, description="How many images to generate in one call (1-4).")
]
DisableSafetyChecker = Annotated[
    bool, Field(description="Turn off the safety checker of the generated images.")
]
GoFast = Annotated[
    bool,
    Field(description="Run an optimised (fp8) version: faster, very slightly lower quality."),
]
Megapixels = Annotated[
    Literal["1", "0.25"],
    Field(description="Approximate size: '1' megapixel (about 1024x1024) or '0.25' (512x512)."),
]


class FluxSchnellInput(FluxInput):
    """Input of ``black-forest-labs/flux-schnell``: the fastest and cheapest, for drafts."""

    model_config = ConfigDict(title="FluxSchnellInput")

    prompt: Prompt
    aspect_ratio: ListAspectRatio = _aspect_ratio("1:1")
    num_outputs: NumOutputs = 1
    num_inference_steps: int = Field(
        default=4, ge=1, le=4, description="Denoising steps (1-4): 4 is best, fewer is faster."
    )
    seed: Seed = None
    output_format: WebpJpgPng = "webp"
    output_quality: OutputQuality = 80
    disable_safety_checker: DisableSafetyChecker = False
    go_fast: GoFast = True
    megapixels: Megapixels = "1"


class FluxDevInput(FluxInput):
    """Input of ``black-forest-labs/flux-dev``: open-weights quality, and image-to-image."""

    model_config = ConfigDict(title="FluxDevInput")
    image_fields = ("image",)

    prompt: Prompt
    image: ImageSource | None = Field(
        default=None,
        description="Optional starting image for image-to-image (the output keeps its aspect "
        f"ratio): {IMAGE_SOURCE_HELP}.",
    )
    prompt_strength: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="With an image: how much to change it (0 keeps it, 1 replaces it entirely).",
    )
    aspect_ratio: ListAspectRatio = _aspect_ratio("1:1", " Ignored when an image is given.")
    num_outputs: NumOutputs = 1
    num_inference_steps: int = Field(
        default=28, ge=1, le=50, description="Denoising steps (1-50): more is finer but slower."
    )
    guidance: float = Field(
        default=3, ge=0, le=10, description="How closely to follow the prompt (0-10)."
    )
    seed: Seed = None
    output_format: WebpJpgPng = "webp"
    output_quality: OutputQuality = 80
    disable_safety_checker: DisableSafetyChecker = False
    go_fast: GoFast = True
    megapixels: Megapixels = "1"

    @field_serializer("guidance")
    def _whole_numbers_as_int(self, value: float) -> float | int:
        return int(value) if float(value).is_integer() else value


class FluxKontextProInput(FluxInput):
    """Input of ``black-forest-labs/flux-kontext-pro``: edit an image with an instruction."""

    model_config = ConfigDict(title="FluxKontextProInput")
    image_fields = ("input_image",)

    prompt: str = Field(
        min_length=1,
        description="The edit to make, as an instruction: 'make the car gold', 'change the "
        "background to a beach', 'turn it into a watercolor'. Say what to keep unchanged.",
    )
    input_image: ImageSource | None = Field(
        default=None,
        description=f"The image to edit (jpeg, png, gif or webp): {IMAGE_SOURCE_HELP}.",
    )
    aspect_ratio: Literal[
        "match_input_image",
        "1:1",
        "16:9",
        "9:16",
        "4:3",
        "3:4",
        "3:2",
        "2:3",
        "4:5",
        "5:4",
        "21:9",
        "9:21",
        "2:1",
        "1:2",
    ] = _aspect_ratio("match_input_image", " 'match_input_image' keeps the input's shape.")
    output_format: JpgPng = "png"
    safety_tolerance: int = Field(
        default=2,
        ge=0,
        le=6,
        description="Content filter strength: 0 is the strictest, 6 the most permissive "
        "(at most 2 when editing an image).",
    )
    prompt_upsampling: PromptUpsampling = False
    seed: Seed = None

    @model_validator(mode="after")
    def _strict_with_an_image(self) -> FluxKontextProInput:
        if self.input_image is not None and self.safety_tolerance > 2:
            raise ValueError("safety_tolerance must be at most 2 when an input_image is given")
        return self
