"""Every model of the family and every kind of image source, through the clients against the
emulator."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from flux_tools import FluxClient, FluxInputError
from flux_tools.emulator import Emulator

from ..conftest import Flux, requests_to
from ..core.test_models import (
    ASPECT_2,
    DOCUMENTED,
    FLUX2_COMMON,
    FLUX2_SIZE,
    KLEIN,
)

MakeFlux = Callable[..., Flux]

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


async def test_a_field_of_another_model_names_the_models_fields(
    make_flux: MakeFlux, emulator: Emulator
) -> None:
    flux = make_flux(emulator, model="flux-schnell")
    with pytest.raises(FluxInputError) as info:
        await flux("generate", prompt="x", steps=30)
    assert "steps" in info.value.fields
    assert "num_inference_steps" in str(info.value) and "megapixels" in str(info.value)
    assert emulator.stats.creates == 0


async def test_list_outputs_keep_every_image(
    make_flux: MakeFlux, emulator: Emulator, tmp_path: Path
) -> None:
    flux = make_flux(emulator, model="black-forest-labs/flux-schnell")
    result = await flux("generate", prompt="four drafts", num_outputs=4, megapixels="0.25")
    assert len(result.urls) == 4 and len(set(result.urls)) == 4
    paths = await flux.save(result, tmp_path)
    assert [p.name for p in paths] == [f"{result.prediction_id}_{i}.webp" for i in range(4)]
    assert {Image.open(p).size for p in paths} == {(512, 512)}


def similarity(a: bytes | Path, b: bytes | Path) -> float:
    """Correlation of two images' coarse structure (top 80 %, above the emulator's label band)."""

    def grey(image: bytes | Path) -> list[int]:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as img:
            w, h = img.size
            return list(img.convert("L").crop((0, 0, w, int(h * 0.8))).resize((24, 24)).tobytes())

    x, y = grey(a), grey(b)
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((p - mx) * (q - my) for p, q in zip(x, y, strict=True))
    var = (sum((p - mx) ** 2 for p in x) * sum((q - my) ** 2 for q in y)) ** 0.5
    return cov / var if var else 0.0


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 3:2 "photo" with clear structure, in an allowed folder."""
    folder = tmp_path / "allowed"
    folder.mkdir()
    image = Image.new("RGB", (600, 400), (30, 60, 200))
    image.paste((250, 220, 20), (40, 40, 300, 300))
    image.paste((200, 20, 40), (380, 100, 560, 360))
    path = folder / "car.png"
    image.save(path)
    return path


@pytest.mark.parametrize("source_kind", ["path", "data_uri", "url", "prediction_id", "saved_file"])
async def test_edit_with_each_kind_of_image_source(
    make_flux: MakeFlux, emulator: Emulator, photo: Path, tmp_path: Path, source_kind: str
) -> None:
    flux = make_flux(emulator, image_dirs=[photo.parent])
    reference: bytes | Path = photo
    photo_uri = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
    if source_kind == "path":
        source: str = str(photo)
    elif source_kind == "data_uri":
        source = photo_uri
    else:
        # "Edit the image just generated": the earlier result is itself an edit of the photo,
        # so it has structure a fresh generation cannot share by chance.
        first = await flux("edit", photo_uri, "a red car", seed=3)
        (reference,) = await flux.save(first, tmp_path / "first")
        source = {
            "url": first.urls[0],
            "prediction_id": first.prediction_id,  # no saved file in an allowed folder: its URL
            "saved_file": str(reference),
        }[source_kind]
        if source_kind == "saved_file":
            assert isinstance(reference, Path)
            flux = make_flux(emulator, image_dirs=[reference.parent])
    edited = await flux("edit", source, "make the car gold")
    assert edited.model == "black-forest-labs/flux-kontext-pro"
    sent = emulator.prediction_json(edited.prediction_id)["input"]["input_image"]
    assert sent.startswith(("data:image/", "http://"))  # always a form the API takes
    if source_kind in ("path", "saved_file"):
        assert sent.startswith("data:image/")
    (out,) = await flux.save(edited, tmp_path / "edited")
    with Image.open(out) as image, Image.open(reference) as original:
        assert out.suffix == ".png"  # kontext's default format
        w, h, ow, oh = *image.size, *original.size
        assert abs(w / h - ow / oh) < 0.05  # match_input_image keeps the shape
    assert similarity(out, reference) > 0.9  # derived from the input...
    fresh = await flux("generate", prompt="make the car gold", seed=1, aspect_ratio="3:2")
    (fresh_path,) = await flux.save(fresh, tmp_path / "fresh")
    assert similarity(fresh_path, reference) < 0.5  # ...unlike a fresh generation


