"""Each ready-to-paste client configuration in ``examples/mcp_configs/`` starts a working server.

The server entry is used as written (command, args, env keys); only what a user fills in is
replaced: the token, their folders, and the API (the emulator instead of Replicate).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from flux_tools.emulator import Emulator

from .mcp_helpers import CALL_TIMEOUT, dump, http_server, http_session, listening_url

pytestmark = pytest.mark.mcp

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "mcp_configs"


def server_entry(name: str) -> dict[str, Any]:
    config = json.loads((CONFIGS / name).read_text())
    [entry] = (config.get("mcpServers") or config["servers"]).values()
    assert isinstance(entry, dict)
    return entry


def filled_in(env: dict[str, str], emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    """The user's part of the env block, filled in for an offline run."""
    values = {
        "FLUX_API_TOKEN": "r8_filled-in-token",
        "FLUX_OUTPUT_DIR": str(tmp_path / "images"),
        "FLUX_IMAGE_DIRS": str(tmp_path),
    }
    filled = {key: values.get(key, value) for key, value in env.items()}
    # HOME: where a config without FLUX_OUTPUT_DIR saves (~/Pictures/flux-tools or ~/flux-tools).
    return {**filled, "FLUX_BASE_URL": emulator.base_url, "HOME": str(tmp_path / "home")}


@pytest.mark.parametrize(
    "name", ["claude_desktop_config.json", "cursor_mcp.json", "vscode_mcp.json"]
)
async def test_stdio_config_generates_an_image(name: str, tmp_path: Path) -> None:
    entry = server_entry(name)
    # `flux-mcp` or `flux-tools-mcp` (or its absolute path in a venv): a console script of this
    # install (never `uvx flux-mcp`, a stranger's PyPI project: tests/packaging/test_names.py).
    command = Path(sys.executable).parent / Path(entry["command"]).name
    assert command.name in ("flux-mcp", "flux-tools-mcp") and command.exists()
    with Emulator(latency=0.2, token="r8_filled-in-token") as emulator:
        params = StdioServerParameters(
            command=str(command),
            args=entry.get("args", []),
            env=filled_in(entry["env"], emulator, tmp_path),
            cwd="/",  # desktop apps start servers from / or an app folder
        )
        with anyio.fail_after(CALL_TIMEOUT):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                tools = {tool.name for tool in (await session.list_tools()).tools}
                result = dump(await session.call_tool("generate_image", {"prompt": "a fox"}))
    assert {"generate_image", "edit_image", "get_prediction", "list_models"} <= tools
    assert not result.get("isError"), result
    (saved,) = map(Path, result["structuredContent"]["files"])
    expected = tmp_path / "images" if "FLUX_OUTPUT_DIR" in entry["env"] else tmp_path / "home"
    assert saved.is_relative_to(expected) and saved.exists()


async def test_http_config_reaches_the_server(tmp_path: Path) -> None:
    entry = server_entry("claude_code_http.mcp.json")
    secret = "an-http-bearer-token-of-32-chars!"
    with Emulator(latency=0.2) as emulator:
        env = filled_in({"FLUX_API_TOKEN": "", "FLUX_MCP_AUTH_TOKEN": secret}, emulator, tmp_path)
        with http_server(env, tmp_path) as server:
            # The config's URL and header, pointed at the port this server got.
            port = re.search(r":(\d+)/", listening_url(server))
            assert port is not None
            url = re.sub(r":\d+/", f":{port.group(1)}/", entry["url"])
            header = entry["headers"]["Authorization"].replace("${FLUX_MCP_AUTH_TOKEN}", secret)
            assert header == f"Bearer {secret}"
            async with http_session(url, token=secret) as session:
                result = await session.call("generate_image", {"prompt": "a fox"})
    assert not result.get("isError"), result
    assert Path(result["structuredContent"]["files"][0]).exists()
