"""FluxProInput: the schema every front end derives from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flux_tools import FluxInputError, FluxProInput

SEED_PAGE = Path(__file__).parents[3] / "shared" / "seed" / "flux-pro-predictions.txt"


def seed_example() -> dict[str, Any]:
    """The request example of the gateway's API page, read from the page itself when present."""
    if SEED_PAGE.exists():
        text = SEED_PAGE.read_text()
        document, _ = json.JSONDecoder().raw_decode(text, text.index('{\n"input"'))
        parsed: dict[str, Any] = document["input"]
        return parsed
    return {
        "steps": 25,
        "width": 1024,
        "height": 1024,
        "prompt": "The world's largest black forest cake, the size of a building, surrounded by "
        "trees of the black forest",
        "guidance": 3,
        "interval": 2,
        "aspect_ratio": "1:1",
        "output_format": "webp",
        "output_quality": 80,
        "safety_tolerance": 2,
        "prompt_upsampling": False,
    }


def test_seed_example_round_trips_unchanged() -> None:
    example = seed_example()
    assert example["prompt"].startswith("The world")
    model = FluxProInput.model_validate(example)
    assert model.to_api() == example
    assert json.loads(json.dumps(model.to_api())) == example
    # Whole numbers stay integers on the wire, as the API documents them.
    assert '"guidance": 3,' in json.dumps(model.to_api())


def test_unset_fields_are_not_sent() -> None:
    assert FluxProInput(prompt="a fox").to_api() == {"prompt": "a fox"}
    assert FluxProInput(prompt="a fox", seed=None).to_api() == {"prompt": "a fox"}
    assert FluxProInput(prompt="a fox", guidance=2.5).to_api() == {
        "prompt": "a fox",
        "guidance": 2.5,
    }


def test_defaults_match_the_api_page() -> None:
    fields = FluxProInput.model_fields
    expected = {
        "aspect_ratio": "1:1",
        "output_format": "webp",
        "steps": 25,
        "guidance": 3,
        "interval": 2,
        "output_quality": 80,
        "safety_tolerance": 2,
        "prompt_upsampling": False,
        "seed": None,
    }
    assert {name: fields[name].default for name in expected} == expected


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [
        ("steps", 1, 50),
        ("guidance", 2, 5),
        ("interval", 1, 4),
        ("safety_tolerance", 1, 6),
        ("output_quality", 0, 100),
        ("width", 256, 1440),
        ("height", 256, 1440),
    ],
)
def test_ranges_are_enforced_and_published(field: str, low: float, high: float) -> None:
    extra = {"aspect_ratio": "custom", "width": 512, "height": 512}
    FluxProInput(prompt="x", **{**extra, field: low})
    FluxProInput(prompt="x", **{**extra, field: high})
    for bad in (low - 1, high + 1):
        with pytest.raises(ValidationError) as info:
            FluxProInput(prompt="x", **{**extra, field: bad})
        assert info.value.errors()[0]["loc"] == (field,)
    schema = FluxProInput.model_json_schema()["properties"][field]
    options = [schema, *schema.get("anyOf", [])]
    assert any(o.get("minimum") == low and o.get("maximum") == high for o in options)


def test_every_field_is_described_for_a_language_model() -> None:
    for name, info in FluxProInput.model_fields.items():
        assert info.description and len(info.description) > 20, name


def test_enums_are_published() -> None:
    props = FluxProInput.model_json_schema()["properties"]
    assert props["aspect_ratio"]["enum"] == [
        "custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3",
    ]  # fmt: skip
    assert props["output_format"]["enum"] == ["webp", "jpg", "png"]
    assert FluxProInput.model_json_schema()["required"] == ["prompt"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("https://example.com/a.png", True),
        ("http://localhost:8000/a.png", True),
        ("data:image/png;base64,iVBORw0KGgo=", True),
        ("/home/me/a.png", True),  # a local file: the client reads it from an allowed folder
        ("3mjq2vyd9drm80cr2zxb2jbbx4", True),  # an earlier prediction's id
        ("ftp://example.com/a.png", False),
        ("   ", False),
        ("data:image/png,notbase64", False),
    ],
)
def test_image_prompt_takes_urls_and_data_uris(value: str, ok: bool) -> None:
    if ok:
        assert FluxProInput(prompt="x", image_prompt=value).image_prompt == value
    else:
        with pytest.raises(ValidationError, match="image_prompt"):
            FluxProInput(prompt="x", image_prompt=value)


def test_custom_aspect_ratio_needs_width_and_height() -> None:
    with pytest.raises(ValidationError, match="width and height"):
        FluxProInput(prompt="x", aspect_ratio="custom", width=512)
    # Outside 'custom' the API ignores them, as the page's own example shows.
    assert FluxProInput(prompt="x", width=1024, height=1024).width == 1024


def test_empty_prompt_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        FluxProInput(prompt="  ")
    with pytest.raises(ValidationError) as info:
        FluxProInput.model_validate({"prompt": "x", "stpes": 30})
    assert info.value.errors()[0]["loc"] == ("stpes",)


def test_input_error_summary_names_field_and_allowed_values() -> None:
    schema = FluxProInput.model_json_schema()
    try:
        FluxProInput.model_validate({"prompt": "x", "steps": 99, "aspect_ratio": "7:3", "stpes": 1})
    except ValidationError as exc:
        error = FluxInputError.from_validation_error(
            exc, schema, model="black-forest-labs/flux-pro"
        )
    text = str(error)
    assert "steps" in text and "1 to 50" in text
    assert "aspect_ratio" in text and "'16:9'" in text
    assert "- stpes: is not a field of this model; did you mean 'steps'?" in text
    assert sorted(error.fields) == ["aspect_ratio", "steps", "stpes"]
    assert [e.get("suggestion") for e in error.errors if e["field"] == "stpes"] == ["steps"]
    assert isinstance(error, ValueError)


def test_the_input_classes_are_compiled_from_snapshots_and_still_importable() -> None:
    from flux_tools._domain import registry

    assert FluxProInput is registry.FluxProInput
    assert FluxProInput.schema_source == "snapshot" and FluxProInput.schema_date
    assert FluxProInput.image_fields == ("image_prompt",)

    class Extended(FluxProInput):  # still a class to build on
        mood: str = "calm"

    assert Extended(prompt="x").to_api() == {"prompt": "x"}
    with pytest.raises(AttributeError):
        registry.NotAnInput  # type: ignore[attr-defined]  # noqa: B018
