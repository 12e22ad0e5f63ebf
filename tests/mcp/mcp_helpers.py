"""Client-side helpers for the MCP tests, working with both lines of the ``mcp`` SDK.

The SDK's own clients drive the server: over stdio (the server as a subprocess) and over
streamable HTTP. Where the two lines differ (the HTTP client's signature and headers, how a
request is canceled), the difference lives here. Results are compared as wire-format dicts.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from ..engines import free_ports

SDK_LINE = 2 if importlib.util.find_spec("mcp.server.mcpserver") is not None else 1
DUMMY_TOKEN = "r8_dummy-token-for-tests-0123456789"
#: Claude Desktop's limit on one tool result.
ONE_MIB = 1_048_576
CALL_TIMEOUT = 60
#: The name the tests' client gives: a desktop-like client that shows everything. (The SDK's
#: default name, ``mcp``, is what LangChain's adapters send: the server answers it text only.)
TEST_CLIENT = types.Implementation(name="flux-tests", version="0")


def server_env(base_url: str, output_dir: Path, **extra: str | None) -> dict[str, str]:
    """The ``env`` block a client would pass: API, token, output folder, plus ``extra``."""
    env = {
        "FLUX_BASE_URL": base_url,
        "FLUX_API_TOKEN": DUMMY_TOKEN,
        "FLUX_OUTPUT_DIR": str(output_dir),
        "FLUX_MCP_LOG_LEVEL": "DEBUG",
        # The test's own cache of learned durations (tests/conftest.py), not the user's.
        "FLUX_CACHE_DIR": os.environ.get("FLUX_CACHE_DIR", ""),
        # Coverage or site hooks of the test run must not leak into the server.
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def dump(model: Any) -> Any:
    """A result as it travels: camelCase keys, no nulls."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass
class Progress:
    """Progress notifications received for one call."""

    events: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    first: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        self.first.set()

    @property
    def messages(self) -> list[str]:
        return [m for _, _, m in self.events if m]


@dataclass
class Roots:
    """The roots a test client declares (``roots/list``); change ``folders`` between calls."""

    folders: list[Path] = field(default_factory=list)
    #: How many times the server asked for them.
    asked: int = 0

    async def __call__(self, context: Any) -> Any:
        self.asked += 1
        return types.ListRootsResult.model_validate(
            {"roots": [{"uri": folder.as_uri(), "name": folder.name} for folder in self.folders]}
        )


class Session:
    """A connected, initialized client session with wire-format results."""

    def __init__(self, session: ClientSession) -> None:
        self.raw = session

    async def list_tools(self) -> dict[str, dict[str, Any]]:
        result = await self.raw.list_tools()
        return {tool.name: dump(tool) for tool in result.tools}

    async def call(
        self, name: str, arguments: dict[str, Any], progress: Progress | None = None
    ) -> dict[str, Any]:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.raw.call_tool(name, arguments, progress_callback=progress)
        data: dict[str, Any] = dump(result)
        return data

    async def read_resource(self, uri: str) -> list[dict[str, Any]]:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.raw.read_resource(uri)  # type: ignore[arg-type]
        return [dump(c) for c in result.contents]

    async def call_then_cancel(
        self, name: str, arguments: dict[str, Any], progress: Progress
    ) -> None:
        """Start a call, wait for its first progress notification, then cancel the request.

        2.x sends ``notifications/cancelled`` itself when the caller's task is canceled; 1.x
        does not, so the notification is sent here, as a client such as Claude Desktop does.
        """
        async with anyio.create_task_group() as tg:
            if SDK_LINE == 2:
                tg.start_soon(self._swallow, self.call(name, arguments, progress))
                with anyio.fail_after(CALL_TIMEOUT):
                    await progress.first.wait()
                tg.cancel_scope.cancel()
            else:
                raw: Any = self.raw  # 1.x names, unknown to the 2.x type hints
                sdk_types: Any = types
                request_id = raw._request_id  # the id the next request will get
                tg.start_soon(self._swallow, self.call(name, arguments, progress))
                with anyio.fail_after(CALL_TIMEOUT):
                    await progress.first.wait()
                notification = sdk_types.CancelledNotification(
                    params=sdk_types.CancelledNotificationParams(
                        requestId=request_id, reason="user canceled"
                    )
                )
                await raw.send_notification(sdk_types.ClientNotification(notification))
                tg.cancel_scope.cancel()

    @staticmethod
    async def _swallow(call: Any) -> None:
        with contextlib.suppress(Exception):
            await call


