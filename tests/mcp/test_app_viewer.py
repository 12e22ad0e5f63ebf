"""The MCP App image viewer, the lean tools/list, and FLUX_MCP_CONTENT.

The server runs as a subprocess (stdio, or streamable HTTP for the browser). Over stdio the
tests speak raw JSON-RPC lines, so that they can introduce themselves as any client (its
``clientInfo`` and capabilities) and see exactly the bytes a client receives. The browser test
renders the viewer in headless Chromium inside a host page built on the official
``@modelcontextprotocol/ext-apps`` host bridge (tests/browser/), clicks its buttons and checks
what arrives, in the page and at the emulator.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat
from pydantic import BaseModel

from flux_tools import FluxClient, FluxProInput
from flux_tools.emulator import Emulator
from flux_tools.kit import edit_arguments, known_model
from mcp_server._sdk import APP_MIME_TYPE, APPS_EXTENSION, SDK_LINE, lean_schema
from mcp_server.catalog import ListModelsInput, ModelList
from mcp_server.config import ConfigError, load_config
from mcp_server.results import ImageResult
from mcp_server.server import GetPredictionInput, PredictionRef
from mcp_server.viewer import VIEWER_URI

from ..nodejs import npm_ci
from .mcp_helpers import (
    DUMMY_TOKEN,
    ServerProcess,
    http_server,
    listening_url,
    server_env,
    server_process,
)

pytestmark = pytest.mark.mcp

ROOT = Path(__file__).resolve().parents[2]
BROWSER = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("FLUX_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
IMAGE_TOOLS = {"generate_image", "edit_image", "get_prediction"}
APPS_CAPABILITY = {"extensions": {APPS_EXTENSION: {"mimeTypes": [APP_MIME_TYPE]}}}


# -- raw JSON-RPC as any client ------------------------------------------------------------------


class Raw:
    """One stdio server, spoken to line by line as the client ``name``."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.next_id = 1

    def initialize(self, name: str, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": capabilities or {},
                "clientInfo": {"name": name, "version": "1.0"},
            },
        )
        self.server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(json.loads(self.raw(method, params))["result"])

    def raw(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        request_id, self.next_id = self.next_id, self.next_id + 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.server.send(message)
        return self.server.receive(request_id)

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})


@contextlib.contextmanager
def raw_server(emulator: Emulator, tmp_path: Path, **extra: str | None) -> Iterator[ServerProcess]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = server_env(emulator.base_url, tmp_path / "images", **extra)
    with server_process([], env, tmp_path, stdio=True) as server:
        yield server


def kinds(result: dict[str, Any]) -> list[str]:
    return [block["type"] for block in result["content"]]


def text(result: dict[str, Any]) -> str:
    return "\n".join(b["text"] for b in result["content"] if b["type"] == "text")


# -- the viewer as a resource --------------------------------------------------------------------


