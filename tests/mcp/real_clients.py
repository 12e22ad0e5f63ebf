"""Real MCP clients of today, behind one small interface, for the real-client tests.

Each client is the library itself, configured as its users configure it: the ``mcp`` SDK's
``Client`` (2.x; forced to either protocol era with ``mode=``) or its ``ClientSession`` (1.x,
which speaks only the ``initialize`` handshake), and fastmcp's ``Client`` (``mode="legacy"`` or
``mode="2026-07-28"``). Each connects over stdio (the server as its subprocess) or streamable
HTTP (a server subprocess started by the test). Results are compared as wire-format dicts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from .mcp_helpers import (
    CALL_TIMEOUT,
    SDK_LINE,
    Progress,
    Roots,
    dump,
    http_client,
    http_server,
    http_session,
    listening_url,
    stdio_session,
)

LEGACY = "legacy"
MODERN = "2026-07-28"
#: A bound on one whole client session of a test (each call has its own, shorter bound).
SESSION_TIMEOUT = 120
HAS_FASTMCP = SDK_LINE == 2 and importlib.util.find_spec("fastmcp") is not None


@dataclass
class Target:
    """Where a client finds the server: a command to start (stdio) or a URL (HTTP)."""

    transport: str
    env: dict[str, str]
    cwd: Path
    errlog: Path
    url: str | None = None
    #: HTTP only: an ``httpx.Auth`` for the requests (the SDK's OAuth client provider).
    auth: Any = None

    @property
    def args(self) -> list[str]:
        return ["-m", "mcp_server"]


@contextlib.contextmanager
def serving(transport: str, env: dict[str, str], cwd: Path, errlog: Path) -> Iterator[Target]:
    """A target for ``transport``: for HTTP the server runs for the duration of the block."""
    if transport == "stdio":
        yield Target("stdio", env, cwd, errlog)
        return
    with http_server(env, cwd) as server:
        try:
            yield Target("http", env, cwd, errlog, url=listening_url(server))
        finally:
            errlog.write_text(server.stderr)


class Caller(Protocol):
    """What the tests ask of a connected client."""

    protocol_version: str | None

    async def list_tools(self) -> dict[str, dict[str, Any]]: ...

    async def call(
        self, name: str, arguments: dict[str, Any], progress: Progress | None = None
    ) -> dict[str, Any]: ...


class _SDKCaller:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.protocol_version: str | None = client.session.protocol_version

    async def list_tools(self) -> dict[str, dict[str, Any]]:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.client.list_tools()
        return {tool.name: dump(tool) for tool in result.tools}

    async def call(
        self, name: str, arguments: dict[str, Any], progress: Progress | None = None
    ) -> dict[str, Any]:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.client.call_tool(name, arguments, progress_callback=progress)
        data: dict[str, Any] = dump(result)
        return data


class _SessionCaller:
    """The 1.x line: ``ClientSession`` through the shared helpers (handshake era only)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.protocol_version: str | None = None  # 1.x keeps no record of it

    async def list_tools(self) -> dict[str, dict[str, Any]]:
        tools: dict[str, dict[str, Any]] = await self.session.list_tools()
        return tools

    async def call(
        self, name: str, arguments: dict[str, Any], progress: Progress | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.session.call(name, arguments, progress)
        return result


class _FastMCPCaller:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.protocol_version: str | None = client.protocol_version

    async def list_tools(self) -> dict[str, dict[str, Any]]:
        with anyio.fail_after(CALL_TIMEOUT):
            tools = await self.client.list_tools()
        return {tool.name: dump(tool) for tool in tools}

    async def call(
        self, name: str, arguments: dict[str, Any], progress: Progress | None = None
    ) -> dict[str, Any]:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.client.call_tool_mcp(name, arguments, progress_handler=progress)
        data: dict[str, Any] = dump(result)
        return data


def fastmcp_transport(target: Target) -> Any:
    from fastmcp.client.transports import StdioTransport, StreamableHttpTransport

    if target.transport == "stdio":
        return StdioTransport(
            sys.executable,
            target.args,
            env=target.env,
            cwd=str(target.cwd),
            log_file=target.errlog,
        )
    assert target.url is not None
    return StreamableHttpTransport(target.url)


@contextlib.asynccontextmanager
async def connect(
    client: str,
    era: str,
    target: Target,
    roots: list[Path] | None = None,
    *,
    session_timeout: float = SESSION_TIMEOUT,
) -> AsyncIterator[Caller]:
    """``client`` ("mcp" or "fastmcp") connected to ``target`` in protocol ``era``."""
    folders = Roots(list(roots)) if roots is not None else None
    if client == "mcp" and SDK_LINE == 1:
        assert era == LEGACY, "the 1.x SDK speaks only the initialize handshake"
        if target.transport == "stdio":
            session_cm: Any = stdio_session(
                target.env, cwd=target.cwd, errlog=target.errlog, roots=folders
            )
        else:
            assert target.url is not None
            session_cm = http_session(target.url, roots=folders, auth=target.auth)
        async with session_cm as session:
            yield _SessionCaller(session)
    elif client == "mcp":
        from mcp import StdioServerParameters
        from mcp.client.client import Client
        from mcp.client.stdio import stdio_client

        with target.errlog.open("a") as log:
            stack = contextlib.AsyncExitStack()
            if target.transport == "stdio":
                params = StdioServerParameters(
                    command=sys.executable, args=target.args, env=target.env, cwd=str(target.cwd)
                )
                server: Any = stdio_client(params, errlog=log)
            elif target.auth is not None:
                from mcp.client.streamable_http import streamable_http_client

                assert target.url is not None
                http = await stack.enter_async_context(http_client(auth=target.auth))
                server = streamable_http_client(target.url, http_client=http)
            else:
                server = target.url
            # Bounded as a whole: a cancel scope must enclose the client's own task group.
            async with stack:
                with anyio.fail_after(session_timeout):
                    async with Client(server, mode=era, list_roots_callback=folders) as sdk_client:
                        yield _SDKCaller(sdk_client)
    elif client == "fastmcp":
        from fastmcp import Client as FastMCPClient

        fast = FastMCPClient(
            fastmcp_transport(target),
            mode=era,
            roots=[folder.as_uri() for folder in roots] if roots is not None else None,
            timeout=CALL_TIMEOUT,
        )
        with anyio.fail_after(session_timeout):
            async with fast:
                yield _FastMCPCaller(fast)
    else:
        raise ValueError(client)


def combinations() -> list[tuple[str, str]]:
    """(client, era) pairs the installed SDK line can run."""
    if SDK_LINE == 1:
        return [("mcp", LEGACY)]
    pairs = [("mcp", LEGACY), ("mcp", MODERN)]
    if HAS_FASTMCP:
        pairs += [("fastmcp", LEGACY), ("fastmcp", MODERN)]
    return pairs
