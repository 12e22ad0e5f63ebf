"""Schemas as data: every input model is compiled from its snapshot, and holds to it.

The snapshots (``flux_tools/schemas/*.json``) are the published input schemas; the tests read them
independently of the compiler (plain JSON walking) and check each pydantic model against them:
fields, defaults, enums, ranges, image lists, output shape. Then what a live schema may hold,
honest or hostile.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import flux_tools
from flux_tools import MODELS, FluxInput, SchemaError
from flux_tools._domain.schemas import (
    MAX_RESOLVE_STEPS,
    input_model_from_schema,
    live_input_model,
    snapshot_document,
    snapshot_schema,
)
from flux_tools.kit import model_spec

from ..hostile import fan_out_schema

SNAPSHOTS = Path(flux_tools.__file__).parent / "schemas"


def raw_snapshot(short: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SNAPSHOTS / f"{short}.json").read_text())
    return loaded


def published_fields(short: str) -> dict[str, dict[str, Any]]:
    """Each field of the snapshot with its enum resolved (Cog writes enums as components)."""
    schemas = raw_snapshot(short)["openapi_schema"]["components"]["schemas"]
    fields = {}
    for name, prop in schemas["Input"]["properties"].items():
        merged = dict(prop)
        for part in prop.get("allOf", []):
            merged = {**schemas[part["$ref"].split("/")[-1]], **merged}
        fields[name] = merged
    return fields


def options(prop: dict[str, Any]) -> list[dict[str, Any]]:
    return [prop, *prop.get("anyOf", [])]


def test_every_registry_model_has_a_dated_snapshot() -> None:
    names = {p.stem for p in SNAPSHOTS.glob("*.json")}
    assert names == {spec.short_name for spec in MODELS.values()}
    for spec in MODELS.values():
        document = raw_snapshot(spec.short_name)
        assert document["model"] == spec.name
        assert len(document["date"]) == 10 and document["date"].startswith("20")
        assert document["source"]
        # The version it came from, where the docs recorded one (FLUX.2 and Kontext [max]).
        if spec.short_name.startswith("flux-2-") and spec.short_name != "flux-2-flex":
            assert len(document["version"]) >= 8
        assert spec.input_model.schema_version == document["version"]
        assert spec.input_model.schema_date == document["date"]
        assert spec.input_model.schema_source == "snapshot"
        assert spec.input_model.model_name == spec.name


def test_the_package_ships_its_snapshots() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"schemas/*.json"' in text


@pytest.mark.parametrize("short", sorted(spec.short_name for spec in MODELS.values()))
def test_the_input_model_holds_to_its_snapshot(short: str) -> None:
    spec = model_spec(short)
    assert spec is not None
    published = published_fields(short)
    schema = spec.input_model.model_json_schema()
    props = schema["properties"]
    assert list(props) == sorted(published, key=lambda n: published[n]["x-order"])
    assert (
        schema["required"]
        == raw_snapshot(short)["openapi_schema"]["components"]["schemas"]["Input"]["required"]
    )
    assert schema["additionalProperties"] is False
    for name, pub in published.items():
        prop = props[name]
        assert prop.get("default") == pub.get("default"), name
        assert prop["description"] and len(prop["description"]) > 20, name
        if "enum" in pub:
            assert next(o["enum"] for o in options(prop) if "enum" in o) == pub["enum"], name
        if "minimum" in pub:
            assert any(
                o.get("minimum") == pub["minimum"] and o.get("maximum") == pub["maximum"]
                for o in options(prop)
            ), name
        if pub.get("type") == "array":
            assert prop["maxItems"] == pub["maxItems"], name
    # The output shape: one URI, or a list of them.
    output = raw_snapshot(short)["openapi_schema"]["components"]["schemas"]["Output"]
    assert spec.output == ("list" if output["type"] == "array" else "single")


@pytest.mark.parametrize("short", sorted(spec.short_name for spec in MODELS.values()))
def test_defaults_are_valid_and_ranges_enforced(short: str) -> None:
    spec = model_spec(short)
    assert spec is not None
    model = spec.input_model.model_validate({"prompt": "a cat"})
    assert model.to_api() == {"prompt": "a cat"}  # the server applies its own defaults
    for name, pub in published_fields(short).items():
        if "maximum" in pub and isinstance(pub["maximum"], int):
            extra = (
                {"aspect_ratio": "custom", "width": 512, "height": 512}
                if "width" in (published_fields(short))
                and "custom" in published_fields(short)["aspect_ratio"].get("enum", [])
                else {}
            )
            spec.input_model.model_validate({"prompt": "x", **extra, name: pub["maximum"]})
            with pytest.raises(ValidationError) as info:
                spec.input_model.model_validate({"prompt": "x", **extra, name: pub["maximum"] + 1})
            assert info.value.errors()[0]["loc"][0] == name
        if "enum" in pub:
            with pytest.raises(ValidationError):
                spec.input_model.model_validate({"prompt": "x", name: "not-a-value"})


@pytest.mark.parametrize(
    ("short", "good", "bad", "named"),
    [
        ("flux-2-pro", {"aspect_ratio": "custom", "width": 2048, "height": 256}, {"width": 2049},
         "width"),
        ("flux-2-pro", {"resolution": "4 MP"}, {"safety_tolerance": 6}, "safety_tolerance"),
        ("flux-2-pro", {"input_images": ["https://example.com/a.png"] * 8},
         {"input_images": ["https://example.com/a.png"] * 9}, "input_images"),
        ("flux-2-pro", {}, {"prompt_upsampling": True}, "prompt_upsampling"),  # removed in 2025
        ("flux-2-flex", {"steps": 50, "guidance": 1.5}, {"guidance": 1}, "guidance"),
        ("flux-2-flex", {"input_images": ["https://example.com/a.png"] * 10},
         {"input_images": ["https://example.com/a.png"] * 11}, "input_images"),
        ("flux-2-dev", {"go_fast": False}, {"width": 2048}, "width"),
        ("flux-2-dev", {}, {"resolution": "1 MP"}, "resolution"),
        ("flux-2-klein-4b", {"output_megapixels": "0.25", "images": []}, {"guidance": 4},
         "guidance"),
        ("flux-2-klein-4b", {}, {"input_images": []}, "input_images"),
        ("flux-2-klein-9b-base", {"guidance": 10}, {"guidance": 11}, "guidance"),
        ("flux-kontext-max", {"aspect_ratio": "2:1"}, {"output_format": "webp"}, "output_format"),
    ],
)  # fmt: skip
def test_each_new_model_validates_its_own_fields(
    short: str, good: dict[str, Any], bad: dict[str, Any], named: str
) -> None:
    spec = model_spec(short)
    assert spec is not None
    spec.input_model.model_validate({"prompt": "x", **good})
    with pytest.raises(ValidationError) as info:
        spec.input_model.model_validate({"prompt": "x", **bad})
    assert info.value.errors()[0]["loc"][0] == named


def test_rules_beyond_the_schema_follow_each_model() -> None:
    for short, bounds in [("flux-pro", "256-1440"), ("flux-2-pro", "256-2048")]:
        spec = model_spec(short)
        assert spec is not None
        with pytest.raises(ValidationError, match=f"width and height \\({bounds} pixels\\)"):
            spec.input_model.model_validate({"prompt": "x", "aspect_ratio": "custom"})
    kontext_max = model_spec("flux-kontext-max")
    assert kontext_max is not None
    with pytest.raises(ValidationError, match="at most 2"):
        kontext_max.input_model.model_validate(
            {"prompt": "x", "input_image": "https://example.com/a.png", "safety_tolerance": 3}
        )


def test_whole_numbers_stay_integers_on_the_wire() -> None:
    spec = model_spec("flux-2-flex")
    assert spec is not None
    sent = spec.input_model.model_validate({"prompt": "x", "guidance": 5.0, "steps": 20}).to_api()
    assert json.dumps(sent) == '{"prompt": "x", "steps": 20, "guidance": 5}'


def test_descriptions_are_written_for_a_language_model() -> None:
    pro = model_spec("flux-2-pro")
    assert pro is not None
    props = pro.input_model.model_json_schema()["properties"]
    assert "up to 8" in props["input_images"]["description"]
    assert "image 1" in props["input_images"]["description"]  # how to refer to them
    assert "1 is the strictest, 5 the most permissive" in props["safety_tolerance"]["description"]
    kontext_max = model_spec("flux-kontext-max")
    assert kontext_max is not None
    prompt = kontext_max.input_model.model_json_schema()["properties"]["prompt"]["description"]
    assert prompt.startswith("The edit to make")
    # The API's terse text is not what a language model reads.
    assert props["prompt"]["description"] != published_fields("flux-2-pro")["prompt"]["description"]


def test_snapshot_helpers_give_copies() -> None:
    schema = snapshot_schema("black-forest-labs/flux-2-pro")
    assert schema["components"]["schemas"]["Input"]["properties"]["input_images"]["maxItems"] == 8
    schema["components"].clear()
    assert snapshot_schema("flux-2-pro")["components"]  # the cache was not changed
    assert snapshot_document("flux-2-pro")["version"] == "285631b5"
    with pytest.raises(ValueError, match="no schema snapshot"):
        snapshot_schema("acme/flux-2-pro")
    with pytest.raises(ValueError, match="no schema snapshot"):
        snapshot_schema("stability-ai/sdxl")


def test_a_snapshot_compiles_to_the_same_schema_as_the_registry() -> None:
    for spec in MODELS.values():
        compiled = input_model_from_schema(spec.name, snapshot_schema(spec.name))
        assert (
            compiled.model_json_schema()["properties"]
            == (spec.input_model.model_json_schema()["properties"])
        )
        assert compiled.image_inputs == spec.input_model.image_inputs
        assert compiled.schema_source == "live"


# -- schemas from elsewhere: other owners, other styles, hostile ones ---------------------------


def test_a_pydantic_style_schema_of_another_owner() -> None:
    model = input_model_from_schema(
        "acme/painter",
        {
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string", "description": "The text."},
                "strength": {
                    "anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}],
                    "default": None,
                },
                "style": {"enum": ["oil", "ink"], "type": "string", "default": "oil"},
                "refs": {"type": "array", "items": {"type": "string", "format": "uri"}},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            },
        },
    )
    assert issubclass(model, FluxInput) and model.__name__ == "PainterInput"
    props = model.model_json_schema()["properties"]
    assert props["prompt"]["description"] == "The text."  # not our FLUX wording
    # No maximum published: bounded anyway.
    assert any(o.get("maxItems") == 16 for o in options(props["refs"]))
    assert model.image_fields == ("refs",)
    model.model_validate({"prompt": "x", "strength": 0.5, "style": "ink", "tags": ["a", "b"]})
    with pytest.raises(ValidationError):
        model.model_validate({"prompt": "x", "tags": ["a"] * 4})
    with pytest.raises(ValidationError):
        model.model_validate({"prompt": "x", "strength": 2})
    with pytest.raises(ValidationError):
        model.model_validate({"prompt": "x", "color": "red"})


@pytest.mark.parametrize(
    "document",
    [
        {"properties": {}},
        {"properties": {"model_config": {"type": "string"}}},
        {"properties": {"Bad Name": {"type": "string"}}},
        {"properties": {"__class__": {"type": "string"}}},
        {"properties": {"json": {"type": "string"}}},
        {"properties": {"image_sources": {"type": "string"}}},
        {"properties": {f"f{i}": {"type": "string"} for i in range(101)}},
        {"properties": {"x": {"type": "object"}}},
        {"properties": {"x": {"enum": [{"a": 1}]}}},
        {"properties": {"x": {"enum": list(range(1000))}}},
        {"properties": {"x": {"enum": ["a" * 1000]}}},
        {"properties": {"x": "not an object"}},
        {"components": {"schemas": {"Input": {"properties": {"x": {"$ref": "#/nowhere"}}}}}},
        {"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
    ],
)
def test_schemas_we_will_not_compile(document: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        input_model_from_schema("acme/evil", document)


@pytest.mark.parametrize(("width", "fields", "size"), [(12, 10, 16_000), (48, 20, 215_000)])
def test_a_fan_out_of_references_is_refused_at_once_naming_the_model(
    width: int, fields: int, size: int
) -> None:
    """Three levels of allOf fan-out: 16 KB cost 17,000 merges, 216 KB 2.2 million (seconds of
    a blocked event loop). Refused before any of that work, with the model named."""
    document = {"latest_version": {"id": "v1", "openapi_schema": fan_out_schema(width, fields)}}
    body = json.dumps(document).encode()
    assert abs(len(body) - size) < size * 0.05
    started = time.perf_counter()
    with pytest.raises(SchemaError, match=r"input schema of acme/sketch was refused: .*allOf"):
        live_input_model("acme/sketch", body)
    assert time.perf_counter() - started < 0.5


def test_references_are_resolved_once_and_the_total_work_is_bounded() -> None:
    # 8 wide (within the parts a property may merge), 100 fields: 51,200 merges resolved
    # naively, some 900 steps with each reference resolved once.
    model = input_model_from_schema("acme/wide", fan_out_schema(8, 100))
    assert len(model.model_fields) == 100
    # A component referring to itself is refused, not followed.
    loop = {
        "components": {
            "schemas": {
                "Input": {"properties": {"x": {"$ref": "#/components/schemas/L"}}},
                "L": {"allOf": [{"$ref": "#/components/schemas/L"}]},
            }
        }
    }
    with pytest.raises(SchemaError, match="acme/loop"):
        input_model_from_schema("acme/loop", loop)

    # Distinct references, each cheap, past the bound on the total: refused all the same.
    def parts(prefix: str, first: int) -> dict[str, Any]:
        return {"allOf": [{"$ref": f"#/components/schemas/{prefix}{first + j}"} for j in range(8)]}

    schemas: dict[str, Any] = {f"e{i}": {"type": "string"} for i in range(6400)}
    schemas.update({f"m{i}": parts("e", i * 8) for i in range(800)})
    schemas["Input"] = {"properties": {f"f{n}": parts("m", n * 8) for n in range(100)}}
    with pytest.raises(SchemaError, match=f"more than {MAX_RESOLVE_STEPS} steps"):
        input_model_from_schema("acme/many", {"components": {"schemas": schemas}})


def test_a_document_too_large_to_read_is_refused_naming_the_model() -> None:
    with pytest.raises(SchemaError, match="acme/huge"):
        live_input_model("acme/huge", b" " * (2 * 1024 * 1024))


def test_a_hostile_description_is_bounded_and_printable() -> None:
    model = input_model_from_schema(
        "acme/evil",
        {"properties": {"x": {"type": "string", "description": "\x1b[31mred\n" + "A" * 5000}}},
    )
    text = model.model_json_schema()["properties"]["x"]["description"]
    assert "\x1b" not in text and "\n" not in text and len(text) <= 300


def test_image_sources_flatten_single_fields_and_lists() -> None:
    pro = model_spec("flux-2-pro")
    assert pro is not None
    payload = pro.input_model.model_validate(
        {"prompt": "x", "input_images": ["a.png", "https://example.com/b.png"]}
    )
    assert payload.image_sources() == [
        ("input_images[0]", "a.png"),
        ("input_images[1]", "https://example.com/b.png"),
    ]
    kontext = model_spec("flux-kontext-pro")
    assert kontext is not None
    single = kontext.input_model.model_validate({"prompt": "x", "input_image": "c.png"})
    assert single.image_sources() == [("input_image", "c.png")]


def test_prices_and_speeds_help_to_choose() -> None:
    pro, klein, schnell = (model_spec(n) for n in ("flux-2-pro", "flux-2-klein-4b", "flux-schnell"))
    assert pro is not None and klein is not None and schnell is not None
    assert pro.estimate_usd(megapixels=2) == pytest.approx(2 * pro.price_usd)
    assert schnell.estimate_usd(outputs=4, megapixels=0.25) == pytest.approx(4 * schnell.price_usd)
    assert klein.typical_seconds < pro.typical_seconds
    described = pro.describe()
    assert described["image_fields"] == {"input_images": 8} and described["max_edit_images"] == 8
    assert described["price_unit"] == "megapixel" and described["speed"] == "about 12 s"
    assert schnell.describe()["outputs"] == "1-4 images"
    assert klein.describe()["outputs"] == "one image (as a list)"


def test_one_line_per_model_to_choose_by() -> None:
    for spec in MODELS.values():
        line = spec.summary()
        assert line.startswith(spec.name) and spec.strengths in line and spec.price in line
        assert ("s;" in line) and (spec.price_unit in line)
        if spec.max_edit_images > 1:
            assert f"up to {spec.max_edit_images} reference images" in line