def test_the_image_tools_name_the_viewer_served_as_an_mcp_app(
    emulator: Emulator, tmp_path: Path
) -> None:
    with raw_server(emulator, tmp_path) as server:
        raw = Raw(server)
        raw.initialize("claude-ai", APPS_CAPABILITY)
        tools = {t["name"]: t for t in raw.request("tools/list")["tools"]}
        listed = raw.request("resources/list")["resources"]
        [content] = raw.request("resources/read", {"uri": VIEWER_URI})["contents"]

    for name, tool in tools.items():
        meta = tool.get("_meta") or {}
        if name in IMAGE_TOOLS:
            assert meta["ui"]["resourceUri"] == VIEWER_URI
        else:
            assert "ui" not in meta, name
    [entry] = [r for r in listed if r["uri"] == VIEWER_URI]
    assert entry["mimeType"] == APP_MIME_TYPE
    assert content["mimeType"] == APP_MIME_TYPE and content["uri"] == VIEWER_URI

    html = content["text"]
    assert html.lstrip().lower().startswith("<!doctype html>")
    [policy] = re.findall(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy
    assert "img-src data: blob:" in policy
    # Everything inline, nothing fetched: no external script, style, image, font or request.
    for pattern in (
        r"<script[^>]+src=",
        r"<link\b",
        r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""",
        r"url\(",
        r"@import",
        r"\bfetch\(",
        r"XMLHttpRequest",
        r"WebSocket",
        r"\bimport\(",
    ):
        assert not re.search(pattern, html), pattern
    config = json.loads(re.findall(r'id="flux-config" type="application/json">(.*?)<', html)[0])
    assert config["editField"] == "input_image" and config["editTool"] == "edit_image"


def test_the_viewer_follows_the_edit_model_and_can_be_turned_off(
    emulator: Emulator, tmp_path: Path
) -> None:
    with raw_server(emulator, tmp_path / "dev", FLUX_EDIT_MODEL="flux-dev") as server:
        raw = Raw(server)
        raw.initialize("claude-ai")
        [content] = raw.request("resources/read", {"uri": VIEWER_URI})["contents"]
    assert '"editField": "image"' in content["text"]

    with raw_server(emulator, tmp_path / "off", FLUX_MCP_VIEWER="off") as server:
        raw = Raw(server)
        raw.initialize("claude-ai")
        tools = raw.request("tools/list")["tools"]
        listed = raw.request("resources/list")["resources"]
        result = raw.call("generate_image", {"prompt": PROMPT})
    assert all("ui" not in (t.get("_meta") or {}) for t in tools)
    assert VIEWER_URI not in {r["uri"] for r in listed}
    assert kinds(result) == ["text", "resource_link", "image"]


# -- a lean tools/list ----------------------------------------------------------------------------


def _titles(node: Any, path: str = "") -> list[str]:
    """Every ``title`` keyword inside a schema (property names called "title" are fine)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for name, prop in value.items():
                    found += _titles(prop, f"{path}.{name}")
            elif key == "title":
                found.append(path or "<root>")
            else:
                found += _titles(value, f"{path}/{key}")
    elif isinstance(node, list):
        for item in node:
            found += _titles(item, path)
    return found


def test_tools_list_keeps_every_fact_a_model_needs_and_repeats_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    with raw_server(emulator, tmp_path) as server:
        raw = Raw(server)
        raw.initialize("claude-ai")
        line = raw.raw("tools/list")
    tools = {t["name"]: t for t in json.loads(line)["result"]["tools"]}

    generate = tools["generate_image"]
    published = generate["inputSchema"]
    full = FluxProInput.model_json_schema()
    assert set(published["properties"]) == set(full["properties"])
    assert published["required"] == full["required"]
    assert published["additionalProperties"] is False
    for name, prop in full["properties"].items():
        shown = published["properties"][name]
        options = [prop, *prop.get("anyOf", [])]
        for key in ("description", "enum", "minimum", "maximum", "minLength", "maxLength"):
            values = [o[key] for o in options if key in o]
            if values:
                assert shown[key] == values[0], (name, key)
        if prop.get("default") is not None:
            assert shown["default"] == prop["default"], name
        elif name not in full["required"]:  # optional, null by default: left out if not given
            assert "default" not in shown
        assert shown["type"] in ("string", "integer", "number", "boolean"), name
    for tool in tools.values():
        assert _titles(tool["inputSchema"]) == [], tool["name"]
        assert _titles(tool.get("outputSchema", {})) == [], tool["name"]
        assert "title" not in tool["annotations"] and tool["title"]
        assert "$defs" not in json.dumps(tool)
    # One output schema per result shape: generate_image's result is also edit_image's,
    # get_prediction's and cancel_prediction's.
    assert {n for n, t in tools.items() if "outputSchema" in t} == {"generate_image", "list_models"}
    out = generate["outputSchema"]
    assert {"status", "prediction_id", "files", "urls", "seed", "timings"} <= set(out["properties"])
    assert out["properties"]["seed"]["type"] == ["integer", "null"]  # as results hold it

    # Derived, not retyped: the published schema is the model's, trimmed by one function.
    assert published == lean_schema(full)
    assert len(line) < len(json.dumps(full)) * 4  # sanity: five tools in a few KB


def test_tools_list_costs_at_most_half_of_the_untrimmed_schemas(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The same tools with pydantic's schemas as they come (and one output schema per tool, as
    before issue 14) would cost at least twice the bytes."""
    with raw_server(emulator, tmp_path) as server:
        raw = Raw(server)
        raw.initialize("claude-ai")
        line = raw.raw("tools/list")
    tools = {t["name"]: t for t in json.loads(line)["result"]["tools"]}
    models: dict[str, type[BaseModel]] = {
        "generate_image": FluxProInput,
        "edit_image": edit_arguments(known_model("flux-kontext-pro")),
        "get_prediction": GetPredictionInput,
        "cancel_prediction": PredictionRef,
        "list_models": ListModelsInput,
    }
    outputs: dict[str, type[BaseModel]] = {name: ImageResult for name in models}
    outputs["list_models"] = ModelList
    untrimmed = 0
    for name, tool in tools.items():
        full = dict(tool)
        full.pop("_meta", None)  # the viewer's link is new: count it only on the lean side
        full["inputSchema"] = models[name].model_json_schema()
        full["outputSchema"] = outputs[name].model_json_schema()
        full["annotations"] = {**tool["annotations"], "title": tool["title"]}
        untrimmed += len(json.dumps(full, separators=(",", ":")))
    assert len(line) <= untrimmed / 2, (len(line), untrimmed)


def test_lean_schema_keeps_constraints_and_a_meaningful_null() -> None:
    schema = {
        "title": "Example",
        "description": "Model docstring.",
        "type": "object",
        "properties": {
            "size": {
                "anyOf": [{"type": "integer", "minimum": 1, "maximum": 9}, {"type": "null"}],
                "default": None,
                "title": "Size",
                "description": "How big.",
            },
            "mode": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": "auto",
                "title": "Mode",
            },
            "title": {"type": "string", "title": "Title", "description": "A field named title."},
            "when": {"$ref": "#/$defs/When", "description": "Times."},
        },
        "$defs": {
            "When": {
                "title": "When",
                "type": "object",
                "properties": {"at": {"title": "At", "type": "number"}},
            }
        },
    }
    lean = lean_schema(schema)
    assert lean == {
        "type": "object",
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 9, "description": "How big."},
            # a null that is not "not given" stays as declared
            "mode": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": "auto"},
            "title": {"type": "string", "description": "A field named title."},
            "when": {
                "type": "object",
                "properties": {"at": {"type": "number"}},
                "description": "Times.",
            },
        },
    }
    out = lean_schema(schema, output=True)
    assert out["properties"]["size"] == {"type": ["integer", "null"], "minimum": 1, "maximum": 9}
    assert "description" not in out["properties"]["title"]


# -- FLUX_MCP_CONTENT -----------------------------------------------------------------------------

CASES = [
    # (clientInfo name, FLUX_MCP_CONTENT, blocks of a finished result)
    ("claude-ai", None, ["text", "resource_link", "image"]),  # today's result, unchanged
    ("mcp", None, ["text"]),  # langchain-mcp-adapters (the Python SDK's default name)
    ("fastmcp", None, ["text"]),  # langchain.mcp (fastmcp's Client)
    ("claude-ai", "text", ["text"]),
    ("mcp", "text+links", ["text", "resource_link"]),
    ("mcp", "preview+text", ["text", "image"]),
    ("fastmcp", "text+links+preview", ["text", "resource_link", "image"]),
]


@pytest.mark.parametrize(("client", "setting", "expected"), CASES)
def test_what_a_result_carries_follows_the_setting_and_the_client(
    emulator: Emulator, tmp_path: Path, client: str, setting: str | None, expected: list[str]
) -> None:
    with raw_server(emulator, tmp_path, FLUX_MCP_CONTENT=setting) as server:
        raw = Raw(server)
        raw.initialize(client)
        result = raw.call("generate_image", {"prompt": PROMPT, "seed": 5})
        resumed = raw.call(
            "get_prediction", {"prediction_id": result["structuredContent"]["prediction_id"]}
        )
    for answer in (result, resumed):
        assert not answer.get("isError"), text(answer)
        assert kinds(answer) == expected
        structured = answer["structuredContent"]
        [path] = structured["files"]
        # The text alone has everything: where the file is, its URL, how to go on.
        assert path in text(answer) and structured["urls"][0] in text(answer)
        assert ("preview is attached" in text(answer)) == ("image" in expected)
        assert answer["_meta"]["flux-tools/viewer"]["prompt"] == PROMPT


def test_the_content_setting_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    base = {"FLUX_OUTPUT_DIR": str(tmp_path)}
    assert load_config([], {**base, "FLUX_MCP_CONTENT": "links + TEXT"}).content == "text+links"
    assert load_config([], base).content == "auto"
    assert load_config(["--content", "text"], base).content == "text"
    for wrong in ("images", "links", "text+thumbnails"):
        with pytest.raises(ConfigError) as refused:
            load_config([], {**base, "FLUX_MCP_CONTENT": wrong})
        message = str(refused.value)
        assert "FLUX_MCP_CONTENT" in message and "text+links+preview" in message
        assert repr(wrong) in message


# -- in a real browser ----------------------------------------------------------------------------


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (scripts/setup installs Debian's chromium)"
    if not shutil.which("node") or not shutil.which("npm"):
        return "node and npm are needed for the ext-apps host bridge (tests/browser)"
    return None


@pytest.fixture(scope="session")
def browser_harness() -> Path:
    """tests/browser with its node_modules installed from the lock file (npm ci, once)."""
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    npm_ci(BROWSER)
    return BROWSER


def _spread(image: Image.Image, box: dict[str, float]) -> float:
    """The largest channel standard deviation of a region: 0 for a flat (blank) area."""
    region = image.convert("RGB").crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
    )
    return max(ImageStat.Stat(region).stddev)


def run_viewer(
    emulator: Emulator, tmp_path: Path, harness: Path, env: dict[str, str | None], **options: Any
) -> dict[str, Any]:
    """The server over HTTP, the viewer in Chromium in the host page: what run.mjs saw."""
    shots = tmp_path / "shots"
    shots.mkdir(exist_ok=True)
    server_environment = server_env(emulator.base_url, tmp_path / "images", **env)
    with http_server(server_environment, tmp_path) as server:
        arguments = {
            "mcpUrl": listening_url(server),
            "chromium": CHROMIUM,
            "outDir": str(shots),
            **options,
        }
        run = subprocess.run(
            ["node", str(harness / "run.mjs"), json.dumps(arguments)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-4000:]
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    # Nothing but the host page and its /mcp: the view loaded nothing from the network.
    origin = seen["origin"]
    assert all(u.startswith((origin + "/", "data:", "about:")) for u in seen["requests"])
    assert seen["consoleErrors"] == []
    return seen


def test_the_viewer_in_a_real_browser(
    emulator: Emulator, tmp_path: Path, browser_harness: Path
) -> None:
    images = tmp_path / "images"
    instruction = "make the sky stormy"
    seen = run_viewer(
        emulator, tmp_path, browser_harness, {}, prompt=PROMPT, instruction=instruction
    )

    # The host found the view through the tool and got it as an MCP App.
    assert seen["started"]["uri"] == VIEWER_URI
    assert seen["started"]["mimeType"] == APP_MIME_TYPE
    assert seen["started"]["resultBlocks"] == ["text", "resource_link", "image"]

    first, varied, edited = seen["first"], seen["varied"], seen["edited"]
    assert first["error"] is None and first["prompt"] == PROMPT
    assert "flux-pro" in first["model"] and re.fullmatch(r"\d+", first["seed"])
    assert re.search(r"total \d+\.\d s", first["timings"])
    assert Path(first["path"]).parent == images and Path(first["path"]).is_file()
    assert first["imageSrcPrefix"].startswith("data:image/")
    assert 0 < first["imageShown"][0] <= 720 and first["imageNatural"][0] > 0
    assert not first["buttons"]["vary"]["disabled"] and first["buttons"]["vary"]["text"] == "Vary"

    # Vary: a second image arrived, same prompt, new seed, a second paid create.
    assert varied["thumbnails"] == 2 and varied["error"] is None
    assert varied["prompt"] == PROMPT and varied["seed"] != first["seed"]
    assert varied["path"] != first["path"] and Path(varied["path"]).is_file()
    # Edit with an instruction: a third, made from the second.
    assert edited["thumbnails"] == 3 and edited["prompt"] == instruction
    assert emulator.stats.creates == 3
    second_input = emulator.prediction_json(Path(varied["path"]).stem)["input"]
    assert second_input["prompt"] == PROMPT and "seed" not in second_input
    edit_input = emulator.prediction_json(Path(edited["path"]).stem)["input"]
    assert edit_input["prompt"] == instruction and edit_input["input_image"]
    # Full size: the saved file, bigger than the preview shown inline.
    assert seen["full"][0] > first["imageNatural"][0]
    # The model is told what the user did in the viewer (ui/update-model-context).
    told = [c["content"][0]["text"] for c in seen["log"]["modelContext"]]
    assert len(told) == 2 and Path(varied["path"]).name in told[0]

    # The screenshots show the parts that must be there: an image (not a flat area) at a size
    # that fits, the facts below it; and the varied image is another picture.
    shot = Image.open(seen["screenshots"]["first"])
    again = Image.open(seen["screenshots"]["varied"])
    box, box2 = seen["imageBox"], seen["variedImageBox"]
    assert box["width"] <= shot.width and box["y"] + box["height"] < shot.height
    assert _spread(shot, box) > 10 and _spread(again, box2) > 10
    crop = (box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"])
    changed = ImageChops.difference(shot.convert("L").crop(crop), again.convert("L").crop(crop))
    difference = ImageStat.Stat(changed).mean[0]
    assert difference > 5
    below = {"x": 0, "y": box["y"] + box["height"], "width": shot.width, "height": 60}
    assert _spread(shot, below) > 5  # text (prompt, facts) under the image
    keep = os.environ.get("FLUX_VIEWER_SCREENSHOT")
    if keep:  # how docs/viewer.png is made: FLUX_VIEWER_SCREENSHOT=docs/viewer.png
        buffer = io.BytesIO()
        again.save(buffer, format="PNG", optimize=True)
        Path(keep).write_bytes(buffer.getvalue())


# -- LangChain's MCP paths, as their users set them up ---------------------------------------------


def _blocks(content: Any) -> list[str]:
    if isinstance(content, str):
        return ["text"]
    return [block.get("type", "?") if isinstance(block, dict) else "text" for block in content]


async def test_langchain_mcp_paths_get_only_text_by_default(
    emulator: Emulator, tmp_path: Path
) -> None:
    """langchain-mcp-adapters (1.x SDK) or langchain.mcp (fastmcp, 2.x): no image, no link."""
    env = server_env(emulator.base_url, tmp_path / "images")
    call = {
        "type": "tool_call",
        "id": "call-1",
        "name": "generate_image",
        "args": {"prompt": PROMPT, "seed": 3},
    }
    if SDK_LINE == 1:
        adapters = pytest.importorskip("langchain_mcp_adapters.client")
        client = adapters.MultiServerMCPClient(
            {
                "flux": {
                    "transport": "stdio",
                    "command": sys.executable,
                    "args": ["-m", "mcp_server"],
                    "env": env,
                    "cwd": str(tmp_path),
                }
            }
        )
        tools = {tool.name: tool for tool in await client.get_tools()}
        message = await tools["generate_image"].ainvoke(call)
    else:
        langchain_mcp = pytest.importorskip("langchain.mcp")
        transports = pytest.importorskip("fastmcp.client.transports")
        fastmcp = pytest.importorskip("fastmcp")
        transport = transports.StdioTransport(
            sys.executable, ["-m", "mcp_server"], env=env, cwd=str(tmp_path)
        )
        async with langchain_mcp.MCPAdapter(fastmcp.Client(transport)) as adapter:
            tools = {tool.name: tool for tool in await adapter.list_tools()}
            message = await tools["generate_image"].ainvoke(call)
    assert message.status != "error", message.content
    assert set(_blocks(message.content)) == {"text"}
    text_blocks = message.content if isinstance(message.content, list) else [message.content]
    joined = json.dumps(text_blocks)
    assert "flux://images/" in joined and ".webp" in joined  # named in the text, not linked
    assert '"image"' not in joined and "base64" not in joined


def test_without_previews_the_viewer_reads_the_saved_file_through_the_host(
    emulator: Emulator, tmp_path: Path, browser_harness: Path
) -> None:
    seen = run_viewer(
        emulator,
        tmp_path,
        browser_harness,
        {"FLUX_MCP_CONTENT": "text"},
        prompt=PROMPT,
        firstOnly=True,
    )
    assert seen["started"]["resultBlocks"] == ["text"]
    first = seen["first"]
    assert first["prompt"] == PROMPT and first["error"] is None
    # Not a JPEG preview: the saved WebP itself, read with resources/read through the bridge.
    assert first["imageSrcPrefix"].startswith("data:image/webp;")
    assert 0 < first["imageShown"][0] <= first["imageNatural"][0]


def test_a_generation_outlasting_the_wait_is_finished_from_the_viewer(
    emulator: Emulator, tmp_path: Path, browser_harness: Path
) -> None:
    seen = run_viewer(
        emulator,
        tmp_path,
        browser_harness,
        {"FLUX_MCP_WAIT_SECONDS": "1"},
        prompt=f"{PROMPT} [emulator:latency=3]",
        firstOnly=True,
        pending=True,
    )
    assert "not ready yet" in seen["pending"] and "get_prediction" in seen["pending"]
    first = seen["first"]
    assert first["error"] is None and Path(first["path"]).is_file()
    assert first["thumbnails"] == 1  # one image, however often it was asked for
    assert first["prompt"].startswith(PROMPT)  # the call that made it, not get_prediction
    assert emulator.stats.creates == 1  # "Check again" waits for it: nothing paid twice


def test_a_prediction_opened_by_id_shows_its_prompt_and_can_be_varied(
    emulator: Emulator, tmp_path: Path, browser_harness: Path
) -> None:
    """get_prediction opened the viewer (its arguments name no prompt): the result's _meta does."""
    with FluxClient(DUMMY_TOKEN, base_url=emulator.base_url) as client:
        prediction = client.create(prompt=PROMPT, aspect_ratio="16:9")
    seen = run_viewer(
        emulator,
        tmp_path,
        browser_harness,
        {},
        tool="get_prediction",
        args={"prediction_id": prediction.id},
        firstOnly=True,
    )
    first = seen["first"]
    assert first["error"] is None and Path(first["path"]).stem == prediction.id
    assert first["prompt"] == PROMPT
    assert not first["buttons"]["vary"]["disabled"]  # generate_image with that prompt
    width, height = first["imageNatural"]
    assert width > height  # the prediction's own 16:9, not a new image
    assert emulator.stats.creates == 1
