"""Hostile arguments through the clients: refused before anything is sent, the emulator creates
nothing."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from flux_tools import FluxInputError
from flux_tools.emulator import Emulator

from ..conftest import Flux

MakeFlux = Callable[..., Flux]


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


PNG_URI = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


HOSTILE_IMAGES: list[tuple[str, str]] = [
    ("../" * 1_000_000, "at most 4096"),  # 3 MB: refused by length, never resolved
    ("data:text/plain;base64,aGVsbG8=", "must hold an image"),
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:image/png;base64,", "is empty"),
    ("data:image/png;base64," + base64.b64encode(b"hello, not an image").decode(), "not hold an"),
    ("data:image/png,notbase64", "base64-encoded"),
    ("http://", "has no host"),
    ("https://", "has no host"),
    ("http://[::1", "malformed"),
    ("https://example.com:99999/a.png", "malformed"),
    ("https://exa mple.com/a.png", "spaces or control characters"),
    ("https://example.com/" + "a" * 9000, "at most 8192"),
    ("file:///etc/passwd", "unsupported URL scheme"),
    ("a\x00b.png", "NUL byte"),
    ("x" * 300 + ".png", "longer than 255 bytes"),
]


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
