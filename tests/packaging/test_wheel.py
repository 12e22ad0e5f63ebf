"""The wheel a user installs works outside the clone.

Built with ``python -m build`` (the wheel from the sdist), checked by ``twine check`` and
``check-wheel-contents``, then installed into fresh virtual environments in temporary folders and
used from there, with the working directory outside the clone so that only the installed package
is importable: the CLI against the emulator it brings, the MCP server through the MCP SDK's client,
the LangChain tool. A second environment holds the core alone: the client works, and each front
end whose extra is missing says which one to install.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import flux_tools
from flux_tools.emulator import Emulator

from ..mcp.mcp_helpers import CALL_TIMEOUT, dump
from .conftest import ROOT, Dist, Venv, clean_env, run

pytestmark = pytest.mark.packaging

TOKEN = "r8_installed-wheel-token"
VIEWER = ROOT / "mcp_server" / "viewer"
TOOLS = {"generate_image", "edit_image", "get_prediction", "cancel_prediction", "list_models"}
#: What only the extras bring: none of it is in a core-only install.
EXTRA_DISTRIBUTIONS = {"pillow", "trustme", "langchain-core", "mcp", "uvicorn"}


def wheel_names(dist: Dist) -> set[str]:
    with zipfile.ZipFile(dist.wheel) as wheel:
        return set(wheel.namelist())


def wheel_metadata(dist: Dist, name: str) -> str:
    with zipfile.ZipFile(dist.wheel) as wheel:
        (path,) = (n for n in wheel.namelist() if n.endswith(f".dist-info/{name}"))
        return wheel.read(path).decode()


# -- the distributions themselves -----------------------------------------------------------


def test_twine_check(dist: Dist) -> None:
    """The metadata PyPI would render (the README as the description) is valid."""
    twine = [sys.executable, "-m", "twine", "check", "--strict"]
    run([*twine, dist.wheel, dist.sdist], cwd=dist.folder)


def test_check_wheel_contents(dist: Dist) -> None:
    """check-wheel-contents, configured in pyproject.toml: the two top-level packages and every
    file of their source trees are in the wheel, nothing else (no tests, no caches)."""
    run([sys.executable, "-m", "check_wheel_contents", dist.wheel], cwd=dist.source)


def test_wheel_holds_the_data_files(dist: Dist) -> None:
    names = wheel_names(dist)
    schemas = (ROOT / "flux_tools" / "schemas").glob("*.json")
    snapshots = {f"flux_tools/schemas/{p.name}" for p in schemas}
    assert len(snapshots) >= 10
    expected = {
        "flux_tools/py.typed",
        "mcp_server/py.typed",
        *snapshots,
        *(f"mcp_server/viewer/viewer.{ext}" for ext in ("html", "css", "js")),
    }
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)


def test_wheel_metadata(dist: Dist) -> None:
    """Version, extras and the three commands, as pyproject.toml declares them."""
    metadata = Parser().parsestr(wheel_metadata(dist, "METADATA"))
    assert metadata["Name"] == "flux-tools"
    assert metadata["Version"] == flux_tools.__version__
    assert {"emulator", "preview", "langchain", "mcp", "all"} <= set(
        metadata.get_all("Provides-Extra") or []
    )
    entry_points = wheel_metadata(dist, "entry_points.txt")
    for line in (
        "flux-tools = flux_tools.cli:main",
        "flux-mcp = mcp_server:main",
        "flux-tools-mcp = mcp_server:main",
    ):
        assert line in entry_points


# -- everything installed: flux-tools[all] ----------------------------------------------------


def test_the_installed_package_is_imported(full_venv: Venv) -> None:
    """Run from outside the clone, the venv imports its own copy, not the clone's."""
    code = "import flux_tools, mcp_server; print(flux_tools.__file__); print(mcp_server.__file__)"
    for line in full_venv.run(full_venv.python, "-c", code).stdout.split():
        assert Path(line).is_relative_to(full_venv.path), line


def test_cli_help(full_venv: Venv) -> None:
    out = full_venv.run(full_venv.bin("flux-tools"), "--help").stdout
    for command in ("generate", "edit", "batch", "emulator", "mcp"):
        assert command in out


