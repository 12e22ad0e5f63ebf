"""The Claude Desktop bundle (``bundle/``, an ``.mcpb``) validates, packs and runs as installed.

``mcpb validate`` and ``mcpb pack`` come from the pinned npm package in ``tests/bundle``. The
packed bundle is unpacked into a temporary folder and its server started exactly as Claude
Desktop starts it: the command, arguments and environment are computed by the MCPB library's
own ``getMcpConfigForManifest`` (``tests/bundle/mcp_config.mjs``) from the manifest and what a
person fills in, then run with the uv the manifest names (server type ``uv``: the host's uv
installs the bundle's dependencies). The ``flux-tools`` wheel is not on PyPI yet, and the test
must try this commit's code anyway: uv finds the freshly built wheel through ``UV_FIND_LINKS``,
everything else comes from PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from PIL import Image

import flux_tools
from flux_tools.emulator import Emulator
from mcp_server.config import ENVIRONMENT as SERVER_ENVIRONMENT

from ..mcp.mcp_helpers import CALL_TIMEOUT, dump
from ..nodejs import npm_ci
from .conftest import ROOT, Dist, clean_env, run, uv_binary

pytestmark = pytest.mark.packaging

BUNDLE = ROOT / "bundle"
TOOLING = ROOT / "tests" / "bundle"
TOKEN = "r8_bundle-token-0123456789"
#: The first start installs the bundle's dependencies (from uv's cache, or PyPI on a new machine).
START_TIMEOUT = 300


def manifest() -> dict[str, Any]:
    data = json.loads((BUNDLE / "manifest.json").read_text())
    assert isinstance(data, dict)
    return data


@cache
def node_tooling() -> tuple[str, Path]:
    """node, and the mcpb command installed from tests/bundle/package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for the MCPB tooling (mcpb validate, mcpb pack)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI has node 20: a missing node there is a broken machine
        pytest.skip(message)
    npm_ci(TOOLING)
    return node, TOOLING / "node_modules" / ".bin" / "mcpb"


def mcpb(*args: str | Path, cwd: Path) -> str:
    node, command = node_tooling()
    return run([node, command, *args], cwd=cwd, timeout=120).stdout


def test_manifest_validates(tmp_path: Path) -> None:
    assert "passes" in mcpb("validate", BUNDLE / "manifest.json", cwd=tmp_path)


def test_manifest_matches_the_package() -> None:
    """Versions, the pinned wheel, the defaults and the variables are the package's own."""
    data = manifest()
    version = flux_tools.__version__
    assert data["version"] == version
    project = (BUNDLE / "pyproject.toml").read_text()
    assert f'dependencies = ["flux-tools[mcp]=={version}"]' in project
    settings = data["user_config"]
    assert settings["api_token"]["sensitive"] is True and settings["api_token"]["required"]
    assert settings["output_dir"]["type"] == settings["image_dirs"]["type"] == "directory"
    assert settings["image_dirs"]["multiple"] is True
    assert settings["base_url"]["default"] == flux_tools.DEFAULT_BASE_URL
    assert settings["model"]["default"] == flux_tools.DEFAULT_MODEL
    assert settings["edit_model"]["default"] == flux_tools.DEFAULT_EDIT_MODEL
    # Every optional setting has a default: the MCPB library leaves "${user_config.x}" as it
    # is in the command when a setting has neither a value nor a default.
    assert all("default" in s for s in settings.values() if not s.get("required"))
    config = data["server"]["mcp_config"]
    known = {var.name for var in (*flux_tools.ENVIRONMENT, *SERVER_ENVIRONMENT)}
    assert set(config["env"]) <= known, set(config["env"]) - known
    used = json.dumps(config)
    assert all(f"${{user_config.{key}}}" in used for key in settings)


async def test_manifest_tools_are_the_servers(tmp_path: Path) -> None:
    """The tools the manifest declares (what Claude Desktop shows before installing) are the
    server's, by name and in order: they cannot drift apart."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server"],
        env=clean_env(FLUX_API_TOKEN=TOKEN, FLUX_OUTPUT_DIR=str(tmp_path)),
        cwd=str(tmp_path),
    )
    with anyio.fail_after(CALL_TIMEOUT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = [tool.name for tool in (await session.list_tools()).tools]
    assert [tool["name"] for tool in manifest()["tools"]] == tools
    assert manifest()["tools_generated"] is False


@cache
def uv_cache() -> str:
    """uv's own cache folder, kept when the server runs with another HOME."""
    return run([uv_binary(), "cache", "dir"], cwd=ROOT).stdout.strip()


