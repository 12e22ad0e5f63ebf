"""An MCP server for FLUX image generation, for Claude Desktop, Claude Code, IDEs and any client.

``python -m mcp_server`` (or ``flux-mcp``) serves over stdio; ``--transport streamable-http``
serves HTTP. Configuration comes from the environment (see :mod:`mcp_server.config`). The ``mcp``
SDK is imported only when the server starts, so ``--help`` works without it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence

from .config import ConfigError, load_config
from .ops import JSONFormatter

__all__ = ["main"]


def _configure_logging(level: str, form: str = "text") -> None:
    # stdout carries the protocol over stdio: every log line goes to stderr.
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx2", "httpx", "httpcore", "httpcore2", "mcp", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
    # The ids of the predictions created (each may be billed) are logged at any level: after a
    # crash, the log is where a user finds them again (get_prediction).
    logging.getLogger("mcp_server.predictions").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until the client disconnects (stdio) or SIGINT/SIGTERM (HTTP)."""
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"flux-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _configure_logging(config.log_level, config.log_format)
    try:
        from .app import run  # the mcp SDK: imported only to serve, so --help works without it
    except ImportError as exc:
        print(
            f"flux-mcp: the MCP SDK is missing ({exc}). Install it with: "
            "pip install 'flux-tools[mcp]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C in a terminal: a normal way out
            run(config)
    except ConfigError as exc:  # the state server or the bucket, found wanting at start
        print(f"flux-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
