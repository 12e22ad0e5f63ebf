"""The models flux-tools knows: their Replicate names, input schemas, outputs and uses.

The client picks the input model from here to validate before sending; the emulator uses the
same entries to validate like the real API; the tools derive their schemas from them and
``list_models`` describes them. Adding a model is adding one input model and one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import Field, create_model

from ._inputs import (
    Flux11ProInput,
    Flux11ProUltraInput,
    FluxDevInput,
    FluxInput,
    FluxKontextProInput,
    FluxProInput,
    FluxSchnellInput,
    ImageSource,
)

DEFAULT_OWNER = "black-forest-labs"
DEFAULT_MODEL = "black-forest-labs/flux-pro"
DEFAULT_EDIT_MODEL = "black-forest-labs/flux-kontext-pro"


@dataclass(frozen=True)
class ModelSpec:
    """What flux-tools knows about one model."""

    name: str  #: Replicate's ``owner/name``
    input_model: type[FluxInput]
    #: ``single``: the output is one URI string; ``list``: a list of URIs.
    output: Literal["single", "list"]
    title: str
    strengths: str
    #: Rough price per image on Replicate: ``$`` (under 1 cent) to ``$$$$`` (6 cents and more).
    price: str
    #: The field holding the image to edit, for models that edit; None for text-to-image only.
    edit_field: str | None = None

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def can_edit(self) -> bool:
        return self.edit_field is not None

    def describe(self) -> dict[str, object]:
        """Plain data for ``list_models`` and the README."""
        return {
            "name": self.name,
            "title": self.title,
            "strengths": self.strengths,
            "price": self.price,
            "edits_images": self.can_edit,
            "outputs": "one image" if self.output == "single" else "1-4 images",
            "fields": list(self.input_model.model_fields),
        }


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="black-forest-labs/flux-pro",
            input_model=FluxProInput,
            output="single",
            title="FLUX.1 [pro]",
            strengths="High quality with fine control (steps, guidance, interval).",
            price="$$$",
        ),
        ModelSpec(
            name="black-forest-labs/flux-1.1-pro",
            input_model=Flux11ProInput,
            output="single",
            title="FLUX1.1 [pro]",
            strengths="Faster than FLUX.1 [pro], sharper, better prompt following; a good default.",
            price="$$$",
        ),
        ModelSpec(
            name="black-forest-labs/flux-1.1-pro-ultra",
            input_model=Flux11ProUltraInput,
            output="single",
            title="FLUX1.1 [pro] ultra",
            strengths="Up to 4 megapixels for finals and print; 'raw' mode for natural photos.",
            price="$$$$",
        ),
        ModelSpec(
            name="black-forest-labs/flux-schnell",
            input_model=FluxSchnellInput,
            output="list",
            title="FLUX.1 [schnell]",
            strengths="Fastest and cheapest (about a second); drafts and many variations.",
            price="$",
        ),
        ModelSpec(
            name="black-forest-labs/flux-dev",
            input_model=FluxDevInput,
            output="list",
            title="FLUX.1 [dev]",
            strengths="Good quality at a mid price; image-to-image from a starting image.",
            price="$$",
            edit_field="image",
        ),
        ModelSpec(
            name="black-forest-labs/flux-kontext-pro",
            input_model=FluxKontextProInput,
            output="single",
            title="FLUX.1 Kontext [pro]",
            strengths="Edits an image from an instruction ('make the car gold'), keeping the rest.",
            price="$$$",
            edit_field="input_image",
        ),
    ]
}


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

    What every front end's edit tool takes (LangChain's ``edit_image``, the MCP server's).
    """
    if spec.edit_field is None:
        raise ValueError(f"{spec.name} does not edit images")
    original = spec.input_model.model_fields[spec.edit_field]
    required: Any = (ImageSource, Field(description=original.description))
    builder: Any = create_model  # its overloads cannot see that the result subclasses the base
    model: type[FluxInput] = builder(
        f"{spec.input_model.__name__}Edit", __base__=spec.input_model, **{spec.edit_field: required}
    )
    return model