@pytest.fixture
def installed_emulator(full_venv: Venv) -> Iterator[str]:
    """``flux-tools emulator`` from the installed package, on a free port; its base URL."""
    process = subprocess.Popen(
        [full_venv.bin("flux-tools"), "emulator", "--port", "0", "--latency", "0.2"],
        cwd=full_venv.home,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()  # "FLUX emulator listening on http://127.0.0.1:N/v1"
        found = re.search(r"listening on (\S+)", line)
        assert found, (line, process.stderr.read() if process.poll() is not None else "")
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_generate_against_the_emulator(
    full_venv: Venv, installed_emulator: str, tmp_path: Path
) -> None:
    out = tmp_path / "images"
    done = full_venv.run(
        full_venv.bin("flux-tools"),
        "generate",
        "a lighthouse on a cliff at dusk",
        "--out",
        out,
        env={"FLUX_BASE_URL": installed_emulator, "FLUX_API_TOKEN": TOKEN},
    )
    images = [p for p in out.iterdir() if p.suffix in (".webp", ".png", ".jpg")]
    assert len(images) == 1, (sorted(out.iterdir()), done.stdout, done.stderr)
    assert str(images[0]) in done.stdout
    assert TOKEN not in done.stdout + done.stderr


async def test_mcp_server(full_venv: Venv, emulator: Emulator, tmp_path: Path) -> None:
    """The installed server serves its tools, the viewer (its HTML, CSS and script are data
    files of the wheel) and an image generated against the emulator."""
    params = StdioServerParameters(
        command=str(full_venv.bin("flux-mcp")),
        env=clean_env(
            FLUX_API_TOKEN=TOKEN,
            FLUX_BASE_URL=emulator.base_url,
            FLUX_OUTPUT_DIR=str(tmp_path / "images"),
        ),
        cwd=str(full_venv.home),
    )
    with anyio.fail_after(CALL_TIMEOUT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            viewer = dump(await session.read_resource("ui://flux/viewer.html"))  # type: ignore[arg-type]
            result = dump(await session.call_tool("generate_image", {"prompt": "a fox"}))
    assert tools == TOOLS
    (html,) = (content["text"] for content in viewer["contents"])
    for part in ("viewer.css", "viewer.js"):
        assert (VIEWER / part).read_text(encoding="utf-8") in html
    assert not result.get("isError"), result
    (saved,) = map(Path, result["structuredContent"]["files"])
    assert saved.is_relative_to(tmp_path / "images") and saved.exists()


@pytest.mark.parametrize("command", [["flux-tools-mcp"], ["flux-tools", "mcp"]], ids=" ".join)
def test_other_names_of_the_mcp_server(full_venv: Venv, command: list[str]) -> None:
    """``flux-tools-mcp`` (the bundle's and the docs' name) and ``flux-tools mcp`` (what registry
    clients run) are the same server as ``flux-mcp``: same entry point, same parser."""
    done = full_venv.run(full_venv.bin(command[0]), *command[1:], "--version")
    assert done.stdout.strip() == f"flux-mcp {flux_tools.__version__}"


def test_langchain_tool(full_venv: Venv) -> None:
    code = "from flux_tools.langchain import FluxImageTool; print(FluxImageTool.model_fields)"
    full_venv.run(full_venv.python, "-c", code, env={"FLUX_API_TOKEN": TOKEN})


# -- the core alone: pip install flux-tools ---------------------------------------------------


def test_core_installs_no_extra(core_venv: Venv) -> None:
    installed = core_venv.distributions()
    assert "flux-tools" in installed
    assert not installed & EXTRA_DISTRIBUTIONS, installed & EXTRA_DISTRIBUTIONS


def test_core_generates(core_venv: Venv, emulator: Emulator, tmp_path: Path) -> None:
    """The client, the whole of the core, over real HTTP: what crashed with sniffio missing."""
    code = (
        "import sys, flux_tools\n"
        "with flux_tools.FluxClient(api_token=sys.argv[1], base_url=sys.argv[2]) as client:\n"
        "    result = client.generate(prompt='a fox in the snow')\n"
        "    print(*client.save(result, sys.argv[3]), sep='\\n')\n"
    )
    done = core_venv.run(core_venv.python, "-c", code, TOKEN, emulator.base_url, tmp_path)
    (saved,) = map(Path, done.stdout.split())
    assert saved.parent == tmp_path and saved.stat().st_size > 0


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["python", "-c", "import flux_tools.langchain"], "langchain"),
        (["flux-mcp"], "mcp"),
        (["flux-tools-mcp"], "mcp"),
        (["flux-tools", "mcp"], "mcp"),
        (["flux-tools", "emulator", "--port", "0"], "emulator"),
        (["flux-tools", "demo"], "all"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_front_end_names_its_missing_extra(core_venv: Venv, command: list[str], extra: str) -> None:
    """Without its extra, a front end stops with one line naming the extra to install."""
    done = core_venv.run(core_venv.bin(command[0]), *command[1:], check=False, timeout=30)
    assert done.returncode != 0
    last = (done.stderr or done.stdout).strip().splitlines()[-1]
    assert f"pip install 'flux-tools[{extra}]'" in last, done.stderr
    assert "During handling of the above exception" not in done.stderr, done.stderr
    if command[0] != "python":  # the commands print no traceback at all
        assert "Traceback" not in done.stderr, done.stderr


def test_cli_help_in_the_core(core_venv: Venv) -> None:
    assert "generate" in core_venv.run(core_venv.bin("flux-tools"), "--help").stdout
