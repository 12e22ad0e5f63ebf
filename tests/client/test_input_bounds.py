"""Hostile arguments through the clients: refused before anything is sent, the emulator creates
nothing."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_tools import FluxInputError
from flux_tools.emulator import Emulator

from ..conftest import Flux
from ..core.test_bounds import HOSTILE_IMAGES, PNG_URI, png_bytes

MakeFlux = Callable[..., Flux]


@pytest.mark.parametrize(("value", "rule"), HOSTILE_IMAGES[:10])
async def test_the_client_sends_nothing_for_a_hostile_item(
    make_flux: MakeFlux, emulator: Emulator, tmp_path: Path, value: str, rule: str
) -> None:
    flux = make_flux(emulator, image_dirs=[tmp_path])
    with pytest.raises(FluxInputError) as info:
        await flux("edit", [PNG_URI, PNG_URI, value], "compose", model="flux-2-pro")
    assert info.value.fields == ["input_images[2]"]
    assert rule in str(info.value) and "input_images[2]:" in str(info.value)
    assert len(str(info.value)) < 600
    assert emulator.stats.predictions_created == 0 and emulator.stats.creates == 0


async def test_inline_images_are_capped_like_local_files(
    make_flux: MakeFlux, emulator: Emulator, tmp_path: Path
) -> None:
    big = png_bytes((400, 400))
    flux = make_flux(emulator, image_dirs=[tmp_path], max_image_bytes=len(big) - 1)
    uri = "data:image/png;base64," + base64.b64encode(big).decode()
    with pytest.raises(FluxInputError, match=f"over the {len(big) - 1}-byte limit") as info:
        await flux("edit", uri, "gold")
    assert info.value.fields == ["input_image"]
    (tmp_path / "big.png").write_bytes(big)
    with pytest.raises(FluxInputError, match=f"over the {len(big) - 1}-byte limit") as info:
        await flux("edit", [PNG_URI, "big.png"], "gold", model="flux-2-pro")
    assert info.value.fields == ["input_images[1]"]
    assert emulator.stats.creates == 0


async def test_unknown_null_field_through_the_client(
    make_flux: MakeFlux, emulator: Emulator
) -> None:
    flux = make_flux(emulator)
    with pytest.raises(FluxInputError, match="is not a field") as info:
        await flux("generate", {"prompt": "a cat", "0": None})
    assert info.value.fields == ["0"]
    assert emulator.stats.creates == 0