def installed_config(
    extension: Path, user_config: dict[str, Any], home: Path, cwd: Path
) -> dict[str, Any]:
    """What Claude Desktop runs for this installed bundle and these settings."""
    node, _ = node_tooling()
    options = {
        "manifest": str(extension / "manifest.json"),
        "extensionPath": str(extension),
        "userConfig": user_config,
        "systemDirs": {
            "HOME": str(home),
            "DESKTOP": str(home / "Desktop"),
            "DOCUMENTS": str(home / "Documents"),
            "DOWNLOADS": str(home / "Downloads"),
        },
    }
    out = run([node, TOOLING / "mcp_config.mjs", json.dumps(options)], cwd=TOOLING).stdout
    config = json.loads(out)
    assert isinstance(config, dict), f"no config: a required setting is missing ({out})"
    return config


def filled_in(tmp_path: Path, emulator: Emulator) -> dict[str, Any]:
    """Every setting given, the image folders with a space in a name."""
    folders = [tmp_path / "photos", tmp_path / "my pictures"]
    for folder in folders:
        folder.mkdir()
    Image.new("RGB", (64, 48), "red").save(folders[1] / "car.png")
    return {
        "api_token": TOKEN,
        "output_dir": str(tmp_path / "out"),
        "image_dirs": [str(folder) for folder in folders],
        "base_url": emulator.base_url,
        "model": "black-forest-labs/flux-schnell",
    }


def token_only(tmp_path: Path, emulator: Emulator) -> dict[str, Any]:
    """Only the required token (and the emulator's URL): every other setting's default."""
    return {"api_token": TOKEN, "base_url": emulator.base_url}


@pytest.mark.parametrize("settings", [filled_in, token_only], ids=lambda f: f.__name__)
async def test_packed_bundle_runs_as_installed(
    settings: Callable[[Path, Emulator], dict[str, Any]],
    dist: Dist,
    make_emulator: Callable[..., Emulator],
    tmp_path: Path,
) -> None:
    emulator = make_emulator(token=TOKEN)
    packed = tmp_path / "flux-tools.mcpb"
    mcpb("pack", BUNDLE, packed, cwd=tmp_path)
    with zipfile.ZipFile(packed) as archive:
        names = set(archive.namelist())
    assert names == {"manifest.json", "pyproject.toml", "src/server.py", "icon.png"}, names
    extension = tmp_path / "Claude Extensions" / "flux-tools"
    mcpb("unpack", packed, extension, cwd=tmp_path)

    home = tmp_path / "home"
    home.mkdir()
    user_config = settings(tmp_path, emulator)
    config = installed_config(extension, user_config, home, tmp_path)
    assert config["command"] == "uv"
    env = clean_env(
        HOME=str(home),
        # The test's stand-ins for the host's uv runtime: this interpreter, uv's warm cache,
        # and this commit's wheel (the pinned flux-tools is not on PyPI yet).
        UV_CACHE_DIR=uv_cache(),
        UV_PYTHON=sys.executable,
        UV_FIND_LINKS=str(dist.folder),
        **config["env"],
    )
    params = StdioServerParameters(
        command=str(uv_binary()), args=config["args"], env=env, cwd=str(tmp_path)
    )
    with anyio.fail_after(START_TIMEOUT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            with anyio.fail_after(CALL_TIMEOUT):
                tools = [tool.name for tool in (await session.list_tools()).tools]
                made = dump(await session.call_tool("generate_image", {"prompt": "a fox"}))
                edited = None
                if "image_dirs" in user_config:
                    car = Path(user_config["image_dirs"][1]) / "car.png"
                    arguments = {"prompt": "make the car gold", "input_image": str(car)}
                    edited = dump(await session.call_tool("edit_image", arguments))

    assert tools == [tool["name"] for tool in manifest()["tools"]]
    output = Path(user_config.get("output_dir", home / "Pictures" / "flux-tools"))
    for result in filter(None, (made, edited)):
        assert not result.get("isError"), result
        (saved,) = map(Path, result["structuredContent"]["files"])
        assert saved.parent == output and saved.exists()
