"""The clients' limits: a tool result stays under 1 MiB whatever the image, and the preview.

The size is measured on the raw JSON-RPC line the server writes to stdout: exactly what a
client such as Claude Desktop receives and checks against its 1,048,576-byte limit.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flux_tools import PreviewError
from flux_tools.emulator import Emulator
from flux_tools.kit import make_preview

from .mcp_helpers import ONE_MIB, server_env, server_process

pytestmark = pytest.mark.mcp


def noisy_png(path: Path, side: int = 1440) -> Path:
    """A PNG that compresses badly: several MB, the worst case for an inline image."""
    rng = random.Random(1)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    image.save(path, format="PNG")
    return path


def call(server: Any, request_id: int, name: str, arguments: dict[str, Any]) -> bytes:
    server.send(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
    )
    return bytes(server.receive(request_id))


def preview_of(line: bytes) -> tuple[dict[str, Any], Image.Image]:
    result = json.loads(line)["result"]
    [image] = [c for c in result["content"] if c["type"] == "image"]
    for block in result["content"]:
        if block["type"] == "text":
            assert len(block["text"]) < 5000
    assert "data:" not in json.dumps(result["structuredContent"])
    return result, Image.open(io.BytesIO(base64.b64decode(image["data"])))


def test_a_large_generated_image_keeps_the_result_under_one_mib(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = server_env(emulator.base_url, tmp_path / "images")
    arguments = {
        "prompt": "a detailed city map",
        "aspect_ratio": "custom",
        "width": 1440,
        "height": 1440,
        "output_format": "png",
    }
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        line = call(server, 1, "generate_image", arguments)
    result, preview = preview_of(line)
    [saved] = [Path(p) for p in result["structuredContent"]["files"]]
    with Image.open(saved) as full:
        assert full.size == (1440, 1440)
    assert len(line) < ONE_MIB
    assert max(preview.size) == 768


def test_an_incompressible_image_still_fits(emulator: Emulator, tmp_path: Path) -> None:
    """A saved image far over 1 MiB (served by get_prediction) is previewed within the limit."""
    images = tmp_path / "images"
    images.mkdir()
    pid = "noisyprediction0123456789"
    saved = noisy_png(images / f"{pid}.png")
    assert saved.stat().st_size > 3 * ONE_MIB  # inline, it alone would break the limit
    (images / f"{pid}.png.json").write_text(
        json.dumps({"prediction_id": pid, "model": "black-forest-labs/flux-pro", "seed": 3})
    )
    env = server_env(emulator.base_url, images)
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        line = call(server, 1, "get_prediction", {"prediction_id": pid})
    result, preview = preview_of(line)
    assert len(line) < ONE_MIB
    assert result["structuredContent"]["files"] == [str(saved)]
    assert result["structuredContent"]["seed"] == 3
    assert max(preview.size) <= 768
    assert emulator.stats.requests == []  # served from the saved file


def test_preview_is_downscaled_jpeg_under_budget(tmp_path: Path) -> None:
    source = noisy_png(tmp_path / "big.png")
    preview = make_preview(source, max_side=768, max_bytes=700_000)
    assert preview.mime_type == "image/jpeg"
    assert (preview.source_width, preview.source_height) == (1440, 1440)
    assert max(preview.width, preview.height) <= 768
    assert len(preview.data) <= 700_000

    tight = make_preview(source, max_side=768, max_bytes=40_000)
    assert len(tight.data) <= 40_000
    assert max(tight.width, tight.height) < 768  # quality alone was not enough: it shrank


def test_preview_flattens_transparency_and_keeps_the_aspect(tmp_path: Path) -> None:
    source = tmp_path / "wide.png"
    Image.new("RGBA", (1200, 600), (255, 0, 0, 0)).save(source)
    preview = make_preview(source, max_side=300)
    assert (preview.width, preview.height) == (300, 150)
    with Image.open(io.BytesIO(preview.data)) as image:
        assert image.mode == "RGB"
        assert image.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=3)


def test_preview_of_a_file_that_is_no_image(tmp_path: Path) -> None:
    bogus = tmp_path / "x.png"
    bogus.write_bytes(b"not an image")
    with pytest.raises(PreviewError, match=r"x\.png"):
        make_preview(bogus)
    with pytest.raises(PreviewError, match="max_side"):
        make_preview(bogus, max_side=10)
