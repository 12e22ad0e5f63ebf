"""The MCP Registry entry (``server.json``) is valid, names our PyPI package and starts our server.

The registry's schema is vendored with its date in the file name
(``server.schema.2025-12-11.json``, from https://static.modelcontextprotocol.io/schemas/); adopt a
newer one by adding its file and changing ``$schema``. The registry checks that the PyPI package
is ours by finding ``mcp-name: <name>`` in its description, which is the README.

Registry clients run a PyPI package as ``uvx <runtimeArguments> <identifier>[==version]
<packageArguments>``, and ``identifier`` must be the PyPI project: so the command is
``flux-tools`` (its ``mcp`` subcommand serves MCP) and the ``mcp`` extra comes by ``--with``,
which works with and without the pinned version. ``uvx flux-tools-mcp`` would instead install a
PyPI project of *that* name, which is not ours.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import flux_tools
from flux_tools.emulator import Emulator
from mcp_server.config import ENVIRONMENT as SERVER_ENVIRONMENT

from ..mcp.mcp_helpers import CALL_TIMEOUT
from .conftest import ROOT, Dist, clean_env, uv_binary

pytestmark = pytest.mark.packaging

SCHEMAS = sorted(Path(__file__).parent.glob("server.schema.*.json"))
MCP_NAME = re.compile(r"mcp-name:\s*(\S+?)(?:\s|-->|$)")
START_TIMEOUT = 300


def entry() -> dict[str, Any]:
    data = json.loads((ROOT / "server.json").read_text())
    assert isinstance(data, dict)
    return data


def package() -> dict[str, Any]:
    (found,) = entry()["packages"]
    assert isinstance(found, dict)
    return found


def test_server_json_validates_against_the_vendored_schema() -> None:
    (schema_file,) = SCHEMAS  # one vendored version at a time
    schema = json.loads(schema_file.read_text())
    date = schema_file.name.split(".")[2]
    assert (
        schema["$id"] == f"https://static.modelcontextprotocol.io/schemas/{date}/server.schema.json"
    )
    assert entry()["$schema"] == schema["$id"]
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(entry())


def test_the_check_rejects_a_broken_entry() -> None:
    """The schema really constrains: a description over 100 characters is refused."""
    (schema_file,) = SCHEMAS
    schema = json.loads(schema_file.read_text())
    broken = {**entry(), "description": "x" * 101}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_server_json_names_our_package_at_this_version() -> None:
    version = flux_tools.__version__
    assert entry()["version"] == package()["version"] == version
    assert package()["registryType"] == "pypi"
    assert package()["identifier"] == "flux-tools"
    assert package()["transport"] == {"type": "stdio"}
    (extra,) = package()["runtimeArguments"]
    assert (extra["name"], extra["value"]) == ("--with", f"flux-tools[mcp]=={version}")


def test_server_json_environment_is_the_servers() -> None:
    """Each variable is one the server reads, described as the code describes it; the token
    is the one secret."""
    meanings = {var.name: var.meaning for var in (*flux_tools.ENVIRONMENT, *SERVER_ENVIRONMENT)}
    variables = package()["environmentVariables"]
    for variable in variables:
        assert variable["description"] == meanings[variable["name"]], variable["name"]
    secret = [v["name"] for v in variables if v.get("isSecret")]
    assert secret == ["FLUX_API_TOKEN"]


def test_readme_carries_the_mcp_name() -> None:
    names = MCP_NAME.findall((ROOT / "README.md").read_text())
    assert names == [entry()["name"]]
    # io.github.<owner>/<name>: published after logging in to the registry as that GitHub owner.
    assert re.fullmatch(r"io\.github\.[A-Za-z0-9-]+/flux-tools", entry()["name"])


def test_the_wheel_description_carries_the_mcp_name(dist: Dist) -> None:
    """What the registry reads on PyPI: the wheel's description (the README)."""
    with zipfile.ZipFile(dist.wheel) as wheel:
        (path,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(path).decode()
    assert f"<!-- mcp-name: {entry()['name']} -->" in metadata


def registry_command(pinned: bool) -> list[str]:
    """``uvx <runtimeArguments> <identifier>[==version] <packageArguments>``, as clients do."""
    args: list[str] = []
    for argument in package()["runtimeArguments"]:
        args += [argument["name"], argument["value"]]
    identifier = package()["identifier"]
    args.append(f"{identifier}=={package()['version']}" if pinned else identifier)
    args += [argument["value"] for argument in package()["packageArguments"]]
    return args


@pytest.mark.parametrize("pinned", [True, False], ids=["with version", "without version"])
async def test_registry_entry_starts_our_server(
    pinned: bool, dist: Dist, emulator: Emulator, tmp_path: Path
) -> None:
    """The command a registry client composes serves our tools (uvx installs this commit's wheel,
    found through UV_FIND_LINKS, since it is not on PyPI yet)."""
    params = StdioServerParameters(
        command=str(uv_binary()),
        args=["tool", "run", *registry_command(pinned)],  # uvx is `uv tool run`
        env=clean_env(
            UV_FIND_LINKS=str(dist.folder),
            UV_PYTHON=sys.executable,
            FLUX_API_TOKEN="r8_registry-token",
            FLUX_BASE_URL=emulator.base_url,
            FLUX_OUTPUT_DIR=str(tmp_path / "images"),
        ),
        cwd=str(tmp_path),
    )
    with anyio.fail_after(START_TIMEOUT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            with anyio.fail_after(CALL_TIMEOUT):
                tools = {tool.name for tool in (await session.list_tools()).tools}
    assert {"generate_image", "edit_image", "list_models"} <= tools
