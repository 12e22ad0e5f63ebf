"""``list_models``: the registry, so that an agent (or its user) can choose a model.

The models are the core's registry entries as ``ModelSpec.describe()`` gives them; the output
schema below declares that shape for clients, and every entry is validated against it, so the
two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flux_tools import MODELS

from . import _sdk

HOW_TO_CHANGE = (
    "The models are chosen in this server's configuration, not per call: set FLUX_MODEL "
    "(generate_image) or FLUX_EDIT_MODEL (edit_image) in the env block of this server in your "
    'MCP client (e.g. "env": {"FLUX_MODEL": "flux-schnell"} in claude_desktop_config.json, or '
    "`claude mcp add flux -e FLUX_MODEL=flux-schnell -- uvx --from 'flux-tools[mcp]' "
    "flux-tools-mcp`), then restart the server. "
    "Each tool's parameters follow its model. FLUX_EDIT_MODEL must be a model that edits images."
)


class ListModelsInput(BaseModel):
    """``list_models`` takes no arguments."""

    model_config = ConfigDict(extra="forbid", title="ListModelsInput")


class ModelInfo(BaseModel):
    """One registry entry, as ``ModelSpec.describe()`` gives it."""

    model_config = ConfigDict(extra="forbid", title="ModelInfo")

    name: str = Field(description="Replicate's owner/name of the model.")
    title: str
    strengths: str = Field(description="What the model is good at.")
    price: str = Field(description="Rough price per image: $ (under 1 cent) to $$$$ (6+ cents).")
    edits_images: bool = Field(description="Whether it can edit an input image (edit_image).")
    outputs: str = Field(description="How many images one call makes.")
    fields: list[str] = Field(description="Its parameters (the tool's arguments when chosen).")
    price_usd: float | None = Field(
        default=None, description="Rough cost of one default (1 megapixel) image, in USD."
    )
    price_unit: str | None = Field(default=None, description="image or megapixel.")
    price_estimated: bool | None = Field(
        default=None, description="Whether the price is an estimate rather than published."
    )
    typical_seconds: float | None = Field(default=None, description="Usual run time, seconds.")
    speed: str | None = Field(default=None, description="The usual run time, in words.")
    image_fields: dict[str, int] = Field(
        default_factory=dict, description="Its image input fields, each with how many images."
    )
    max_edit_images: int = Field(default=0, description="How many images an edit takes.")


class ModelList(BaseModel):
    """The structured content of ``list_models`` (its declared output schema)."""

    model_config = ConfigDict(title="ModelList")

    generate_model: str = Field(description="The model generate_image runs (FLUX_MODEL).")
    edit_model: str = Field(description="The model edit_image runs (FLUX_EDIT_MODEL).")
    models: list[ModelInfo] = Field(description="Every model this server can be set up with.")
    how_to_change: str = Field(description="How the user switches models.")


def _mark(name: str, generate_model: str, edit_model: str) -> str:
    uses = [
        t for t, m in (("generate_image", generate_model), ("edit_image", edit_model)) if m == name
    ]
    return f" <- {', '.join(uses)}" if uses else ""


def models_result(generate_model: str, edit_model: str) -> _sdk.CallToolResult:
    models = [ModelInfo.model_validate(spec.describe()) for spec in MODELS.values()]
    listing = ModelList(
        generate_model=generate_model,
        edit_model=edit_model,
        models=models,
        how_to_change=HOW_TO_CHANGE,
    )
    lines = [
        f"generate_image uses {generate_model}; edit_image uses {edit_model}.",
        "",
        "model | price | edits | outputs | good for",
        "--- | --- | --- | --- | ---",
    ]
    for info in models:
        lines.append(
            f"{info.name} ({info.title}) | {info.price} | {'yes' if info.edits_images else 'no'} "
            f"| {info.outputs} | {info.strengths}{_mark(info.name, generate_model, edit_model)}"
        )
    lines += ["", HOW_TO_CHANGE]
    structured: dict[str, Any] = listing.model_dump(mode="json")
    return _sdk.tool_result([_sdk.text_content("\n".join(lines))], structured)
