"""Composing from several reference images through the LangChain edit tool (FLUX.2).

The tool's schema is the edit model's, so ``input_images`` is a list the chat model fills; each
item may be a saved file, a ``data:`` URI, a URL or an earlier prediction id. A refused item is
named in the error message, and nothing is sent.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image

from flux_tools.emulator import Emulator
from flux_tools.langchain import FluxImageEditTool, FluxImageTool

EDITOR = "black-forest-labs/flux-2-pro"


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), color).save(buffer, "PNG")
    return buffer.getvalue()


def tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_call", "id": "call_1", "name": name, "args": args}


async def test_the_edit_tool_composes_from_every_kind_of_source(
    emulator: Emulator, tmp_path: Path, call: Any
) -> None:
    out = tmp_path / "images"
    options: dict[str, Any] = {"api_token": "t", "base_url": emulator.base_url, "output_dir": out}
    editor = FluxImageEditTool(model=EDITOR, **options)
    field = convert_to_openai_tool(editor)["function"]["parameters"]["properties"]["input_images"]
    assert field["type"] == "array" and field["maxItems"] == 8
    made: ToolMessage = await call(
        FluxImageTool(**options), tool_call("generate_image", {"prompt": "a person"})
    )
    earlier, url = made.artifact["prediction_id"], made.artifact["urls"][0]
    (out / "room.png").write_bytes(png("blue"))
    inline = "data:image/png;base64," + base64.b64encode(png("green")).decode()
    sources = [earlier, str(out / "room.png"), inline, url]
    message: ToolMessage = await call(
        editor,
        tool_call("edit_image", {"prompt": "person 1 in room 2", "input_images": sources}),
    )
    assert message.status == "success", message.content
    sent = emulator.prediction_json(message.artifact["prediction_id"])["input"]["input_images"]
    assert len(sent) == 4 and sent[2] == inline and sent[3] == url
    assert base64.b64decode(sent[1].split(",", 1)[1]) == png("blue")
    assert message.artifact["files"] and Path(message.artifact["files"][0]).parent == out
    editor.close()


async def test_a_refused_reference_is_named_and_nothing_is_sent(
    emulator: Emulator, tmp_path: Path, call: Any
) -> None:
    out = tmp_path / "images"
    out.mkdir()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png("white"))
    (out / "ok.png").write_bytes(png("red"))
    editor = FluxImageEditTool(
        model=EDITOR, api_token="t", base_url=emulator.base_url, output_dir=out
    )
    message: ToolMessage = await call(
        editor,
        tool_call(
            "edit_image",
            {"prompt": "combine", "input_images": [str(out / "ok.png"), str(outside)]},
        ),
    )
    assert message.status == "error"
    assert "input_images[1]" in str(message.content)
    assert emulator.stats.predictions_created == 0
    editor.close()