async def test_edit_by_prediction_id_prefers_the_saved_file(
    make_flux: MakeFlux, emulator: Emulator, tmp_path: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[tmp_path])
    first = await flux("generate", prompt="a blue car", seed=9)
    await flux.save(first, tmp_path)
    edited = await flux("edit", first.prediction_id, "make it gold")
    sent = emulator.prediction_json(edited.prediction_id)["input"]["input_image"]
    assert sent.startswith("data:image/webp;base64,")  # read from disk: no expiring URL


async def test_img2img_with_flux_dev(make_flux: MakeFlux, emulator: Emulator, photo: Path) -> None:
    flux = make_flux(emulator, image_dirs=[photo.parent])
    result = await flux("edit", str(photo), "as a watercolor", model="flux-dev", num_outputs=2)
    assert len(result.urls) == 2
    assert emulator.prediction_json(result.prediction_id)["input"]["image"].startswith("data:")


async def test_edit_needs_an_editing_model(make_flux: MakeFlux, emulator: Emulator) -> None:
    flux = make_flux(emulator)
    with pytest.raises(FluxInputError, match=r"does not edit images.*flux-kontext-pro"):
        await flux("edit", "https://example.com/a.png", "gold", model="flux-schnell")


async def test_paths_outside_the_allowed_folders_are_never_opened(
    make_flux: MakeFlux, emulator: Emulator, photo: Path, tmp_path: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[photo.parent])
    # A FIFO: opening it for reading would block until a writer comes, so the call returning
    # at all shows it was not opened.
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    os.mkfifo(secret)
    link = photo.parent / "innocent.png"
    link.symlink_to(secret)
    for source in (str(secret), "../outside/secret.png", str(link), "innocent.png"):
        with pytest.raises(FluxInputError, match="outside the allowed folders") as info:
            await flux("edit", source, "steal it")
        assert info.value.fields == ["input_image"]
        assert str(photo.parent) in str(info.value)
    assert emulator.stats.creates == 0


async def test_no_folder_allowed_by_default(
    make_flux: MakeFlux, emulator: Emulator, photo: Path
) -> None:
    flux = make_flux(emulator)
    with pytest.raises(FluxInputError, match="FLUX_IMAGE_DIRS"):
        await flux("edit", str(photo), "gold")


def test_image_dirs_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator, photo: Path
) -> None:
    monkeypatch.setenv("FLUX_IMAGE_DIRS", os.pathsep.join([str(photo.parent), "/nonexistent"]))
    with FluxClient(api_token="x", base_url=emulator.base_url) as client:
        result = client.edit("car.png", "gold")  # relative: looked up in the allowed folders
    assert result.status == "succeeded"


async def test_too_large_and_non_image_files_are_refused(
    make_flux: MakeFlux, emulator: Emulator, photo: Path
) -> None:
    flux = make_flux(emulator, image_dirs=[photo.parent], max_image_bytes=1000)
    with pytest.raises(FluxInputError, match="over the 1000-byte limit"):
        await flux("edit", str(photo), "gold")
    notes = photo.parent / "notes.png"
    notes.write_text("not an image at all")
    with pytest.raises(FluxInputError, match="not an image"):
        await flux("edit", str(notes), "gold")
    assert emulator.stats.creates == 0


async def test_unknown_prediction_id_as_image(make_flux: MakeFlux, emulator: Emulator) -> None:
    flux = make_flux(emulator)
    with pytest.raises(FluxInputError, match=r"neither a file .* nor a known prediction id"):
        await flux("edit", "abcdefghijklmnopqrstuvwxyz", "gold")
    assert emulator.stats.creates == 0 and len(requests_to(emulator, "get")) == 1


def test_the_emulator_takes_only_uris_like_the_api(emulator: Emulator) -> None:
    import httpx2

    response = httpx2.post(
        f"{emulator.base_url}/models/black-forest-labs/flux-kontext-pro/predictions",
        json={"input": {"prompt": "x", "input_image": "/etc/hosts"}},
        headers={"Authorization": f"Bearer {emulator.token}"},
    )
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "input.input_image"
