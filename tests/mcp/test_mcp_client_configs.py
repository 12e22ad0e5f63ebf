"""Each ready-to-paste client configuration of the docs starts a working server.

The JSON blocks of README.md and docs/ holding an MCP client configuration (``mcpServers`` for
Claude Desktop, Claude Code and Cursor, ``servers`` for VS Code) are used as written (command,
args, env keys, URL, headers); only what a user fills in is replaced: the token, their folders,
and the API (the emulator instead of Replicate). A ``uvx --from 'flux-tools[mcp]' NAME`` entry
runs NAME as this environment installed it (what uvx would install from PyPI). The files of
``examples/mcp_configs/`` are the same configurations, so that none of them drifts.
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

from ..docs.blocks import JSON, ROOT, all_blocks
from .mcp_helpers import CALL_TIMEOUT, dump, http_server, http_session, listening_url

pytestmark = pytest.mark.mcp

EXAMPLES = ROOT / "examples" / "mcp_configs"
OUR_COMMANDS = ("flux-mcp", "flux-tools-mcp")


def configs() -> dict[str, dict[str, Any]]:
    """Every client configuration of the docs, by where it is (``docs/mcp/cursor.md:5``)."""
    found = {}
    for block in all_blocks():
        if block.lang in JSON:
            config = json.loads(block.code)
            if "mcpServers" in config or "servers" in config:
                found[block.where] = config
    return found


def server_entry(config: dict[str, Any]) -> dict[str, Any]:
    [entry] = (config.get("mcpServers") or config["servers"]).values()
    assert isinstance(entry, dict)
    return entry


STDIO = [where for where, config in configs().items() if "url" not in server_entry(config)]
HTTP = [where for where, config in configs().items() if "url" in server_entry(config)]


def test_the_docs_have_a_configuration_per_client() -> None:
    pages = {where.split(":")[0] for where in configs()}
    for client in ("claude-desktop", "claude-code", "cursor", "vscode"):
        assert f"docs/mcp/{client}.md" in pages
    assert len(STDIO) >= 4 and len(HTTP) >= 1


def test_the_example_files_are_configurations_of_the_docs() -> None:
    documented = list(configs().values())
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) >= 4
    for path in files:
        assert json.loads(path.read_text()) in documented, f"{path.name} is not in the docs"


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


def command_of(entry: dict[str, Any]) -> tuple[str, list[str]]:
    """The installed command and its arguments: one of ours, by name or absolute path, or
    ``uvx --from 'flux-tools[mcp]' NAME`` (never a bare ``uvx flux-mcp``, a stranger's PyPI
    project: tests/packaging/test_names.py)."""
    args = list(entry.get("args", []))
    name = Path(entry["command"]).name
    if name == "uvx":
        assert args[:2] == ["--from", "flux-tools[mcp]"], args
        name, args = args[2], args[3:]
    command = Path(sys.executable).parent / name
    assert name in OUR_COMMANDS and command.exists(), entry
    return str(command), args


@pytest.mark.parametrize("where", STDIO)
async def test_stdio_config_generates_an_image(where: str, tmp_path: Path) -> None:
    entry = server_entry(configs()[where])
    command, args = command_of(entry)
    with Emulator(latency=0.2, token="r8_filled-in-token") as emulator:
        params = StdioServerParameters(
            command=command,
            args=args,
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


@pytest.mark.parametrize("where", HTTP)
async def test_http_config_reaches_the_server(where: str, tmp_path: Path) -> None:
    entry = server_entry(configs()[where])
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
