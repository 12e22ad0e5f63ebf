"""The smallest MCP server on the same SDK as ours: the cold-start baseline.

One tool, served over stdio. Imports only the SDK's server class, as a hello-world would.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

if importlib.util.find_spec("mcp.server.mcpserver") is not None:  # the SDK's 2.x line
    Server: Any = importlib.import_module("mcp.server.mcpserver").MCPServer
else:  # 1.x
    Server = importlib.import_module("mcp.server.fastmcp").FastMCP

server = Server("hello")


@server.tool()  # type: ignore[untyped-decorator]
def hello(name: str) -> str:
    """Say hello."""
    return f"Hello, {name}!"


if __name__ == "__main__":
    server.run()
