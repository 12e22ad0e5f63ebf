"""Composing from several reference images through the MCP server (FLUX.2 edit models).

``edit_image`` takes the edit model's list field (``input_images`` for FLUX.2), item by item from
every kind of source: a saved file in an allowed folder, a ``data:`` URI, an http(s) URL, and the
prediction id of an earlier result. A refused item is named, and nothing is sent.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flux_tools.emulator import Emulator

from .mcp_helpers import server_env, stdio_session, text_of

pytestmark = pytest.mark.mcp

EDITOR = "black-forest-labs/flux-2-pro"


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), color).save(buffer, "PNG")
    return buffer.getvalue()


def session(emulator: Emulator, out: Path, workdir: Path, errlog: Path) -> Any:
    env = server_env(emulator.base_url, out, FLUX_EDIT_MODEL=EDITOR)
    return stdio_session(env, cwd=workdir, errlog=errlog)


async def test_edit_image_composes_from_every_kind_of_source(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    out = tmp_path / "images"
    out.mkdir()
    (out / "room.png").write_bytes(png("blue"))  # a file in the output folder (allowed)
    inline = "data:image/png;base64," + base64.b64encode(png("green")).decode()
    async with session(emulator, out, workdir, errlog) as client:
        tools = await client.list_tools()
        field = tools["edit_image"]["inputSchema"]["properties"]["input_images"]
        assert field["type"] == "array" and field["maxItems"] == 8
        first = await client.call("generate_image", {"prompt": "a person", "seed": 1})
        assert not first.get("isError"), text_of(first)
        earlier = first["structuredContent"]["prediction_id"]
        url = first["structuredContent"]["urls"][0]
        result = await client.call(
            "edit_image",
            {
                "prompt": "the person from image 1 in the room of image 2",
                "input_images": [earlier, "room.png", inline, url],
            },
        )
    assert not result.get("isError"), text_of(result)
    structured = result["structuredContent"]
    assert structured["status"] == "succeeded" and structured["model"] == EDITOR
    sent = emulator.prediction_json(structured["prediction_id"])["input"]["input_images"]
    assert len(sent) == 4
    assert sent[1].startswith("data:image/png;base64,")  # the local file, read and sent inline
    assert base64.b64decode(sent[1].split(",", 1)[1]) == png("blue")
    assert sent[2] == inline and sent[3] == url
    assert text_of(result).startswith("Edited image with " + EDITOR)


async def test_a_refused_reference_is_named_and_nothing_is_sent(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    out = tmp_path / "images"
    out.mkdir()
    (out / "ok.png").write_bytes(png("red"))
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png("white"))
    async with session(emulator, out, workdir, errlog) as client:
        result = await client.call(
            "edit_image",
            {"prompt": "combine them", "input_images": ["ok.png", str(outside)]},
        )
        too_many = await client.call(
            "edit_image", {"prompt": "combine them", "input_images": ["ok.png"] * 9}
        )
    assert result.get("isError") and too_many.get("isError")
    assert "input_images[1]" in text_of(result) and "outside the allowed folders" in text_of(result)
    assert "input_images" in text_of(too_many)
    assert emulator.stats.predictions_created == 0


async def test_a_result_says_what_it_cost(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    """The estimated cost (the model's price) is in the structured content, also when the
    result is read back from the saved image by get_prediction."""
    from flux_tools import MODELS

    out = tmp_path / "images"
    async with session(emulator, out, workdir, errlog) as client:
        made = await client.call("generate_image", {"prompt": "a priced image"})
        again = await client.call(
            "get_prediction", {"prediction_id": made["structuredContent"]["prediction_id"]}
        )
    expected = MODELS["black-forest-labs/flux-pro"].price_usd
    assert made["structuredContent"]["cost"] == pytest.approx(expected)
    assert again["structuredContent"]["cost"] == pytest.approx(expected)
