"""Real MCP clients of today against the server and the emulator, in both protocol eras.

Every (client, era) pair the installed SDK line can run (``real_clients.combinations``): the
``mcp`` SDK's own client (2.x: ``mode="legacy"`` and ``mode="2026-07-28"``; 1.x under
``scripts/test-mcp1``: the handshake only) and fastmcp's ``Client`` forced to each era, each over
stdio and streamable HTTP. ``langchain.mcp`` (langchain 1.5, on fastmcp) loads the tools and
calls one. The TypeScript SDK client is in ``test_real_clients_js.py``; langchain-mcp-adapters
(1.x line) in ``test_mcp_adapters.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from flux_tools.emulator import Emulator

from .mcp_helpers import ONE_MIB, SDK_LINE, Progress, server_env, text_of
from .real_clients import HAS_FASTMCP, LEGACY, MODERN, Target, combinations, connect, serving

pytestmark = pytest.mark.mcp

TOOLS = {"generate_image", "edit_image", "get_prediction", "cancel_prediction", "list_models"}
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
CLIENTS = [pytest.param(c, e, id=f"{c}-{e}") for c, e in combinations()]
TRANSPORTS = ["stdio", "http"]


@pytest.fixture(params=TRANSPORTS)
def target(
    request: pytest.FixtureRequest, emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> Iterator[Target]:
    env = server_env(emulator.base_url, tmp_path / "images")
    with serving(str(request.param), env, workdir, errlog) as found:
        yield found


def assert_era(version: str | None, era: str) -> None:
    if era == MODERN:
        assert version == MODERN
    elif version is not None:  # the 1.x client does not record it
        assert version < MODERN and version.startswith("20")


@pytest.mark.parametrize(("client", "era"), CLIENTS)
async def test_tools_generation_with_progress_and_refusal(
    client: str, era: str, target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    progress = Progress()
    async with connect(client, era, target) as session:
        assert_era(session.protocol_version, era)
        tools = await session.list_tools()
        result = await session.call(
            "generate_image", {"prompt": f"{PROMPT} [emulator:latency=1]", "seed": 7}, progress
        )
        refused = await session.call("generate_image", {"prompt": PROMPT, "steps": 500})
        # The session goes on serving after a refusal.
        listed_again = await session.list_tools()

    assert set(tools) == TOOLS and set(listed_again) == TOOLS
    assert set(tools["generate_image"]["inputSchema"]["required"]) == {"prompt"}
    assert not result.get("isError"), text_of(result) + target.errlog.read_text()
    structured = result["structuredContent"]
    [path] = [Path(p) for p in structured["files"]]
    assert path.is_file() and path.parent == tmp_path / "images"
    assert str(path) in text_of(result)
    assert structured["seed"] == 7 and structured["status"] == "succeeded"
    assert len(json.dumps(result).encode()) < ONE_MIB
    assert any("processing" in m for m in progress.messages), progress.messages

    assert refused.get("isError") is True
    assert "steps" in text_of(refused) and "50" in text_of(refused)
    assert emulator.stats.creates == 1  # nothing sent for the refused call


@pytest.mark.parametrize(("client", "era"), CLIENTS)
async def test_a_canceled_call_cancels_the_prediction_upstream(
    client: str, era: str, target: Target, emulator: Emulator
) -> None:
    progress = Progress()
    arguments = {"prompt": f"{PROMPT} [emulator:hang]"}
    async with connect(client, era, target) as session:
        if SDK_LINE == 1:
            # The 1.x client sends no notifications/cancelled by itself: the helper sends it
            # after the first progress notification, as Claude Desktop does.
            helper: Any = session
            await helper.session.call_then_cancel("generate_image", arguments, progress)
        else:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    with contextlib.suppress(Exception):
                        await session.call("generate_image", arguments, progress)

                tg.start_soon(call)
                with anyio.fail_after(30):
                    await progress.first.wait()
                # What a user's "stop" does in these libraries: cancel the awaiting task.
                tg.cancel_scope.cancel()
        with anyio.fail_after(20):
            while emulator.stats.cancels == 0:
                await anyio.sleep(0.05)
        tools = await session.list_tools()
    assert set(tools) == TOOLS
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (320, 200), (20, 90, 160))
    image.paste((240, 200, 30), (40, 40, 160, 150))
    image.save(path)
    return path


@pytest.mark.parametrize(("client", "era"), CLIENTS)
async def test_edit_a_file_in_a_root_the_client_shares(
    client: str, era: str, target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-folder"
    photo = png(shared / "car.png")
    unshared = png(tmp_path / "elsewhere" / "car.png")
    async with connect(client, era, target, roots=[shared]) as session:
        refused = await session.call(
            "edit_image", {"prompt": "make the car gold", "input_image": str(unshared)}
        )
        result = await session.call(
            "edit_image", {"prompt": "make the car gold", "input_image": str(photo)}
        )
    assert refused.get("isError") is True
    assert "input_image" in text_of(refused) and str(shared) in text_of(refused)
    assert not result.get("isError"), text_of(result)
    [prediction] = emulator.predictions.values()
    sent = emulator.prediction_json(prediction.id)["input"]["input_image"]
    assert sent == "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()


# -- langchain.mcp (langchain 1.5, on fastmcp) -------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))


@pytest.mark.skipif(not HAS_FASTMCP, reason="langchain.mcp needs fastmcp and the mcp 2.x line")
@pytest.mark.parametrize("era", [LEGACY, MODERN, "auto"])
async def test_langchain_mcp_loads_the_tools_and_calls_one(
    era: str, target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    pytest.importorskip("langchain.mcp")
    from fastmcp import Client as FastMCPClient
    from langchain.mcp import MCPAdapter

    from .real_clients import fastmcp_transport

    fast = FastMCPClient(fastmcp_transport(target), mode=era, timeout=60)
    async with MCPAdapter(fast) as adapter:
        tools = {tool.name: tool for tool in await adapter.list_tools()}
        assert set(tools) == TOOLS
        generate = tools["generate_image"]
        schema = generate.args_schema if isinstance(generate.args_schema, dict) else {}
        assert schema["properties"]["steps"]["maximum"] == 50
        with anyio.fail_after(60):
            message = await generate.ainvoke(
                {
                    "type": "tool_call",
                    "id": "call-1",
                    "name": "generate_image",
                    "args": {"prompt": PROMPT, "seed": 3},
                }
            )
            refused = await generate.ainvoke(
                {
                    "type": "tool_call",
                    "id": "call-2",
                    "name": "generate_image",
                    "args": {"prompt": PROMPT, "steps": 500},
                }
            )
    structured = message.artifact["structured_content"]
    [path] = [Path(p) for p in structured["files"]]
    assert path.is_file() and path.parent == tmp_path / "images"
    assert str(path) in _text(message.content)
    assert structured["seed"] == 3
    assert refused.status == "error" and "steps" in _text(refused.content)
    assert emulator.stats.creates == 1


# -- langchain-mcp-adapters (the mcp 1.x line: scripts/test-mcp1) -------------------------------


async def test_langchain_mcp_adapters_load_the_tools_and_call_one(
    target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    adapters = pytest.importorskip("langchain_mcp_adapters.client")
    if target.transport == "stdio":
        connection: dict[str, Any] = {
            "transport": "stdio",
            "command": sys.executable,
            "args": target.args,
            "env": target.env,
            "cwd": str(target.cwd),
        }
    else:
        connection = {"transport": "streamable_http", "url": target.url}
    client = adapters.MultiServerMCPClient({"flux": connection})
    with anyio.fail_after(60):
        tools = {tool.name: tool for tool in await client.get_tools()}
        assert set(tools) == TOOLS
        message = await tools["generate_image"].ainvoke(
            {
                "type": "tool_call",
                "id": "call-1",
                "name": "generate_image",
                "args": {"prompt": PROMPT, "seed": 9},
            }
        )
    structured = message.artifact["structured_content"]
    [path] = [Path(p) for p in structured["files"]]
    assert path.is_file() and path.parent == tmp_path / "images"
    assert str(path) in _text(message.content)
    assert structured["seed"] == 9
