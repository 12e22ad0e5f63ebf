"""The FLUX family: each model's schema against its documentation, list outputs, and editing
through the client with every kind of image source."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flux_tools import DEFAULT_MODEL, MODELS
from flux_tools.kit import model_spec

from ..conftest import Flux

MakeFlux = Callable[..., Flux]

# The documented schemas (../shared/docs/replicate-api.md): field -> (default, allowed), where
# allowed is an enum list, a (min, max) range, or None. Written out here on purpose: this table
# is the reference the input models are checked against.
ASPECT_PRO = ["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]
ASPECT_LIST = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
DOCUMENTED: dict[str, dict[str, tuple[Any, Any]]] = {
    "flux-pro": {
        "prompt": (None, None), "image_prompt": (None, None), "aspect_ratio": ("1:1", ASPECT_PRO),
        "width": (None, (256, 1440)), "height": (None, (256, 1440)), "steps": (25, (1, 50)),
        "guidance": (3, (2, 5)), "interval": (2, (1, 4)), "safety_tolerance": (2, (1, 6)),
        "seed": (None, None), "output_format": ("webp", ["webp", "jpg", "png"]),
        "output_quality": (80, (0, 100)), "prompt_upsampling": (False, None),
    },
    "flux-1.1-pro": {
        "prompt": (None, None), "image_prompt": (None, None), "aspect_ratio": ("1:1", ASPECT_PRO),
        "width": (None, (256, 1440)), "height": (None, (256, 1440)),
        "safety_tolerance": (2, (1, 6)), "seed": (None, None), "prompt_upsampling": (False, None),
        "output_format": ("webp", ["webp", "jpg", "png"]), "output_quality": (80, (0, 100)),
    },
    "flux-1.1-pro-ultra": {
        "prompt": (None, None),
        "aspect_ratio": ("1:1", ["21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3",
                                 "9:16", "9:21"]),
        "raw": (False, None), "image_prompt": (None, None), "image_prompt_strength": (0.1, (0, 1)),
        "safety_tolerance": (2, (1, 6)), "seed": (None, None),
        "output_format": ("jpg", ["jpg", "png"]),
    },
    "flux-schnell": {
        "prompt": (None, None), "aspect_ratio": ("1:1", ASPECT_LIST), "num_outputs": (1, (1, 4)),
        "num_inference_steps": (4, (1, 4)), "seed": (None, None),
        "output_format": ("webp", ["webp", "jpg", "png"]), "output_quality": (80, (0, 100)),
        "disable_safety_checker": (False, None), "go_fast": (True, None),
        "megapixels": ("1", ["1", "0.25"]),
    },
    "flux-dev": {
        "prompt": (None, None), "aspect_ratio": ("1:1", ASPECT_LIST), "num_outputs": (1, (1, 4)),
        "num_inference_steps": (28, (1, 50)), "seed": (None, None),
        "output_format": ("webp", ["webp", "jpg", "png"]), "output_quality": (80, (0, 100)),
        "disable_safety_checker": (False, None), "go_fast": (True, None),
        "megapixels": ("1", ["1", "0.25"]), "image": (None, None),
        "prompt_strength": (0.8, (0, 1)), "guidance": (3, (0, 10)),
    },
    "flux-kontext-pro": {
        "prompt": (None, None), "input_image": (None, None),
        "aspect_ratio": ("match_input_image", ["match_input_image", "1:1", "16:9", "9:16", "4:3",
                         "3:4", "3:2", "2:3", "4:5", "5:4", "21:9", "9:21", "2:1", "1:2"]),
        "output_format": ("png", ["jpg", "png"]), "safety_tolerance": (2, (0, 6)),
        "prompt_upsampling": (False, None), "seed": (None, None),
    },
}  # fmt: skip
# FLUX.2 and Kontext [max] (../shared/docs/flux2-models.md): field -> (default, allowed, most
# images for an image list).
ASPECT_2 = [
    "match_input_image",
    "custom",
    "1:1",
    "16:9",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "9:16",
    "3:4",
    "4:3",
]
RESOLUTION_2 = ["match_input_image", "0.5 MP", "1 MP", "2 MP", "4 MP"]
FLUX2_COMMON: dict[str, tuple[Any, Any]] = {
    "prompt": (None, None),
    "seed": (None, None),
    "output_format": ("webp", ["webp", "jpg", "png"]),
    "output_quality": (80, (0, 100)),
}
FLUX2_SIZE: dict[str, tuple[Any, Any]] = {
    "aspect_ratio": ("1:1", ASPECT_2),
    "resolution": ("1 MP", RESOLUTION_2),
    "width": (None, (256, 2048)),
    "height": (None, (256, 2048)),
}
KLEIN: dict[str, tuple[Any, Any]] = {
    **FLUX2_COMMON,
    "images": ([], None),
    "aspect_ratio": ("1:1", [a for a in ASPECT_2 if a != "custom"]),
    "output_megapixels": ("1", None),
    "go_fast": (False, None),
    "disable_safety_checker": (False, None),
    "output_format": ("jpg", ["webp", "jpg", "png"]),
    "output_quality": (95, (0, 100)),
}
DOCUMENTED.update({
    "flux-2-pro": {**FLUX2_COMMON, **FLUX2_SIZE, "input_images": ([], None),
                   "safety_tolerance": (2, (1, 5))},
    "flux-2-max": {**FLUX2_COMMON, **FLUX2_SIZE, "input_images": ([], None),
                   "safety_tolerance": (2, (1, 5))},
    "flux-2-flex": {**FLUX2_COMMON, **FLUX2_SIZE, "input_images": ([], None),
                    "steps": (30, (1, 50)), "guidance": (4.5, (1.5, 10)),
                    "prompt_upsampling": (True, None), "safety_tolerance": (2, (1, 5))},
    "flux-2-dev": {**FLUX2_COMMON, "input_images": ([], None), "aspect_ratio": ("1:1", ASPECT_2),
                   "width": (None, (256, 1440)), "height": (None, (256, 1440)),
                   "go_fast": (True, None), "disable_safety_checker": (False, None)},
    "flux-2-klein-4b": KLEIN,
    "flux-2-klein-9b-base": {**KLEIN, "guidance": (4, (1, 10))},
    "flux-kontext-max": DOCUMENTED["flux-kontext-pro"],
})  # fmt: skip
#: The documented image inputs: field -> how many images (1: a single field).
DOCUMENTED_IMAGES: dict[str, dict[str, int]] = {
    "flux-pro": {"image_prompt": 1}, "flux-1.1-pro": {"image_prompt": 1},
    "flux-1.1-pro-ultra": {"image_prompt": 1}, "flux-schnell": {}, "flux-dev": {"image": 1},
    "flux-kontext-pro": {"input_image": 1}, "flux-kontext-max": {"input_image": 1},
    "flux-2-pro": {"input_images": 8}, "flux-2-max": {"input_images": 8},
    "flux-2-flex": {"input_images": 10}, "flux-2-dev": {"input_images": 4},
    "flux-2-klein-4b": {"images": 5}, "flux-2-klein-9b-base": {"images": 5},
}  # fmt: skip
LIST_OUTPUTS = {"flux-schnell", "flux-dev", "flux-2-klein-4b", "flux-2-klein-9b-base"}


def test_every_documented_model_is_registered() -> None:
    assert {spec.short_name for spec in MODELS.values()} == set(DOCUMENTED)
    assert {s.short_name for s in MODELS.values() if not s.can_edit} == {
        "flux-pro",
        "flux-1.1-pro",
        "flux-1.1-pro-ultra",
        "flux-schnell",
    }
    assert {s.short_name for s in MODELS.values() if s.output == "list"} == LIST_OUTPUTS
    assert DEFAULT_MODEL == "black-forest-labs/flux-pro"


@pytest.mark.parametrize("short", list(DOCUMENTED))
def test_image_inputs_match_the_documentation(short: str) -> None:
    spec = model_spec(short)
    assert spec is not None
    assert {f.name: f.max_items for f in spec.image_inputs} == DOCUMENTED_IMAGES[short]
    assert {f.name for f in spec.image_inputs if f.multiple} == {
        name for name, most in DOCUMENTED_IMAGES[short].items() if most > 1
    }
    if spec.can_edit:
        assert spec.edit_field in DOCUMENTED_IMAGES[short]
        assert spec.max_edit_images == DOCUMENTED_IMAGES[short][spec.edit_field]
    # Priors the poll schedule and the budgets start from: every model has them.
    assert spec.typical_seconds > 0 and spec.price_usd > 0
    assert spec.price_unit in ("image", "megapixel")
    assert spec.describe()["max_edit_images"] == spec.max_edit_images


@pytest.mark.parametrize("short", list(DOCUMENTED))
def test_schema_matches_the_documentation(short: str) -> None:
    spec = model_spec(short)
    assert spec is not None
    schema = spec.input_model.model_json_schema()
    props = schema["properties"]
    assert set(props) == set(DOCUMENTED[short])
    assert schema["required"] == ["prompt"]
    for name, (default, allowed) in DOCUMENTED[short].items():
        prop = props[name]
        options = [prop, *prop.get("anyOf", [])]
        assert prop.get("default") == default, name
        assert prop.get("description"), name
        if isinstance(allowed, list):
            assert next(o["enum"] for o in options if "enum" in o) == allowed, name
        elif isinstance(allowed, tuple):
            low, high = allowed
            assert any(o.get("minimum") == low and o.get("maximum") == high for o in options), name


@pytest.mark.parametrize(
    ("short", "good", "bad", "named"),
    [
        (
            "flux-1.1-pro",
            {"aspect_ratio": "custom", "width": 512, "height": 768},
            {"steps": 30},
            "steps",
        ),
        (
            "flux-1.1-pro-ultra",
            {"raw": True, "aspect_ratio": "21:9"},
            {"aspect_ratio": "custom"},
            "aspect_ratio",
        ),
        (
            "flux-schnell",
            {"num_outputs": 4, "megapixels": "0.25"},
            {"num_outputs": 5},
            "num_outputs",
        ),
        ("flux-dev", {"guidance": 7.5, "num_inference_steps": 50}, {"guidance": 11}, "guidance"),
        ("flux-kontext-pro", {"aspect_ratio": "2:1"}, {"output_format": "webp"}, "output_format"),
    ],
)
def test_each_model_validates_its_own_fields(
    short: str, good: dict[str, Any], bad: dict[str, Any], named: str
) -> None:
    spec = model_spec(short)
    assert spec is not None
    spec.input_model.model_validate({"prompt": "x", **good})
    with pytest.raises(ValidationError) as info:
        spec.input_model.model_validate({"prompt": "x", **bad})
    assert info.value.errors()[0]["loc"][0] == named


def test_kontext_is_strict_with_an_input_image() -> None:
    spec = model_spec("flux-kontext-pro")
    assert spec is not None
    spec.input_model.model_validate({"prompt": "x", "safety_tolerance": 5})
    with pytest.raises(ValidationError, match="at most 2"):
        spec.input_model.model_validate(
            {"prompt": "x", "input_image": "https://example.com/a.png", "safety_tolerance": 3}
        )


def test_fifo_guard_itself_blocks(tmp_path: Path) -> None:
    """The FIFO trick above is only a proof if opening a FIFO really blocks."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened = threading.Event()

    def open_it() -> None:
        with fifo.open("rb"):
            opened.set()

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    assert not opened.wait(0.3)
    with fifo.open("wb"):  # release the reader
        pass
    thread.join(5)


def test_the_docs_model_table_lists_every_model() -> None:
    page = (Path(__file__).parents[2] / "docs" / "client" / "models.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `flux-")]
    listed = {row.split("`")[1] for row in rows}
    assert {spec.short_name for spec in MODELS.values()} <= listed
    for spec in MODELS.values():
        (row,) = [r for r in rows if r.startswith(f"| `{spec.short_name}`")]
        assert f"| {spec.price} (" in row  # the price class the registry gives
        most = spec.max_edit_images
        if most > 1:
            assert f"up to {most}" in row, spec.short_name
