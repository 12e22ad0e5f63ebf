"""The models flux-tools knows: their Replicate names, input schemas, outputs, prices and uses.

The client picks the input model from here to validate before sending; the emulator uses the
same entries to validate like the real API; the tools derive their schemas from them and
``list_models`` describes them. Each input model is compiled from the model's schema snapshot
(``flux_tools/schemas/<name>.json``, see :mod:`flux_tools._domain.schemas`): adding a model is
adding its snapshot and one entry below.

Prices and times are priors, not promises: ``price_usd`` per image or per output megapixel as
Replicate published them (best known, late 2026; ``price_estimated`` marks the ones inferred
from Black Forest Labs' list prices), and ``typical_seconds`` the usual run time on Replicate
(the docs' samples for flex and klein, estimates for the others). The poll schedule and budgets
start from them and learn from what they observe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model

from .._base.errors import FluxInputError
from .images import ImageField, ImageSource
from .inputs import FluxInput
from .schemas import compile_input_model, snapshot

DEFAULT_OWNER = "black-forest-labs"
DEFAULT_MODEL = "black-forest-labs/flux-pro"
DEFAULT_EDIT_MODEL = "black-forest-labs/flux-kontext-pro"


def _snapshot_model(short: str, name: str, summary: str) -> type[FluxInput]:
    document = snapshot(short)
    return compile_input_model(
        document["model"],
        document["openapi_schema"],
        name=name,
        summary=summary,
        version=document.get("version"),
        date=document.get("date"),
        module=__name__,
    )


# The public input classes, compiled from the snapshots (``from flux_tools import FluxProInput``).
# Type checkers cannot see fields made at run time: for them each class takes any field (the
# schema is checked when the code runs, as it is for every caller).
if TYPE_CHECKING:

    class _Compiled(FluxInput):
        model_config = ConfigDict(extra="allow")

        def __getattr__(self, name: str) -> Any: ...

    class FluxProInput(_Compiled):
        """Input of ``black-forest-labs/flux-pro`` (compiled from its snapshot)."""

    class Flux11ProInput(_Compiled):
        """Input of ``black-forest-labs/flux-1.1-pro`` (compiled from its snapshot)."""

    class Flux11ProUltraInput(_Compiled):
        """Input of ``black-forest-labs/flux-1.1-pro-ultra`` (compiled from its snapshot)."""

    class FluxSchnellInput(_Compiled):
        """Input of ``black-forest-labs/flux-schnell`` (compiled from its snapshot)."""

    class FluxDevInput(_Compiled):
        """Input of ``black-forest-labs/flux-dev`` (compiled from its snapshot)."""

    class FluxKontextProInput(_Compiled):
        """Input of ``black-forest-labs/flux-kontext-pro`` (compiled from its snapshot)."""

    class FluxKontextMaxInput(_Compiled):
        """Input of ``black-forest-labs/flux-kontext-max`` (compiled from its snapshot)."""

    class Flux2ProInput(_Compiled):
        """Input of ``black-forest-labs/flux-2-pro`` (compiled from its snapshot)."""

    class Flux2MaxInput(_Compiled):
        """Input of ``black-forest-labs/flux-2-max`` (compiled from its snapshot)."""

    class Flux2FlexInput(_Compiled):
        """Input of ``black-forest-labs/flux-2-flex`` (compiled from its snapshot)."""

    class Flux2DevInput(_Compiled):
        """Input of ``black-forest-labs/flux-2-dev`` (compiled from its snapshot)."""

    class Flux2Klein4bInput(_Compiled):
        """Input of ``black-forest-labs/flux-2-klein-4b`` (compiled from its snapshot)."""

    class Flux2Klein9bBaseInput(_Compiled):
        """Input of ``black-forest-labs/flux-2-klein-9b-base`` (compiled from its snapshot)."""


#: The public input classes and the snapshots they are compiled from, with their summaries.
#: Compiling takes a while, so each class is built on first use (``FluxProInput`` from
#: ``flux_tools``, or a model's ``input_model``): ``import flux_tools`` compiles none.
INPUT_CLASSES: dict[str, tuple[str, str]] = {
    "FluxProInput": (
        "flux-pro",
        "Input of ``black-forest-labs/flux-pro``: text-to-image, optionally guided by an image.",
    ),
    "Flux11ProInput": (
        "flux-1.1-pro",
        "Input of ``black-forest-labs/flux-1.1-pro``: faster, sharper text-to-image.",
    ),
    "Flux11ProUltraInput": (
        "flux-1.1-pro-ultra",
        "Input of ``black-forest-labs/flux-1.1-pro-ultra``: up to 4 megapixels, optional raw look.",
    ),
    "FluxSchnellInput": (
        "flux-schnell",
        "Input of ``black-forest-labs/flux-schnell``: the fastest and cheapest, for drafts.",
    ),
    "FluxDevInput": (
        "flux-dev",
        "Input of ``black-forest-labs/flux-dev``: open-weights quality, and image-to-image.",
    ),
    "FluxKontextProInput": (
        "flux-kontext-pro",
        "Input of ``black-forest-labs/flux-kontext-pro``: edit an image with an instruction.",
    ),
    "FluxKontextMaxInput": (
        "flux-kontext-max",
        "Input of ``black-forest-labs/flux-kontext-max``: the strongest single-image editor.",
    ),
    "Flux2ProInput": (
        "flux-2-pro",
        "Input of ``black-forest-labs/flux-2-pro``: text-to-image and editing with up to 8 "
        "reference images.",
    ),
    "Flux2MaxInput": (
        "flux-2-max",
        "Input of ``black-forest-labs/flux-2-max``: the highest quality, up to 8 reference images.",
    ),
    "Flux2FlexInput": (
        "flux-2-flex",
        "Input of ``black-forest-labs/flux-2-flex``: typography and fine control, up to 10 "
        "reference images.",
    ),
    "Flux2DevInput": (
        "flux-2-dev",
        "Input of ``black-forest-labs/flux-2-dev``: open weights, up to 4 reference images.",
    ),
    "Flux2Klein4bInput": (
        "flux-2-klein-4b",
        "Input of ``black-forest-labs/flux-2-klein-4b``: sub-second drafts, up to 5 images.",
    ),
    "Flux2Klein9bBaseInput": (
        "flux-2-klein-9b-base",
        "Input of ``black-forest-labs/flux-2-klein-9b-base``: klein undistilled, up to 5 images.",
    ),
}
_COMPILED: dict[str, type[FluxInput]] = {}
_COMPILING = threading.Lock()


def input_class(name: str) -> type[FluxInput]:
    """The input class ``name`` (``FluxProInput``...), compiled once from its snapshot."""
    compiled = _COMPILED.get(name)
    if compiled is None:
        with _COMPILING:  # once: two compilations would be two classes, isinstance would fail
            compiled = _COMPILED.get(name)
            if compiled is None:
                short, summary = INPUT_CLASSES[name]
                compiled = _COMPILED[name] = _snapshot_model(short, name, summary)
    return compiled


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name in INPUT_CLASSES:
            return input_class(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _speed(seconds: float) -> str:
    if seconds < 2:
        return "about 1 s"
    return f"about {round(seconds)} s"


@dataclass(frozen=True)
class ModelSpec:
    """What flux-tools knows about one model."""

    name: str  #: Replicate's ``owner/name``
    #: The name of its input class (``FluxProInput``), compiled on first use: :attr:`input_model`.
    input_class: str
    #: ``single``: the output is one URI string; ``list``: a list of URIs.
    output: Literal["single", "list"]
    title: str
    strengths: str
    #: Rough price per image on Replicate: ``$`` (under 1 cent) to ``$$$$`` (6 cents and more).
    price: str
    #: The field holding the image(s) to edit, for models that edit; None for text-to-image only.
    edit_field: str | None = None
    #: Usual run time in seconds on Replicate: a prior for polling and budgets.
    typical_seconds: float = 10.0
    #: Price in US dollars per ``price_unit`` (``image``, or ``megapixel`` of output).
    price_usd: float = 0.0
    price_unit: Literal["image", "megapixel"] = "image"
    #: True when ``price_usd`` is inferred (list prices, family) rather than read from Replicate.
    price_estimated: bool = False
    #: Shown in listings: what to prefer it for, in a few words.
    use_for: str = field(default="")

    @property
    def input_model(self) -> type[FluxInput]:
        """The pydantic model of its input: what every front end validates with."""
        return input_class(self.input_class)

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def can_edit(self) -> bool:
        return self.edit_field is not None

    @property
    def image_inputs(self) -> tuple[ImageField, ...]:
        """The fields that take images, each single or a list (with its maximum)."""
        return self.input_model.image_inputs

    @property
    def edit_input(self) -> ImageField | None:
        """The image field an edit fills (single, or a list of references)."""
        return next((f for f in self.image_inputs if f.name == self.edit_field), None)

    @property
    def max_edit_images(self) -> int:
        """How many images an edit takes: 1 for single-image editors, 0 if it does not edit."""
        edit = self.edit_input
        return edit.max_items if edit is not None else 0

    @property
    def outputs_text(self) -> str:
        """How many images one call makes, in words."""
        count = self.input_model.model_fields.get("num_outputs")
        limits = [getattr(m, "le", None) for m in count.metadata] if count else []
        most = next((le for le in limits if isinstance(le, int)), None)
        if self.output == "list" and most:
            return f"1-{most} images"
        return "one image" + (" (as a list)" if self.output == "list" else "")

    @property
    def price_text(self) -> str:
        """``$$$ (~$0.03 per megapixel)``: the class and the figure (``~`` marks an estimate)."""
        figure = f"{'~' if self.price_estimated else ''}${self.price_usd:g} per {self.price_unit}"
        return f"{self.price} ({figure})"

    @property
    def images_text(self) -> str:
        """What images it takes, in words: ``up to 8 reference images (input_images)``."""
        edit = self.edit_input
        if edit is not None and edit.multiple:
            return f"up to {edit.max_items} reference images ({edit.name})"
        if edit is not None:
            return f"one image to edit ({edit.name})"
        guides = [f.name for f in self.image_inputs]
        return f"an optional guide image ({guides[0]})" if guides else "no input images"

    def summary(self) -> str:
        """One line to choose a model by, for tool descriptions and listings."""
        return (
            f"{self.name} ({self.title}): {self.strengths} Takes {self.images_text}; "
            f"{_speed(self.typical_seconds)}; {self.price_text}; {self.outputs_text}."
        )

    def estimate_usd(self, outputs: int = 1, megapixels: float = 1.0) -> float:
        """Rough cost of ``outputs`` images of ``megapixels`` each (the default 1 MP)."""
        per_image = self.price_usd * (megapixels if self.price_unit == "megapixel" else 1.0)
        return round(per_image * max(outputs, 0), 6)

    def describe(self) -> dict[str, object]:
        """Plain data for ``list_models`` and the docs."""
        return {
            "name": self.name,
            "title": self.title,
            "strengths": self.strengths,
            "price": self.price,
            "edits_images": self.can_edit,
            "outputs": self.outputs_text,
            "fields": list(self.input_model.model_fields),
            "price_usd": self.price_usd,
            "price_unit": self.price_unit,
            "price_estimated": self.price_estimated,
            "typical_seconds": self.typical_seconds,
            "speed": _speed(self.typical_seconds),
            "image_fields": {f.name: f.max_items for f in self.image_inputs},
            "max_edit_images": self.max_edit_images,
        }


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="black-forest-labs/flux-pro",
            input_class="FluxProInput",
            output="single",
            title="FLUX.1 [pro]",
            strengths="High quality with fine control (steps, guidance, interval).",
            price="$$$",
            typical_seconds=10,
            price_usd=0.055,
        ),
        ModelSpec(
            name="black-forest-labs/flux-1.1-pro",
            input_class="Flux11ProInput",
            output="single",
            title="FLUX1.1 [pro]",
            strengths="Faster than FLUX.1 [pro], sharper, better prompt following; a good default.",
            price="$$$",
            typical_seconds=6,
            price_usd=0.04,
        ),
        ModelSpec(
            name="black-forest-labs/flux-1.1-pro-ultra",
            input_class="Flux11ProUltraInput",
            output="single",
            title="FLUX1.1 [pro] ultra",
            strengths="Up to 4 megapixels for finals and print; 'raw' mode for natural photos.",
            price="$$$$",
            typical_seconds=12,
            price_usd=0.06,
        ),
        ModelSpec(
            name="black-forest-labs/flux-schnell",
            input_class="FluxSchnellInput",
            output="list",
            title="FLUX.1 [schnell]",
            strengths="Fastest and cheapest (about a second); drafts and many variations.",
            price="$",
            typical_seconds=1.5,
            price_usd=0.003,
        ),
        ModelSpec(
            name="black-forest-labs/flux-dev",
            input_class="FluxDevInput",
            output="list",
            title="FLUX.1 [dev]",
            strengths="Good quality at a mid price; image-to-image from a starting image.",
            price="$$",
            edit_field="image",
            typical_seconds=5,
            price_usd=0.025,
            price_estimated=True,
        ),
        ModelSpec(
            name="black-forest-labs/flux-kontext-pro",
            input_class="FluxKontextProInput",
            output="single",
            title="FLUX.1 Kontext [pro]",
            strengths="Edits an image from an instruction ('make the car gold'), keeping the rest.",
            price="$$$",
            edit_field="input_image",
            typical_seconds=7,
            price_usd=0.04,
        ),
        ModelSpec(
            name="black-forest-labs/flux-kontext-max",
            input_class="FluxKontextMaxInput",
            output="single",
            title="FLUX.1 Kontext [max]",
            strengths="The strongest single-image editor: instructions, text in images, "
            "hard edits.",
            price="$$$$",
            edit_field="input_image",
            typical_seconds=9,
            price_usd=0.08,
        ),
        ModelSpec(
            name="black-forest-labs/flux-2-pro",
            input_class="Flux2ProInput",
            output="single",
            title="FLUX.2 [pro]",
            strengths="The everyday default of FLUX.2: quality, prompt following, and editing or "
            "composing from several reference images.",
            price="$$$",
            edit_field="input_images",
            typical_seconds=12,
            price_usd=0.03,
            price_unit="megapixel",
            price_estimated=True,
        ),
        ModelSpec(
            name="black-forest-labs/flux-2-max",
            input_class="Flux2MaxInput",
            output="single",
            title="FLUX.2 [max]",
            strengths="The highest quality, for hero shots and final assets.",
            price="$$$$",
            edit_field="input_images",
            typical_seconds=20,
            price_usd=0.07,
            price_unit="megapixel",
            price_estimated=True,
        ),
        ModelSpec(
            name="black-forest-labs/flux-2-flex",
            input_class="Flux2FlexInput",
            output="single",
            title="FLUX.2 [flex]",
            strengths="Typography and fine control (steps, guidance).",
            price="$$$$",
            edit_field="input_images",
            typical_seconds=23,
            price_usd=0.06,
            price_unit="megapixel",
            price_estimated=True,
        ),
        ModelSpec(
            name="black-forest-labs/flux-2-dev",
            input_class="Flux2DevInput",
            output="single",
            title="FLUX.2 [dev]",
            strengths="Open weights, cheaper FLUX.2.",
            price="$$",
            edit_field="input_images",
            typical_seconds=8,
            price_usd=0.012,
            price_unit="megapixel",
            price_estimated=True,
        ),
        ModelSpec(
            name="black-forest-labs/flux-2-klein-4b",
            input_class="Flux2Klein4bInput",
            output="list",
            title="FLUX.2 [klein] 4B",
            strengths="Sub-second drafts and quick edits; the cheapest FLUX.2.",
            price="$",
            edit_field="images",
            typical_seconds=1,
            price_usd=0.003,
            price_unit="megapixel",
            price_estimated=True,
        ),
        ModelSpec(
            name="black-forest-labs/flux-2-klein-9b-base",
            input_class="Flux2Klein9bBaseInput",
            output="list",
            title="FLUX.2 [klein] 9B base",
            strengths="Klein undistilled: a little slower, more varied, with guidance.",
            price="$",
            edit_field="images",
            typical_seconds=3,
            price_usd=0.006,
            price_unit="megapixel",
            price_estimated=True,
        ),
    ]
}


@lru_cache(maxsize=4096)  # called for every row of a batch, a few times each
def normalize_model_name(model: str) -> str:
    """``flux-pro`` and ``black-forest-labs/flux-pro`` name the same model."""
    model = model.strip().strip("/")
    if not model:
        raise ValueError("model name is empty; use owner/name, e.g. black-forest-labs/flux-pro")
    if "/" not in model:
        model = f"{DEFAULT_OWNER}/{model}"
    owner, _, name = model.partition("/")
    if not owner or not name or "/" in name or ":" in model:
        raise ValueError(f"model must look like owner/name (e.g. {DEFAULT_MODEL}), got {model!r}")
    return model


def model_spec(model: str) -> ModelSpec | None:
    """The registry entry of ``model``, or None for a model flux-tools does not know."""
    return MODELS.get(normalize_model_name(model))


def spec_or_none(model: str) -> ModelSpec | None:
    """The spec of ``model``, or None, also for a name that is not ``owner/name`` (one the API
    made up, e.g. with a version suffix)."""
    try:
        return model_spec(model)
    except ValueError:
        return None


def known_model(model: str) -> ModelSpec:
    """The registry entry of ``model``; a ValueError listing the known models otherwise."""
    spec = model_spec(model)
    if spec is None:
        names = ", ".join(s.short_name for s in MODELS.values())
        raise ValueError(f"unknown model {model!r}; flux-tools knows: {names}")
    return spec


def edit_spec(model: str) -> ModelSpec:
    """The registry entry of an editing ``model``; a ValueError naming the models that edit."""
    spec = known_model(model)
    if spec.edit_field is None:
        editors = ", ".join(s.short_name for s in MODELS.values() if s.can_edit)
        raise ValueError(f"{spec.name} does not edit images; models that do: {editors}")
    return spec


@cache
def edit_arguments(spec: ModelSpec) -> type[FluxInput]:
    """The edit model's input with its image field required: the only change to the schema.

    A list field (FLUX.2's ``input_images``, klein's ``images``) becomes a required list of one
    to ``max_items`` images. What every front end's edit tool takes (LangChain's
    ``edit_image``, the MCP server's).
    """
    edit = spec.edit_input
    if edit is None:
        raise ValueError(f"{spec.name} does not edit images")
    original = spec.input_model.model_fields[edit.name]
    required: Any
    if edit.multiple:
        images = Annotated[list[ImageSource], Field(min_length=1, max_length=edit.max_items)]
        required = (images, Field(description=original.description))
    else:
        required = (ImageSource, Field(description=original.description))
    builder: Any = create_model  # its overloads cannot see that the result subclasses the base
    model: type[FluxInput] = builder(
        f"{spec.input_model.__name__}Edit", __base__=spec.input_model, **{edit.name: required}
    )
    return model


#: What an edit takes: one image source, or several (paths may be ``Path`` objects).
EditImages = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def edit_input(spec: ModelSpec, image: EditImages) -> dict[str, Any]:
    """The image field of an edit filled with ``image``: one source, or several.

    A list field takes them all (the order is the order of "image 1", "image 2" in the prompt);
    a single-image editor given several is refused, naming the models that take several.
    """
    edit = spec.edit_input
    if edit is None:
        raise FluxInputError(f"{spec.name} does not edit images")
    given: list[Any] = [image] if isinstance(image, str | os.PathLike) else list(image)
    sources = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in given]
    if not sources:
        raise FluxInputError.one(edit.name, "no image was given (an edit needs at least one)")
    if edit.multiple:
        return {edit.name: sources}
    if len(sources) > 1:
        several = ", ".join(
            f"{s.short_name} ({s.max_edit_images})"
            for s in MODELS.values()
            if s.max_edit_images > 1
        )
        problem = f"{spec.short_name} edits one image; {len(sources)} were given"
        raise FluxInputError.one(edit.name, problem, f"models that take several: {several}")
    return {edit.name: sources[0]}
