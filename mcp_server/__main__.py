"""``python -m mcp_server``: the FLUX MCP server (stdio by default)."""

from . import main

main()
