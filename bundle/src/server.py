"""The bundle's entry point: the flux-tools MCP server over stdio, as ``flux-tools-mcp`` runs it.

Its settings come from the environment and flags that Claude Desktop builds from the bundle's
``user_config`` (see ``mcp_config`` in manifest.json).
"""

from mcp_server import main

main()
