"""The MCP server over streamable HTTP: the SDK's HTTP client, the bearer check, the defaults.

Each test runs ``python -m mcp_server --transport streamable-http --port 0`` as a subprocess and
reads the address it listens on from its stderr.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from flux_tools.emulator import Emulator

from .mcp_helpers import (
    Progress,
    blocks,
    http_server,
    http_session,
    listening_url,
    server_env,
    text_of,
)

pytestmark = pytest.mark.mcp

AUTH = "s3cret-bearer-token-for-the-tests-42"
PROMPT = "a paper boat on a puddle, macro photo"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


async def test_generation_over_streamable_http(emulator: Emulator, tmp_path: Path) -> None:
    env = server_env(emulator.base_url, tmp_path / "images")
    with http_server(env, tmp_path) as server:
        url = listening_url(server)
        assert url.startswith("http://127.0.0.1:")
        progress = Progress()
        async with http_session(url) as session:
            tools = await session.list_tools()
            result = await session.call(
                "generate_image", {"prompt": f"{PROMPT} [emulator:latency=1]"}, progress
            )
            resource = await session.read_resource(blocks(result, "resource_link")[0]["uri"])
    assert set(tools) == {
        "generate_image",
        "edit_image",
        "get_prediction",
        "cancel_prediction",
        "list_models",
    }
    assert not result.get("isError"), text_of(result)
    [path] = [Path(p) for p in result["structuredContent"]["files"]]
    assert path.is_file() and str(path) in text_of(result)
    assert resource[0]["blob"]
    assert any("processing" in m for m in progress.messages)
    assert server.stdout_lines.empty()  # logs go to stderr only


async def test_stateless_mode_serves_independent_requests(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = server_env(emulator.base_url, tmp_path / "images")
    with http_server(env, tmp_path, "--stateless") as server:
        url = listening_url(server)
        assert "stateless" in server.stderr
        async with http_session(url) as session:
            first = await session.call("generate_image", {"prompt": PROMPT})
        async with http_session(url) as session:
            pid = first["structuredContent"]["prediction_id"]
            second = await session.call("get_prediction", {"prediction_id": pid})
        # A stateless server hands out no session id.
        response = httpx2.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=30)
    assert first["structuredContent"]["status"] == "succeeded"
    assert second["structuredContent"]["files"] == first["structuredContent"]["files"]
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    assert emulator.stats.creates == 1


async def test_the_bearer_token_is_required_and_never_echoed(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = server_env(emulator.base_url, tmp_path / "images", FLUX_MCP_AUTH_TOKEN=AUTH)
    # Another interface: allowed only because a bearer token is set.
    with http_server(env, tmp_path, "--host", "0.0.0.0") as server:
        url = listening_url(server).replace("0.0.0.0", "127.0.0.1")
        refused = {
            "none": httpx2.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=30),
            "wrong": httpx2.post(
                url,
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {AUTH}x"},
                timeout=30,
            ),
            "prefix": httpx2.post(
                url,
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {AUTH[:-1]}"},
                timeout=30,
            ),
            "scheme": httpx2.post(
                url,
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Basic {AUTH}"},
                timeout=30,
            ),
        }
        async with http_session(url, token=AUTH) as session:
            result = await session.call("generate_image", {"prompt": PROMPT})
    for name, response in refused.items():
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "FLUX_MCP_AUTH_TOKEN" in response.text
        assert AUTH[:8] not in response.text, name
    assert not result.get("isError"), text_of(result)
    assert AUTH not in server.stderr
    assert "refused an unauthenticated request" in server.stderr


def test_another_interface_without_a_token_is_refused(tmp_path: Path) -> None:
    env = {"FLUX_OUTPUT_DIR": str(tmp_path), "FLUX_MCP_AUTH_TOKEN": ""}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--host", "0.0.0.0"],
        env={**_base_env(), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "FLUX_MCP_AUTH_TOKEN" in done.stderr and "0.0.0.0" in done.stderr
    assert done.stdout == ""


def test_a_port_in_use_is_said_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", port],
            env={**_base_env(), "FLUX_OUTPUT_DIR": str(tmp_path)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"flux-mcp: cannot listen on 127.0.0.1:{port}") and "--port" in last
    assert "Traceback" not in done.stderr and done.stdout == ""


async def test_dns_rebinding_protection_on_loopback(emulator: Emulator, tmp_path: Path) -> None:
    env = server_env(emulator.base_url, tmp_path / "images")
    with http_server(env, tmp_path) as server:
        url = listening_url(server)
        evil = httpx2.post(
            url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example"}, timeout=30
        )
        evil_origin = httpx2.post(
            url,
            json=INITIALIZE,
            headers={**MCP_HEADERS, "Origin": "http://evil.example"},
            timeout=30,
        )
        good = httpx2.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=30)
    assert evil.status_code in (400, 403, 421)
    assert evil_origin.status_code in (400, 403, 421)
    assert good.status_code == 200


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
