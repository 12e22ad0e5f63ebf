"""``langchain-mcp-adapters`` loads the server over stdio and calls its tools.

The adapters pin the 1.x SDK, so this runs in ``.venv-mcp1`` (``scripts/test-mcp1``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from flux_tools.emulator import Emulator

from .mcp_helpers import server_env

pytestmark = pytest.mark.mcp

adapters = pytest.importorskip("langchain_mcp_adapters.client")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))


async def test_multiserver_client_loads_and_calls_the_tools(
    emulator: Emulator, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    client = adapters.MultiServerMCPClient(
        {
            "flux": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "mcp_server"],
                "env": server_env(emulator.base_url, images),
                "cwd": str(tmp_path),
            }
        }
    )
    tools = {tool.name: tool for tool in await client.get_tools()}
    assert {"generate_image", "edit_image", "get_prediction", "cancel_prediction"} <= set(tools)
    generate = tools["generate_image"]
    schema = generate.args_schema if isinstance(generate.args_schema, dict) else {}
    assert schema["properties"]["steps"]["maximum"] == 50
    edit = tools["edit_image"]
    edit_schema = edit.args_schema if isinstance(edit.args_schema, dict) else {}
    assert set(edit_schema["required"]) == {"prompt", "input_image"}

    message = await generate.ainvoke(
        {
            "type": "tool_call",
            "id": "call-1",
            "name": "generate_image",
            "args": {"prompt": "a red kite over the dunes", "seed": 11},
        }
    )
    structured = message.artifact["structured_content"]
    [path] = [Path(p) for p in structured["files"]]
    assert path.is_file() and path.parent == images
    assert str(path) in _text(message.content)
    assert structured["seed"] == 11 and structured["status"] == "succeeded"

    refused = await generate.ainvoke(
        {
            "type": "tool_call",
            "id": "call-2",
            "name": "generate_image",
            "args": {"prompt": "a kite", "steps": 500},
        }
    )
    assert refused.status == "error"
    assert "steps" in _text(refused.content) and "1 to 50" in _text(refused.content)

    # "Edit the image just generated": its prediction id, read from the saved file.
    edited = await edit.ainvoke(
        {
            "type": "tool_call",
            "id": "call-3",
            "name": "edit_image",
            "args": {"prompt": "make the kite gold", "input_image": structured["prediction_id"]},
        }
    )
    edited_structured = edited.artifact["structured_content"]
    assert edited_structured["status"] == "succeeded", _text(edited.content)
    sent = emulator.prediction_json(edited_structured["prediction_id"])["input"]["input_image"]
    assert sent.startswith("data:image/webp;base64,")
    assert emulator.stats.creates == 2
