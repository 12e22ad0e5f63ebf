"""The official TypeScript MCP SDK client (``@modelcontextprotocol/sdk``, what Claude Desktop and
most IDEs embed) against the server and the emulator, over stdio and streamable HTTP.

``tests/js/mcp_client.mjs`` runs one scenario and prints one JSON event per line; the packages
come from ``tests/js/package-lock.json`` (``tests/nodejs.py`` runs ``npm ci``). Without node or
npm these tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from PIL import Image

from flux_tools.emulator import Emulator

from ..nodejs import node_missing, npm_ci
from .mcp_helpers import ONE_MIB, server_env
from .real_clients import Target, serving

pytestmark = pytest.mark.mcp

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "mcp_client.mjs"
TOOLS = {"generate_image", "edit_image", "get_prediction", "cancel_prediction", "list_models"}
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
#: Bound on one run of the JS client (it bounds its own calls at 60 s, reset by progress).
RUN_TIMEOUT = 90


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the packages of tests/js installed (``npm ci``)."""
    missing = node_missing()
    if missing:
        pytest.skip(f"the TypeScript SDK client tests: {missing}")
    npm_ci(JS_DIR)
    node = shutil.which("node")
    assert node is not None
    return node


@pytest.fixture(params=["stdio", "http"])
def target(
    request: pytest.FixtureRequest, emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> Iterator[Target]:
    env = server_env(emulator.base_url, tmp_path / "images")
    with serving(str(request.param), env, workdir, errlog) as found:
        yield found


def scenario(target: Target, action: str, **extra: Any) -> dict[str, Any]:
    if target.transport == "stdio":
        where: dict[str, Any] = {
            "transport": "stdio",
            "command": sys.executable,
            "args": target.args,
            "env": target.env,
            "cwd": str(target.cwd),
        }
    else:
        where = {"transport": "http", "url": target.url}
    return {**where, "action": action, **extra}


async def run_js(
    node: str,
    plan: dict[str, Any],
    errlog: Path,
    *,
    kill_when: Callable[[dict[str, Any]], bool] | None = None,
    script: Path = SCRIPT,
) -> list[dict[str, Any]]:
    """Runs the client (``script``, in tests/js) to its end (or SIGKILLs it at the first event
    ``kill_when`` accepts)."""
    events: list[dict[str, Any]] = []
    with errlog.open("a") as log:
        process = await anyio.open_process(
            [node, str(script), json.dumps(plan)],
            cwd=JS_DIR,
            stdin=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        async with process:
            assert process.stdout is not None
            with anyio.fail_after(RUN_TIMEOUT):
                buffer = ""
                async for chunk in TextReceiveStream(process.stdout):
                    buffer += chunk
                    *lines, buffer = buffer.split("\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        events.append(event)
                        if kill_when is not None and kill_when(event):
                            process.send_signal(signal.SIGKILL)
                            await process.wait()
                            return events
                await process.wait()
    return events


def only(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [event] = [e for e in events if e["event"] == kind]
    return event


async def wait_for_cancel(emulator: Emulator, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while emulator.stats.cancels == 0:
            await anyio.sleep(0.05)


async def test_tools_and_a_generation_with_progress(
    node: str, target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    plan = scenario(
        target, "generate", arguments={"prompt": f"{PROMPT} [emulator:latency=2]", "seed": 5}
    )
    events = await run_js(node, plan, target.errlog)
    log = target.errlog.read_text()
    assert set(only(events, "tools")["names"]) == TOOLS, events
    result = only(events, "result")
    assert result["isError"] is False, result["text"] + log
    # Claude Desktop's limit on one tool result.
    assert result["bytes"] < ONE_MIB
    [path] = [Path(p) for p in result["structuredContent"]["files"]]
    assert path.is_file() and path.parent == tmp_path / "images"
    assert str(path) in result["text"]
    messages = [e["message"] for e in events if e["event"] == "progress"]
    assert result["progressCount"] == len(messages) >= 2
    assert any("processing" in m for m in messages), messages
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0
    assert set(only(events, "tools-again")["names"]) == TOOLS


async def test_an_abort_cancels_the_prediction_upstream(
    node: str, target: Target, emulator: Emulator
) -> None:
    plan = scenario(target, "cancel", arguments={"prompt": f"{PROMPT} [emulator:hang]"})
    events = await run_js(node, plan, target.errlog)
    error = only(events, "error")
    assert "stop" in error["message"], error  # the abort reason, as the SDK reports it
    await wait_for_cancel(emulator)
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"
    # The same session goes on serving after the canceled call.
    assert set(only(events, "tools-again")["names"]) == TOOLS


async def test_edit_a_file_in_a_root_the_client_shares(
    node: str, target: Target, emulator: Emulator, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    photo = shared / "photo.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(photo)
    plan = scenario(
        target,
        "generate",
        tool="edit_image",
        arguments={"prompt": "make it blue", "input_image": str(photo)},
        roots=[shared.as_uri()],
    )
    events = await run_js(node, plan, target.errlog)
    result = only(events, "result")
    assert result["isError"] is False, result["text"]
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["input"]["input_image"].startswith(
        "data:image/png;base64,"
    )


@pytest.fixture
def http_target(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> Iterator[Target]:
    env = server_env(emulator.base_url, tmp_path / "images")
    with serving("http", env, workdir, errlog) as found:
        yield found


async def test_abort_then_close_over_http_cancels_the_prediction(
    node: str, http_target: Target, emulator: Emulator
) -> None:
    # The client goes away mid-call (abort(), then close() at once): its cancel notification
    # may never arrive, and the connection is gone. The server must cancel what it owned.
    plan = scenario(http_target, "abort_close", arguments={"prompt": f"{PROMPT} [emulator:hang]"})
    events = await run_js(node, plan, http_target.errlog)
    assert [e for e in events if e["event"] == "progress"], events
    await wait_for_cancel(emulator)
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"


async def test_a_client_killed_mid_call_over_http_cancels_the_prediction(
    node: str, http_target: Target, emulator: Emulator
) -> None:
    # SIGKILL: no notification at all, the TCP connection simply closes.
    plan = scenario(http_target, "hold", arguments={"prompt": f"{PROMPT} [emulator:hang]"})
    events = await run_js(
        node, plan, http_target.errlog, kill_when=lambda e: e["event"] == "progress"
    )
    assert events[-1]["event"] == "progress"
    await wait_for_cancel(emulator)
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"
