"""The models flux-tools knows: their Replicate names, input schemas and output shapes.

The client picks the input model from here to validate before sending; the emulator uses the
same entries to validate like the real API. Adding a model is adding one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._inputs import FluxInput, FluxProInput

DEFAULT_OWNER = "black-forest-labs"
DEFAULT_MODEL = "black-forest-labs/flux-pro"


@dataclass(frozen=True)
class ModelSpec:
    """What flux-tools knows about one model."""

    name: str  #: Replicate's ``owner/name``
    input_model: type[FluxInput]
    #: ``single``: the output is one URI string; ``list``: a list of URIs.
    output: Literal["single", "list"]
    summary: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="black-forest-labs/flux-pro",
            input_model=FluxProInput,
            output="single",
            summary="FLUX.1 [pro]: high quality text-to-image with fine control over steps "
            "and guidance.",
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