@contextlib.asynccontextmanager
async def stdio_session(
    env: dict[str, str],
    *,
    cwd: Path,
    errlog: Path,
    args: tuple[str, ...] = (),
    roots: Roots | None = None,
) -> AsyncIterator[Session]:
    """The server as a subprocess, as a desktop client starts it, with stderr kept in a file.

    With ``roots``, the client declares the roots capability and answers ``roots/list``.
    """
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", *args], env=env, cwd=str(cwd)
    )
    with errlog.open("a") as log:
        async with stdio_client(params, errlog=log) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(
                read, write, list_roots_callback=roots, client_info=TEST_CLIENT
            ) as session:
                with anyio.fail_after(CALL_TIMEOUT):
                    await session.initialize()
                yield Session(session)


def http_client(*, token: str | None = None, auth: Any = None) -> Any:
    """The HTTP client the SDK's streamable HTTP client runs on: httpx2 under 2.x, httpx under
    1.x (same API, different package), with a static token or an ``auth`` (an OAuth provider
    of the SDK)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http_lib: Any = importlib.import_module("httpx2" if SDK_LINE == 2 else "httpx")
    timeout = http_lib.Timeout(30, read=300)
    return http_lib.AsyncClient(headers=headers, timeout=timeout, auth=auth)


@contextlib.asynccontextmanager
async def http_session(
    url: str, *, token: str | None = None, roots: Roots | None = None, auth: Any = None
) -> AsyncIterator[Session]:
    from mcp.client.streamable_http import streamable_http_client

    async with (
        http_client(token=token, auth=auth) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(
            streams[0], streams[1], list_roots_callback=roots, client_info=TEST_CLIENT
        ) as session,
    ):
        with anyio.fail_after(CALL_TIMEOUT):
            await session.initialize()
        yield Session(session)


# -- the server as a plain subprocess -----------------------------------------------------------


class ServerProcess:
    """``python -m mcp_server ...`` with its stderr collected line by line in a thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, stdio: bool) -> None:
        full_env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server", *args],
            stdin=subprocess.PIPE if stdio else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
        )
        self.stderr_lines: queue.Queue[str] = queue.Queue()
        self.stderr_text: list[str] = []
        self.stdout_lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        if stdio:
            threading.Thread(target=self._pump_stdout, daemon=True).start()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.stderr_text.append(line)
            self.stderr_lines.put(line)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.put(raw)

    def wait_for_stderr(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self.stderr_lines.empty()):
                raise AssertionError(
                    f"no stderr line matching {pattern!r}; stderr was:\n{self.stderr}"
                )
            try:
                line = self.stderr_lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            match = re.search(pattern, line)
            if match:
                return match

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_text)

    def wait_for_stdout(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = CALL_TIMEOUT
    ) -> dict[str, Any]:
        """The first JSON-RPC message on stdout (notifications included) that ``wanted``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such message on stdout; stderr was:\n{self.stderr}")
            try:
                line = self.stdout_lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            message: dict[str, Any] = json.loads(line)
            if wanted(message):
                return message

    def call_tool(self, request_id: int, name: str, arguments: dict[str, Any]) -> None:
        """Send a tools/call asking for progress (token ``p<request_id>``), without waiting."""
        self.send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": "tools/call",
                "params": {
                    "name": name,
                    "arguments": arguments,
                    "_meta": {"progressToken": f"p{request_id}"},
                },
            }
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the server."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    # raw JSON-RPC over stdio: to measure exactly the bytes a client receives
    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self, request_id: int, timeout: float = CALL_TIMEOUT) -> bytes:
        """The raw line of the response to ``request_id`` (notifications are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.stdout_lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if json.loads(line).get("id") == request_id:
                return line

    def initialize(self) -> None:
        self.send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test-client", "version": "0"},
                },
            }
        )
        self.receive(0)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def server_process(
    args: list[str], env: dict[str, str], cwd: Path, *, stdio: bool = False
) -> Iterator[ServerProcess]:
    server = ServerProcess(args, env, cwd, stdio)
    try:
        yield server
    finally:
        server.stop()


def http_server(
    env: dict[str, str], cwd: Path, *extra: str
) -> contextlib.AbstractContextManager[ServerProcess]:
    return server_process(["--transport", "streamable-http", "--port", "0", *extra], env, cwd)


def listening_url(server: ServerProcess) -> str:
    match = server.wait_for_stderr(r"listening on (http://\S+/mcp)")
    return match.group(1)


def free_port() -> int:
    """A port for a server whose address must be known before it starts (its public URL):
    outside the ephemeral range, so no client connection takes it meanwhile."""
    return free_ports(1)[0]


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(c["text"] for c in result["content"] if c["type"] == "text")


def blocks(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in result["content"] if c["type"] == kind]
