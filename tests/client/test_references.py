"""Several input images through the client (sync and async, against the emulator): a FLUX.2
edit composed from references of every kind, each item checked before anything is sent."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from flux_tools import MODELS, AsyncFluxClient, FluxInputError
from flux_tools.emulator import Emulator
from flux_tools.emulator._images import reference_tiles

from ..conftest import Flux, requests_to
from .test_models import similarity

MakeFlux = Callable[..., Flux]
RED, GREEN = (220, 30, 30), (30, 200, 40)


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    Image.new("RGB", (300, 300), RED).save(folder / "red.png")
    Image.new("RGB", (300, 300), GREEN).save(folder / "green.png")
    return folder


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def tile(image: Path, boxes: list[tuple[int, int, int, int]], index: int) -> Image.Image:
    with Image.open(image) as img:
        return img.convert("RGB").crop(boxes[index])


def dominant(region: Image.Image) -> int:
    """Which channel (0 red, 1 green, 2 blue) dominates a region."""
    means = ImageStat.Stat(region).mean
    return max(range(3), key=lambda c: means[c])


async def test_a_composition_from_every_kind_of_source(
    make_flux: MakeFlux, emulator: Emulator, allowed: Path, tmp_path: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[allowed])
    earlier = await flux("generate", prompt="a blue car on a bridge", seed=5)
    (downloaded,) = await flux.save(earlier, tmp_path / "elsewhere")  # not an allowed folder
    shutil.copy(downloaded, allowed / "earlier.webp")
    sources = [
        allowed / "red.png",  # a Path
        data_uri(allowed / "green.png"),  # inline
        earlier.urls[0],  # a URL
        earlier.prediction_id,  # an earlier result with no saved file: its output URL
        "earlier.webp",  # a file name, looked up in the allowed folders
    ]
    result = await flux(
        "edit", sources, "the car from image 3 between the colours of images 1 and 2",
        model="flux-2-pro", aspect_ratio="1:1",
    )  # fmt: skip
    assert result.model == "black-forest-labs/flux-2-pro" and len(result.urls) == 1
    sent = emulator.prediction_json(result.prediction_id)["input"]["input_images"]
    assert [s.split(",")[0].split(";")[0] for s in sent] == [
        "data:image/png",
        "data:image/png",
        earlier.urls[0],
        earlier.urls[0],
        "data:image/webp",
    ]
    (out,) = await flux.save(result, tmp_path / "out")
    with Image.open(out) as image:
        boxes = reference_tiles(5, *image.size)
    # Each reference is where the model was told it is: the order of the list is kept.
    assert dominant(tile(out, boxes, 0)) == 0 and dominant(tile(out, boxes, 1)) == 1
    reference = io.BytesIO()
    for index in (2, 3, 4):
        reference.seek(0)
        reference.truncate()
        tile(out, boxes, index).save(reference, format="PNG")
        assert similarity(reference.getvalue(), downloaded) > 0.8, index


async def test_klein_takes_images_and_answers_a_list(
    make_flux: MakeFlux, emulator: Emulator, allowed: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[allowed], edit_model="flux-2-klein-4b")
    result = await flux("edit", ["green.png", "red.png"], "a flag of these colours")
    assert result.model == "black-forest-labs/flux-2-klein-4b"
    assert isinstance(emulator.prediction_json(result.prediction_id)["output"], list)
    images = emulator.prediction_json(result.prediction_id)["input"]["images"]
    assert len(images) == 2 and all(i.startswith("data:image/png;base64,") for i in images)


async def test_one_image_is_a_list_of_one_for_a_reference_model(
    make_flux: MakeFlux, emulator: Emulator, allowed: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[allowed])
    result = await flux("edit", "red.png", "make it gold", model="flux-2-max")
    assert len(emulator.prediction_json(result.prediction_id)["input"]["input_images"]) == 1
    # And generate takes the reference images of the models that have them.
    made = await flux("generate", prompt="x", model="flux-2-dev", input_images=["green.png"])
    sent = emulator.prediction_json(made.prediction_id)["input"]["input_images"]
    assert sent[0].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("outside", "outside the allowed folders"),
        ("missing.png", "no such image file"),
        ("notes.png", "not an image"),
        ("abcdefghijklmnopqrstuvwxyz", "neither a file"),
        ("data:text/plain;base64,aGVsbG8=", "must hold an image"),
        ("http://[::1", "malformed"),
    ],
)
async def test_a_refused_item_is_named_and_nothing_is_sent(
    make_flux: MakeFlux,
    emulator: Emulator,
    allowed: Path,
    tmp_path: Path,
    bad: str,
    expected: str,
) -> None:
    flux = make_flux(emulator, image_dirs=[allowed])
    (allowed / "notes.png").write_text("not an image at all")
    outside = tmp_path / "secret.png"
    shutil.copy(allowed / "red.png", outside)
    item = str(outside) if bad == "outside" else bad
    with pytest.raises(FluxInputError, match=expected) as info:
        await flux(
            "edit", ["red.png", data_uri(allowed / "green.png"), item], "x", model="flux-2-pro"
        )
    assert info.value.fields == ["input_images[2]"]
    assert "- input_images[2]:" in str(info.value)
    assert emulator.stats.predictions_created == 0 and not requests_to(emulator, "create")


async def test_too_many_images_and_one_image_editors(
    make_flux: MakeFlux, emulator: Emulator, allowed: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[allowed])
    with pytest.raises(FluxInputError, match="at most 4") as info:
        await flux("edit", ["red.png"] * 5, "x", model="flux-2-dev")
    assert info.value.fields == ["input_images"]
    with pytest.raises(FluxInputError, match=r"edits one image; 2 were given.*flux-2-pro \(8\)"):
        await flux("edit", ["red.png", "green.png"], "x")  # flux-kontext-pro
    with pytest.raises(FluxInputError, match="no image was given"):
        await flux("edit", [], "x", model="flux-2-pro")
    assert emulator.stats.predictions_created == 0
    # The count was checked against the API's own schema too (it may allow more than the
    # snapshot): one look at the model endpoint, nothing else.
    assert [r.path for r in emulator.stats.requests] == ["/v1/models/black-forest-labs/flux-2-dev"]


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_every_model_runs_through_the_emulator(
    emulator: Emulator, allowed: Path, model: str
) -> None:
    """Each registry entry, with its own fields and images, is taken by the emulator (which
    validates with the same schema) and answers with its own output shape."""
    spec = MODELS[model]
    fields: dict[str, Any] = {}
    edit = spec.edit_input
    if edit is not None:
        fields[edit.name] = (
            ["red.png", "green.png"][: edit.max_items] if edit.multiple else "red.png"
        )
    async with AsyncFluxClient(
        api_token=emulator.token, base_url=emulator.base_url, image_dirs=[allowed]
    ) as client:
        result = await client.generate(model=model, prompt="a test card", seed=1, **fields)
    assert result.status == "succeeded" and result.model == model
    output = emulator.prediction_json(result.prediction_id)["output"]
    assert isinstance(output, list if spec.output == "list" else str)
