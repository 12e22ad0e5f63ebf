"""Strange arguments, a hostile gateway, interrupted watchers, and clients that vanish.

Driven through the SDK's own client (stdio) and raw HTTP, against the emulator or the hostile
fake gateway (tests/hostile.py): every failure is a clear error result naming what it is, nothing
from the gateway reaches the text or a file name raw, a watcher never cancels, and a client gone
over HTTP cancels the prediction its call owned, as over stdio.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from flux_tools.emulator import Emulator, Fault

from ..hostile import HostileGateway
from .mcp_helpers import (
    SDK_LINE,
    Progress,
    http_server,
    listening_url,
    server_env,
    stdio_session,
    text_of,
)
from .real_clients import MODERN, connect, serving

pytestmark = pytest.mark.mcp

PROMPT = "a teapot on a table, studio light"
CONTROL = [chr(c) for c in range(0x20) if chr(c) not in "\n"] + ["\x7f", "\x9b"]


def has_control(text: str) -> bool:
    return any(c in text for c in CONTROL)


def session_for(emulator_url: str, images: Path, workdir: Path, errlog: Path, **env: str) -> Any:
    return stdio_session(server_env(emulator_url, images, **env), cwd=workdir, errlog=errlog)


async def test_a_create_throttled_for_long_says_nothing_was_created_and_when_to_retry(
    make_emulator: Callable[..., Emulator], tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    emulator = make_emulator(faults=[Fault("create", "429", retry_after=59)])
    # A short wait budget: the second call's create waits for the account's Retry-After only
    # up to the end of its budget, then goes (the limiter never makes a call late).
    env = {"FLUX_MCP_WAIT_SECONDS": "8"}
    async with session_for(emulator.base_url, tmp_path / "i", workdir, errlog, **env) as session:
        result = await session.call("generate_image", {"prompt": PROMPT})
        after = await session.call("generate_image", {"prompt": PROMPT})
    text = text_of(result)
    assert result["isError"] is True
    assert "429" in text and "No prediction was created" in text
    assert "59 s" in text  # when to retry
    assert "may have been created" not in text
    # Answered at once: the throttled create was not slept through and sent again (that would
    # make three creates), and the only prediction is the second call's.
    assert emulator.stats.creates == 2
    assert len(emulator.predictions) == 1
    assert not after.get("isError"), text_of(after)


BAD_IMAGES: list[tuple[str, str, str]] = [
    ("iVBORw0KGgoAAAANSUhEUgAA" * 100, "input_image", "255"),  # bare base64, no data: prefix
    ("photos/ca\x00r.png", "input_image", "NUL"),
    ("~nosuchuser-flux/car.png", "input_image", "no user"),
    ("../" * 2000 + "car.png", "input_image", "4096"),
]


@pytest.mark.parametrize(("value", "field", "named"), BAD_IMAGES)
async def test_unreadable_image_paths_are_named_as_what_they_are(
    emulator: Emulator,
    tmp_path: Path,
    workdir: Path,
    errlog: Path,
    value: str,
    field: str,
    named: str,
) -> None:
    async with session_for(emulator.base_url, tmp_path / "i", workdir, errlog) as session:
        result = await session.call("edit_image", {"prompt": PROMPT, field: value})
        still = await session.list_tools()
    text = text_of(result)
    assert result["isError"] is True
    assert field in text and named in text, text
    assert "Internal error" not in text and "Cannot write" not in text
    assert "FLUX_OUTPUT_DIR" not in text  # not an output-folder problem
    assert len(text) < 3000  # quoted as a short excerpt, never whole
    assert emulator.stats.creates == 0
    assert "edit_image" in still


async def test_unknown_fields_are_refused_even_when_null_and_huge_values_are_not_echoed(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    huge = "x" * 1_000_000
    async with session_for(emulator.base_url, tmp_path / "i", workdir, errlog) as session:
        unknown = await session.call("generate_image", {"prompt": PROMPT, "0": None})
        echoed = await session.call("generate_image", {"prompt": PROMPT, "aspect_ratio": huge})
    assert unknown["isError"] is True
    assert "- 0: is not a field" in text_of(unknown)
    assert echoed["isError"] is True and "aspect_ratio" in text_of(echoed)
    assert len(json.dumps(echoed)) < 20_000
    assert emulator.stats.creates == 0


async def test_gateway_text_never_reaches_the_result_or_a_file_name_raw(
    hostile: HostileGateway, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    evil = "abc\x1b[31m\nFAKE LINE\r\x07\u202e"
    hostile.prediction.update(id=evil, model="black-forest-labs/flux-pro\x1b]0;pwn\x07")
    images = tmp_path / "images"
    async with session_for(hostile.base_url, images, workdir, errlog) as session:
        progress = Progress()
        result = await session.call("generate_image", {"prompt": PROMPT}, progress)
    text = text_of(result)
    assert not has_control(text), repr(text)
    assert "\nFAKE LINE" not in text and "\u202e" not in text
    assert all(not has_control(m) and "\nFAKE" not in m for m in progress.messages)
    if not result.get("isError"):
        structured = result["structuredContent"]
        assert not has_control(json.dumps(structured, ensure_ascii=False))
        for name in structured["files"]:
            assert Path(name).parent == images
            assert not has_control(Path(name).name) and "\n" not in Path(name).name
    for path in images.rglob("*") if images.exists() else []:
        assert not has_control(path.name) and "\n" not in path.name, path
    assert not has_control(errlog.read_text().replace("\n", ""))


async def test_interrupting_get_prediction_never_cancels_the_prediction(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    env = {"FLUX_MCP_WAIT_SECONDS": "1"}
    async with session_for(emulator.base_url, tmp_path / "i", workdir, errlog, **env) as session:
        first = await session.call("generate_image", {"prompt": f"{PROMPT} [emulator:hang]"})
        pid = first["structuredContent"]["prediction_id"]
        await session.call_then_cancel("get_prediction", {"prediction_id": pid}, Progress())
        await anyio.sleep(1.0)  # time for a (wrong) cancel to reach the API
        state = await session.call("get_prediction", {"prediction_id": pid, "wait": False})
    assert state["structuredContent"]["status"] == "processing"
    assert emulator.stats.cancels == 0
    assert emulator.prediction_json(pid)["status"] == "processing"


# -- a client that vanishes over streamable HTTP --------------------------------------------------

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LEGACY = "2025-11-25"


def _initialize(client: httpx2.Client, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "vanishing", "version": "0"},
        },
    }
    response = client.post(url, json=init, headers=HEADERS)
    assert response.status_code == 200, response.text
    headers = {**HEADERS, "MCP-Protocol-Version": LEGACY}
    if "mcp-session-id" in response.headers:
        headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    client.post(url, json=initialized, headers=headers)
    return headers


def _call_then_vanish(url: str, name: str, arguments: dict[str, Any], stateless: bool) -> str:
    """Start a tools/call, read its SSE stream until the first progress that names the
    prediction, then drop the connection without notifications/cancelled. Returns that text."""
    with httpx2.Client(timeout=30) as client:
        headers = {**HEADERS, "MCP-Protocol-Version": LEGACY}
        if not stateless:
            headers = _initialize(client, url)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": {"progressToken": "t"}},
        }
        with client.stream("POST", url, json=call, headers=headers) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:") and "prediction " in line:
                    return line  # leaving the block closes the connection mid-stream
    raise AssertionError("the stream ended before any progress named the prediction")


@pytest.mark.parametrize("stateless", [False, True], ids=["sessions", "stateless"])
async def test_a_client_gone_over_http_cancels_the_prediction_it_owned(
    emulator: Emulator, tmp_path: Path, stateless: bool
) -> None:
    env = server_env(emulator.base_url, tmp_path / "images")
    extra = ("--stateless",) if stateless else ()
    with http_server(env, tmp_path, *extra) as server:
        url = listening_url(server)
        arguments = {"prompt": f"{PROMPT} [emulator:hang]"}
        await anyio.to_thread.run_sync(
            _call_then_vanish, url, "generate_image", arguments, stateless
        )
        deadline = time.monotonic() + 20
        while emulator.stats.cancels == 0 and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert emulator.stats.cancels == 1, server.stderr
        # The server goes on serving.
        response = httpx2.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 9,
                "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY,
                    "capabilities": {},
                    "clientInfo": {"name": "next", "version": "0"},
                },
            },
            headers=HEADERS,
            timeout=30,
        )
        assert response.status_code == 200
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"


async def test_a_watcher_gone_over_http_leaves_the_prediction_running(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = server_env(emulator.base_url, tmp_path / "images", FLUX_MCP_WAIT_SECONDS="1")
    with http_server(env, tmp_path) as server:
        url = listening_url(server)
        with httpx2.Client(timeout=30) as client:
            headers = _initialize(client, url)
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {
                    "name": "generate_image",
                    "arguments": {"prompt": f"{PROMPT} [emulator:hang]"},
                },
            }
            body = client.post(url, json=call, headers=headers).text
        [answer] = [
            json.loads(line[5:])
            for line in body.splitlines()
            if line.startswith("data:") and '"result"' in line
        ]
        pid = answer["result"]["structuredContent"]["prediction_id"]
        # get_prediction over a fresh session, dropped mid-wait: a watcher, so no cancel.
        await anyio.to_thread.run_sync(_call_then_vanish_quietly, url, {"prediction_id": pid})
        await anyio.sleep(1.5)
    assert emulator.stats.cancels == 0
    assert emulator.prediction_json(pid)["status"] == "processing"


def _call_then_vanish_quietly(url: str, arguments: dict[str, Any]) -> None:
    with httpx2.Client(timeout=30) as client:
        headers = _initialize(client, url)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "get_prediction",
                "arguments": arguments,
                "_meta": {"progressToken": "w"},
            },
        }
        with client.stream("POST", url, json=call, headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and "notifications/progress" in line:
                    return


@pytest.mark.skipif(SDK_LINE == 1, reason="the 1.x SDK speaks only the initialize handshake")
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_call_abandoned_under_the_2026_era_cancels_the_prediction(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path, transport: str
) -> None:
    """Under 2026-07-28 a client cancels by closing the call's stream (no notification)."""
    env = server_env(emulator.base_url, tmp_path / "images")
    with serving(transport, env, workdir, errlog) as target:
        async with connect("mcp", MODERN, target) as caller:
            progress = Progress()
            arguments = {"prompt": f"{PROMPT} [emulator:hang]"}
            async with anyio.create_task_group() as tg:
                tg.start_soon(_swallow, caller.call("generate_image", arguments, progress))
                with anyio.fail_after(30):
                    while not any("prediction " in m for m in progress.messages):
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            with anyio.fail_after(20):
                while emulator.stats.cancels == 0:
                    await anyio.sleep(0.05)
            assert "generate_image" in await caller.list_tools()  # still serving
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"


async def _swallow(call: Any) -> None:
    with contextlib.suppress(Exception):
        await call
